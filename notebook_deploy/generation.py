"""Foundation models served as their users expect: which kind a model is (a text generator, an embedder),
the sampling parameters of a request, a generation streamed piece by piece and stoppable, embeddings.

This is the one place that knows transformers: the serving protocols (native ``/generate``, the
OpenAI-compatible routes) call ``generate`` and ``embed`` in the model's thread and know nothing of
tokenizers or streamers. A text-generation pipeline is called as itself, so a served answer is the
pipeline's own answer (its chat template, its decoding), with a streamer and a stopping criterion added.

Imports nothing heavy at module level: torch and transformers are imported by the calls that need them.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from .errors import RequestError
from .methods import is_generator_function, is_sentence_transformer, is_transformers_pipeline
from .schema import is_chat

GENERATOR = "text-generation"
EMBEDDER = "feature-extraction"

Prompt = str | list[dict[str, str]]  # a text, or chat messages ({"role", "content"})


def kind(model: Any) -> str | None:
    """``GENERATOR``, ``EMBEDDER`` or None: which generation routes a model gets (a pipeline's task; a
    generator function is a generator, a sentence-transformers model an embedder)."""
    if is_generator_function(model):
        return GENERATOR
    if is_sentence_transformer(model):
        return EMBEDDER
    if is_transformers_pipeline(model) and getattr(model, "task", None) in (GENERATOR, EMBEDDER):
        return str(model.task)
    return None


@dataclass(frozen=True)
class Sampling:
    """How to generate: at most ``max_tokens`` new tokens (None: the pipeline's default), greedy when
    ``temperature`` is 0, else sampled at that temperature with nucleus ``top_p``; the text ends before
    the first of the ``stop`` strings."""

    max_tokens: int | None = None
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()

    @classmethod
    def from_request(cls, payload: dict[str, Any]) -> Sampling:
        """The sampling fields of a request body (OpenAI's names), each checked: a 400 names the field."""
        max_tokens = payload.get("max_completion_tokens", payload.get("max_tokens"))
        if max_tokens is not None and (type(max_tokens) is not int or max_tokens < 1):
            raise RequestError(400, f"'max_tokens' must be an integer of at least 1, not {max_tokens!r}")
        temperature = _number(payload, "temperature", 0.0, 0.0, 2.0)
        top_p = _number(payload, "top_p", 1.0, 0.0, 1.0)
        stop = payload.get("stop")
        stops = [stop] if isinstance(stop, str) else stop if stop is not None else []
        if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops) or len(stops) > 4:
            raise RequestError(400, f"'stop' must be a string or a list of up to 4 non-empty strings, not {stop!r}")
        return cls(max_tokens, temperature, top_p, tuple(stops))


def _number(payload: dict[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = payload.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise RequestError(400, f"'{name}' must be a number from {low:g} to {high:g}, not {value!r}")
    return float(value)


def check_prompt(prompt: Any, field: str) -> Prompt:
    """``prompt`` if it is a text or a list of chat messages with string contents, else a 400 naming ``field``."""
    if isinstance(prompt, str):
        return prompt
    if is_chat(prompt):
        return [{"role": m["role"], "content": m["content"]} for m in prompt]
    raise RequestError(
        400, f"'{field}' must be a text or a non-empty list of messages {{'role': str, 'content': str}}, not {prompt!r}"
    )


@dataclass(frozen=True)
class Generated:
    """What a generation made: the text, why it ended (``"stop"``: the model's end or a stop string;
    ``"length"``: ``max_tokens`` reached), and the tokens of the prompt and of the completion."""

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


class _Cutter:
    """Passes text on as it comes, except a tail that may begin a stop string, held back until the next
    piece tells; at the first stop string the text ends there, and ``done`` turns True."""

    def __init__(self, stops: tuple[str, ...], emit: Callable[[str], None]) -> None:
        self.stops, self.emit = stops, emit
        self.held, self.done = "", False
        self.parts: list[str] = []

    def feed(self, text: str) -> None:
        if self.done:
            return
        text = self.held + text
        found = [text.find(stop) for stop in self.stops if stop in text]
        if found:
            self.held, self.done = "", True
            self._out(text[: min(found)])
            return
        keep = max((k for stop in self.stops for k in range(1, len(stop)) if text.endswith(stop[:k])), default=0)
        self.held = text[len(text) - keep :]
        self._out(text[: len(text) - keep])

    def flush(self) -> None:
        if not self.done:
            self._out(self.held)
        self.held = ""

    def _out(self, text: str) -> None:
        if text:
            self.parts.append(text)
            self.emit(text)


@dataclass(frozen=True)
class Request:
    """One generation asked of the model: its prompt and sampling, where its text goes as it is made
    (``emit``), and whether its client has gone (``cancelled``)."""

    prompt: Prompt
    sampling: Sampling
    emit: Callable[[str], None]
    cancelled: Callable[[], bool]


def batchable(model: Any) -> bool:
    """Whether generations of ``model`` can run several at a time: a text-generation pipeline's can (its
    prompts padded on the left into one ``generate``); a generator function's cannot."""
    return is_transformers_pipeline(model) and kind(model) == GENERATOR


def generate_all(model: Any, requests: list[Request]) -> list[Generated | Exception]:
    """Run the generations of ``requests`` (blocking: call it in the model's thread) and return each one's
    result, or the error that ended it. A text-generation pipeline runs the requests of the same sampling
    (``max_tokens``, ``temperature``, ``top_p``, text or chat) as one batch, each streamed and stopped on
    its own; a batch that fails before it has emitted anything is run again request by request, so that
    one bad prompt fails alone."""
    results: dict[int, Generated | Exception] = {}
    groups: dict[tuple[Any, ...], list[int]] = {}
    together = batchable(model)
    for index, request in enumerate(requests):
        sampling = request.sampling
        key = (sampling.max_tokens, sampling.temperature, sampling.top_p, isinstance(request.prompt, str))
        groups.setdefault(key if together else (index,), []).append(index)
    for indices in groups.values():
        batch = [requests[index] for index in indices]
        if len(batch) > 1:
            watched = [replace(r, emit=_Watched(r.emit)) for r in batch]
            try:
                results.update(zip(indices, _generate_pipeline(model, watched)))
                continue
            except Exception as error:  # noqa: BLE001 - handed to each request, or each is run alone below
                if any(r.emit.used for r in watched):  # type: ignore[attr-defined]
                    results.update(dict.fromkeys(indices, error))
                    continue
        for index, request in zip(indices, batch):
            try:
                results[index] = generate(model, request)
            except Exception as error:  # noqa: BLE001 - handed to the waiting request
                results[index] = error
    return [results[index] for index in range(len(requests))]


class _Watched:
    """An ``emit`` that remembers whether it was called: text already sent cannot be sent again."""

    def __init__(self, emit: Callable[[str], None]) -> None:
        self.emit, self.used = emit, False

    def __call__(self, text: str) -> None:
        self.used = True
        self.emit(text)


def generate(model: Any, request: Request) -> Generated:
    """Run a text-generation pipeline or a generator function on one request (blocking: call it in the
    model's thread), handing each piece of text to ``request.emit`` as soon as it is made; the generation
    stops at the next token once ``request.cancelled()`` is True (the client went away) or a stop string
    appeared."""
    if is_generator_function(model):
        return _pieces(model, request)
    return _generate_pipeline(model, [request])[0]


class _Row:
    """One request's share of a pipeline's generation: its text decoded as tokens come (a ``TextStreamer``
    of its own, since the library's takes one row) and cut at stop strings, its token counts, and whether
    it is done."""

    def __init__(self, tokenizer: Any, request: Request) -> None:
        import torch
        from transformers import TextStreamer

        self.tensor = torch.tensor  # each token goes to the streamer as a one-token tensor
        self.request = request
        self.cutter = _Cutter(request.sampling.stop, request.emit)
        self.streamer = TextStreamer(tokenizer, skip_special_tokens=True)
        self.streamer.on_finalized_text = lambda text, stream_end=False: self.cutter.feed(text)  # type: ignore[method-assign]
        self.eos = tokenizer.eos_token_id
        self.prompt_tokens = 0
        self.new: list[int] = []
        self.ended = False  # the model made its end token

    @property
    def done(self) -> bool:
        return self.ended or self.cutter.done or self.request.cancelled()

    def take(self, token: int) -> None:
        if self.done:  # a row done while others go on gets padding: not its text
            return
        self.new.append(token)
        self.streamer.put(self.tensor([token]))
        self.ended = token == self.eos

    def result(self) -> Generated:
        self.streamer.end()
        self.cutter.flush()
        reason = "stop" if self.ended or self.cutter.done else "length"
        return Generated("".join(self.cutter.parts), reason, self.prompt_tokens, len(self.new))


class _Rows:
    """The streamer ``generate`` is given: the prompts once (skipped), then each step's tokens, a token
    for each row, handed to the rows."""

    def __init__(self, rows: list[_Row]) -> None:
        self.rows = rows
        self.prompted = False

    def put(self, ids: Any) -> None:
        if not self.prompted:
            self.prompted = True
            return
        for row, token in zip(self.rows, ids.reshape(-1).tolist()):
            row.take(token)

    def end(self) -> None:
        pass  # each row ends in ``_Row.result``


def _generate_pipeline(pipeline: Any, requests: list[Request]) -> list[Generated]:
    """One ``generate`` of a text-generation pipeline over the prompts of ``requests`` (of the same
    sampling), left-padded into one batch when there are several: the pipeline's own call, so each text is
    the pipeline's own answer, with a streamer and a stopping criterion for each row."""
    from transformers import StoppingCriteriaList

    tokenizer = pipeline.tokenizer
    rows = [_Row(tokenizer, request) for request in requests]
    sampling = requests[0].sampling
    options: dict[str, Any] = {
        "return_full_text": False,
        "streamer": _Rows(rows),
        "do_sample": sampling.temperature > 0,
    }
    options["stopping_criteria"] = StoppingCriteriaList([_criterion()(lambda: [row.done for row in rows])])
    if sampling.max_tokens is not None:
        options["max_new_tokens"] = sampling.max_tokens
    if options["do_sample"]:
        options.update(temperature=sampling.temperature, top_p=sampling.top_p)
    prompts = [request.prompt for request in requests]
    with _counting_prompts(pipeline, rows), _padding(tokenizer):
        pipeline(prompts[0] if len(prompts) == 1 else prompts, batch_size=len(prompts), **options)
    return [row.result() for row in rows]


@contextlib.contextmanager
def _counting_prompts(pipeline: Any, rows: list[_Row]) -> Iterator[None]:
    """Record each row's prompt tokens as the pipeline's own ``preprocess`` makes them, in order: in a
    padded batch the tokens ``generate`` is given do not tell where a prompt begins."""
    own, made = pipeline.preprocess, iter(rows)

    def preprocess(*args: Any, **kwargs: Any) -> Any:
        inputs = own(*args, **kwargs)
        next(made).prompt_tokens = int(inputs["input_ids"].shape[-1])
        return inputs

    pipeline.preprocess = preprocess
    try:
        yield
    finally:
        pipeline.preprocess = own


@contextlib.contextmanager
def _padding(tokenizer: Any) -> Iterator[None]:
    """A pad token for the batch where the tokenizer has none (GPT-2's), its end token as transformers
    advises; taken away again after."""
    if tokenizer.pad_token_id is not None:
        yield
        return
    tokenizer.pad_token_id = tokenizer.eos_token_id
    try:
        yield
    finally:
        tokenizer.pad_token_id = None


def _pieces(function: Callable[[Prompt], Any], request: Request) -> Generated:
    """A generator function's pieces, each counted as a token (it has no tokenizer, nor sampling)."""
    cutter = _Cutter(request.sampling.stop, request.emit)
    count, ran_out, pieces = 0, True, function(request.prompt)
    for piece in pieces:
        if request.cancelled() or cutter.done or count == request.sampling.max_tokens:
            ran_out = False
            break
        cutter.feed(str(piece))
        count += 1
    pieces.close()
    cutter.flush()
    return Generated("".join(cutter.parts), "stop" if ran_out or cutter.done else "length", 0, count)


@functools.cache
def _criterion() -> type:
    """A transformers ``StoppingCriteria`` that stops each row when its check says so (``check()``: a flag
    for each row; made on first use, so that importing this module does not import transformers)."""
    import torch
    from transformers import StoppingCriteria

    class Check(StoppingCriteria):
        def __init__(self, check: Callable[[], list[bool]]) -> None:
            self.check = check

        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            return torch.tensor(self.check(), dtype=torch.bool, device=input_ids.device)

    return Check


def embed(pipeline: Any, texts: list[str]) -> tuple[list[list[float]], int]:
    """One vector per text from a feature-extraction pipeline, its token vectors mean-pooled, or from a
    sentence-transformers model's ``encode`` (its own pooling); and the number of tokens read (blocking:
    call it in the model's thread)."""
    import numpy as np

    if is_sentence_transformer(pipeline):
        tokens = int(pipeline.tokenize(texts)["attention_mask"].sum())
        return np.asarray(pipeline.encode(texts)).tolist(), tokens
    vectors, tokens = [], 0
    for text in texts:
        hidden = np.asarray(pipeline(text))[0]  # (tokens, width)
        vectors.append(hidden.mean(axis=0).tolist())
        tokens += hidden.shape[0]
    return vectors, tokens
