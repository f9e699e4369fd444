"""Foundation models served as their users expect: which kind a model is (a text generator, an embedder),
the sampling parameters of a request, a generation streamed piece by piece and stoppable, embeddings.

This is the one place that knows transformers: the serving protocols (native ``/generate``, the
OpenAI-compatible routes) call ``generate`` and ``embed`` in the model's thread and know nothing of
tokenizers or streamers. A text-generation pipeline is called as itself, so a served answer is the
pipeline's own answer (its chat template, its decoding), with a streamer and a stopping criterion added.

Imports nothing heavy at module level: torch and transformers are imported by the calls that need them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
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


def generate(
    pipeline: Any, prompt: Prompt, sampling: Sampling, emit: Callable[[str], None], cancelled: Callable[[], bool]
) -> Generated:
    """Run a text-generation pipeline or a generator function on ``prompt`` (blocking: call it in the
    model's thread), handing each piece of text to ``emit`` as soon as it is made; the generation stops at
    the next token once ``cancelled()`` is True (the client went away) or a stop string appeared."""
    cutter = _Cutter(sampling.stop, emit)
    if is_generator_function(pipeline):
        return _pieces(pipeline, prompt, sampling, cutter, cancelled)
    from transformers import StoppingCriteriaList, TextStreamer

    streamer = TextStreamer(pipeline.tokenizer, skip_prompt=True, skip_special_tokens=True)
    streamer.on_finalized_text = lambda text, stream_end=False: cutter.feed(text)  # type: ignore[method-assign]
    tokens: list[list[int]] = []  # the prompt's, then each step's
    put = streamer.put

    def counted(ids: Any) -> None:
        tokens.append(ids.reshape(-1).tolist())
        put(ids)

    streamer.put = counted  # type: ignore[method-assign]
    options: dict[str, Any] = {"return_full_text": False, "streamer": streamer, "do_sample": sampling.temperature > 0}
    options["stopping_criteria"] = StoppingCriteriaList([_criterion()(lambda: cutter.done or cancelled())])
    if sampling.max_tokens is not None:
        options["max_new_tokens"] = sampling.max_tokens
    if options["do_sample"]:
        options.update(temperature=sampling.temperature, top_p=sampling.top_p)
    pipeline(prompt, **options)
    cutter.flush()
    new = [token for step in tokens[1:] for token in step]
    ended = cutter.done or (bool(new) and new[-1] == pipeline.tokenizer.eos_token_id)
    prompt_tokens = len(tokens[0]) if tokens else 0
    return Generated("".join(cutter.parts), "stop" if ended else "length", prompt_tokens, len(new))


def _pieces(
    function: Callable[[Prompt], Any],
    prompt: Prompt,
    sampling: Sampling,
    cutter: _Cutter,
    cancelled: Callable[[], bool],
) -> Generated:
    """A generator function's pieces, each counted as a token (it has no tokenizer, nor sampling)."""
    count, ran_out, pieces = 0, True, function(prompt)
    for piece in pieces:
        if cancelled() or cutter.done or count == sampling.max_tokens:
            ran_out = False
            break
        cutter.feed(str(piece))
        count += 1
    pieces.close()
    cutter.flush()
    return Generated("".join(cutter.parts), "stop" if ran_out or cutter.done else "length", 0, count)


@functools.cache
def _criterion() -> type:
    """A transformers ``StoppingCriteria`` that stops when its check says so (made on first use, so that
    importing this module does not import transformers)."""
    import torch
    from transformers import StoppingCriteria

    class Check(StoppingCriteria):
        def __init__(self, check: Callable[[], bool]) -> None:
            self.check = check

        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            return torch.full((input_ids.shape[0],), self.check(), dtype=torch.bool, device=input_ids.device)

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
