"""Foundation models served as their users call them: the official `openai` client against a served tiny
generator and embedder (real server processes, real transformers), and the native `/generate` stream."""

from __future__ import annotations

import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import openai
import pytest
import tiny_models as tm
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

import notebook_deploy as nd
from notebook_deploy import generation
from notebook_deploy.keys import KeyStore

CHAT = [{"role": "user", "content": "the quick brown fox"}]


@pytest.fixture(scope="module")
def generator():
    return tm.text_generator()


@pytest.fixture(scope="module")
def generator_bundle(generator, tmp_path_factory):
    return nd.capture(generator, "gen", ["hello world", "the quick"], store=nd.Store(tmp_path_factory.mktemp("store")))


def greedy(generator, prompt, tokens):
    """The pipeline's own answer in-process, greedy."""
    answer = generator(prompt, max_new_tokens=tokens, do_sample=False, return_full_text=False)[0]["generated_text"]
    return answer if isinstance(answer, str) else answer[-1]["content"]


def test_generation_routes_exist_only_for_generators(generator_bundle, forest_bundle):

    paths = nd.create_app(generator_bundle).openapi()["paths"]
    assert {"/generate", "/v1/chat/completions", "/v1/completions", "/v1/models"} <= set(paths)
    assert "/v1/embeddings" not in paths
    assert "text/event-stream" in json.dumps(paths["/generate"])
    forest_paths = nd.create_app(forest_bundle).openapi()["paths"]
    assert not {"/generate", "/v1/chat/completions", "/v1/models"} & set(forest_paths)
    with TestClient(nd.create_app(generator_bundle)) as client:
        for body, field in [
            ({"model": "gen", "prompt": "hi", "max_tokens": 0}, "'max_tokens'"),
            ({"model": "gen", "prompt": "hi", "temperature": "hot"}, "'temperature'"),
            ({"model": "gen", "prompt": "hi", "stop": [1]}, "'stop'"),
            ({"model": "gen", "prompt": 3}, "'prompt'"),
            ({"model": "gen", "prompt": "hi", "n": 2}, "'n'"),
            ({"model": "gen", "prompt": "hi", "logprobs": 2}, "'logprobs'"),
        ]:
            answer = client.post("/v1/completions", json=body)
            assert answer.status_code == 400, answer.text
            error = answer.json()["error"]
            assert field in error["message"] and error["type"] == "invalid_request_error"
        missing = client.post("/v1/chat/completions", json={"model": "other", "messages": CHAT})
        assert missing.status_code == 404 and "'gen'" in missing.json()["error"]["message"]
        broken = client.post("/v1/chat/completions", content=b"{", headers={"content-type": "application/json"})
        assert broken.status_code == 400 and "not valid JSON" in broken.json()["error"]["message"]
        native = client.post("/generate", json={"messages": [{"role": "user"}]})
        assert native.status_code == 400 and "'prompt'" in native.json()["detail"]


def test_stop_strings_end_the_text_before_them(generator_bundle, generator):
    from fastapi.testclient import TestClient

    full = greedy(generator, "the quick", 12)
    word = full.split()[2]
    with TestClient(nd.create_app(generator_bundle)) as client:
        body = {"model": "gen", "prompt": "the quick", "max_tokens": 12, "stop": [word]}
        answer = client.post("/v1/completions", json=body).json()["choices"][0]
        assert answer["text"] == full[: full.index(word)] and answer["finish_reason"] == "stop"
        streamed = client.post("/v1/completions", json={**body, "stream": True}).text
        pieces = [json.loads(line[6:]) for line in streamed.splitlines() if line.startswith("data: {")]
        assert "".join(p["choices"][0]["text"] for p in pieces) == answer["text"]


@pytest.mark.integration
def test_the_openai_client_against_a_served_generator(generator_bundle, generator):
    with nd.serve(generator_bundle) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused")
        assert [m.id for m in client.models.list()] == ["gen"]

        chat = client.chat.completions.create(model="gen", messages=CHAT, max_tokens=10)
        assert chat.choices[0].message.content == greedy(generator, CHAT, 10)
        assert chat.choices[0].message.role == "assistant" and chat.usage.completion_tokens == 10

        completion = client.completions.create(model="gen", prompt="the quick", max_tokens=10)
        expected = greedy(generator, "the quick", 10)
        assert expected and completion.choices[0].text == expected
        assert completion.choices[0].finish_reason == "length"

        # streamed: several chunks, the first read before the generation has ended (the last is the end)
        stream = client.chat.completions.create(model="gen", messages=CHAT, max_tokens=20, stream=True)
        chunks, first_at = [], None
        for chunk in stream:
            chunks.append(chunk)
            if chunk.choices and chunk.choices[0].delta.content and first_at is None:
                first_at, finished_then = time.monotonic(), any(c.choices[0].finish_reason for c in chunks)
        texts = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
        assert len(texts) > 1 and not finished_then
        assert "".join(texts) == greedy(generator, CHAT, 20)
        assert chunks[-1].choices[0].finish_reason == "length"

        streamed = client.completions.create(model="gen", prompt="the quick", max_tokens=10, stream=True)
        assert "".join(c.choices[0].text for c in streamed) == expected


PROMPTS = ["hello world", "the quick brown fox jumps over", "a model", "serving models is where projects die"]


def batches(metrics: str) -> tuple[float, float]:
    """How many generation batches a server ran, and how many generations were in them."""
    found = {
        sample.name: sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.labels.get("method") == "generate"
    }
    return found["notebook_deploy_batch_size_count"], found["notebook_deploy_batch_size_sum"]


@pytest.mark.parametrize("batching", [None, False])
def test_the_prompts_of_a_request_are_generated_as_one_batch(generator_bundle, generator, batching):
    """Prompts of different lengths, left-padded into one batch, each answer the pipeline's own alone;
    with --no-batching they are generated one at a time."""
    with TestClient(nd.create_app(generator_bundle, batching=batching)) as client:
        body = {"model": "gen", "prompt": PROMPTS, "max_tokens": 12}
        answer = client.post("/v1/completions", json=body).json()
        assert [c["text"] for c in answer["choices"]] == [greedy(generator, p, 12) for p in PROMPTS]
        assert [c["index"] for c in answer["choices"]] == [0, 1, 2, 3]
        alone = [generator.tokenizer(p)["input_ids"] for p in PROMPTS]
        assert answer["usage"]["prompt_tokens"] == sum(len(ids) for ids in alone)  # not the padded lengths
        streamed = client.post("/v1/completions", json={**body, "stream": True}).text
        texts = ["", "", "", ""]
        for line in streamed.splitlines():
            if line.startswith("data: {"):
                choice = json.loads(line[6:])["choices"][0]
                texts[choice["index"]] += choice["text"]
        assert texts == [c["text"] for c in answer["choices"]]
        count, generations = batches(client.get("/metrics").text)
    assert generations == 8
    assert count == (2 if batching is None else 8)


def test_in_a_batch_each_generation_stops_and_fails_alone(generator):
    """Run in the model's thread as the server does: one row cut by its stop string, one whose client
    went away, one bad prompt; the others run to their end unchanged."""
    full = greedy(generator, PROMPTS[1], 12)
    stop = full.split()[2]
    made: list[list[str]] = [[], [], [], []]
    gone = [False]

    def request(prompt, out, cancelled=lambda: False, **sampling):
        return generation.Request(prompt, generation.Sampling(max_tokens=12, **sampling), out.append, cancelled)

    def leaving(text):
        made[2].append(text)
        gone[0] = True  # the client goes away once it has read the first piece

    requests = [
        request(PROMPTS[0], made[0]),
        request(PROMPTS[1], made[1], stop=(stop,)),
        generation.Request(PROMPTS[2], generation.Sampling(max_tokens=12), leaving, lambda: gone[0]),
        request(PROMPTS[3], made[3]),
    ]
    results = generation.generate_all(generator, requests)
    assert results[0].text == "".join(made[0]) == greedy(generator, PROMPTS[0], 12)
    assert results[1].text == full[: full.index(stop)] and results[1].finish_reason == "stop"
    assert results[2].completion_tokens < 12 and len(made[2]) == 1
    assert results[3].text == greedy(generator, PROMPTS[3], 12) and results[3].completion_tokens == 12

    # a prompt longer than the model's 128 positions fails the batch before any text: each is run alone
    results = generation.generate_all(generator, [request(PROMPTS[0], []), request("hello " * 200, [])])
    assert results[0].text == greedy(generator, PROMPTS[0], 12)
    assert isinstance(results[1], Exception)


@pytest.mark.integration
def test_clients_that_arrive_together_share_a_batch_and_each_get_their_own_stream(tmp_path):
    slow = tm.text_generator(width=512)  # one generation takes long enough for the others to queue
    bundle = nd.capture(slow, "slow", ["hello world"], store=nd.Store(tmp_path / "store"))
    with nd.serve(bundle) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused")
        start = threading.Barrier(len(PROMPTS))

        def chat(prompt):
            start.wait()
            messages = [{"role": "user", "content": prompt}]
            stream = client.chat.completions.create(model="slow", messages=messages, max_tokens=40, stream=True)
            return "".join(c.choices[0].delta.content or "" for c in stream)

        with ThreadPoolExecutor(len(PROMPTS)) as pool:
            answers = list(pool.map(chat, PROMPTS))
        assert answers == [greedy(slow, [{"role": "user", "content": p}], 40) for p in PROMPTS]
        count, generations = batches(httpx.get(server.url + "/metrics").text)
    assert generations == len(PROMPTS) and count < generations


@pytest.mark.integration
def test_a_client_that_goes_away_stops_the_generation(tmp_path):
    from transformers import TextGenerationPipeline

    class Slow(TextGenerationPipeline):  # of this test's own: captured as a pickle, hook and all
        pass

    base = tm.text_generator()
    slow = Slow(task="text-generation", model=base.model, tokenizer=base.tokenizer, device="cpu")
    # 20 ms a token: 100 tokens take 2 s at least, far longer than the server takes to see the client leave
    slow.model.register_forward_hook(lambda module, inputs, output: time.sleep(0.02))
    bundle = nd.capture(slow, "slow", ["hello world"], store=nd.Store(tmp_path / "store"))
    assert bundle.manifest["serialization"]["format"] == "cloudpickle"
    with nd.serve(bundle) as server:
        with httpx.stream(
            "POST", server.url + "/generate", json={"prompt": "hello world", "max_tokens": 100}
        ) as answer:
            assert answer.headers["content-type"].startswith("text/event-stream")
            first = next(answer.iter_lines())
            assert json.loads(first.removeprefix("data: "))["text"]
        deadline = time.monotonic() + 30
        while "cut short" not in server.logs() and time.monotonic() < deadline:
            time.sleep(0.1)
        cut = re.search(r"generate cut short.*completion_tokens=(\d+)", server.logs())
        assert cut, server.logs()[-1500:]
        made = int(cut.group(1))
        assert made < 100
        # the server goes on: a whole generation after it
        events = httpx.post(server.url + "/generate", json={"prompt": "hello world", "max_tokens": 5}).text
        last = json.loads(events.strip().splitlines()[-1].removeprefix("data: "))
        assert last == {"finish_reason": "length", "usage": {"prompt_tokens": 2, "completion_tokens": 5}}


@pytest.mark.integration
def test_keys_and_model_errors_in_openai_shape(generator_bundle, tmp_path):
    keys = KeyStore(tmp_path / "keys.json", audit_log=tmp_path / "audit.log")
    key, _ = keys.create("predict", "client")
    with nd.serve(generator_bundle, keys_file=str(keys.path), audit_log=str(tmp_path / "audit.log")) as server:
        anonymous = openai.OpenAI(base_url=server.url + "/v1", api_key="wrong")
        with pytest.raises(openai.AuthenticationError) as refused:
            anonymous.completions.create(model="gen", prompt="hi", max_tokens=2)
        assert refused.value.status_code == 401 and "API key" in refused.value.body["message"]
        client = openai.OpenAI(base_url=server.url + "/v1", api_key=key)
        assert client.completions.create(model="gen", prompt="hi", max_tokens=2).choices[0].finish_reason
        with pytest.raises(openai.BadRequestError, match="'temperature'"):
            client.completions.create(model="gen", prompt="hi", temperature=5)
        # past the model's 128 positions its embedding lookup raises: a 500 that tells nothing of it
        with pytest.raises(openai.InternalServerError) as failed:
            client.completions.create(model="gen", prompt="hi", max_tokens=200)
        assert "server's log" in failed.value.body["message"] and "index" not in failed.value.body["message"]
        with pytest.raises(openai.APIError, match="server's log"):  # after some chunks: the error comes as the last
            list(client.completions.create(model="gen", prompt="hi", max_tokens=200, stream=True))
        assert client.completions.create(model="gen", prompt="hi", max_tokens=2).choices[0].text is not None


@pytest.mark.integration
def test_embeddings_are_the_pipelines_mean_pooled_vectors(tmp_path):
    embedder = tm.embedder()
    bundle = nd.capture(embedder, "embed", ["hello world", "the quick"], store=nd.Store(tmp_path / "store"))
    texts = ["hello world", "the quick brown fox"]
    expected = [np.asarray(embedder(t))[0].mean(axis=0) for t in texts]
    with nd.serve(bundle) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused")
        assert [m.id for m in client.models.list()] == ["embed"]
        for options in ({}, {"encoding_format": "float"}):  # unless told, the client asks for base64 and decodes it
            answer = client.embeddings.create(model="embed", input=texts, **options)
            for item, vector in zip(answer.data, expected, strict=True):
                np.testing.assert_allclose(item.embedding, vector, rtol=1e-5, atol=1e-6)
        assert answer.usage.prompt_tokens > 0
        one = client.embeddings.create(model="embed", input="hello world")
        np.testing.assert_allclose(one.data[0].embedding, expected[0], rtol=1e-5, atol=1e-6)
        with pytest.raises(openai.BadRequestError, match="'input'"):
            client.embeddings.create(model="embed", input=[[1, 2, 3]])
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="embed", messages=CHAT)


def words(prompt):
    """A generator function model: the prompt's words, upper-cased, one piece each."""
    for word in str(prompt).split():
        yield word.upper() + " "


def test_a_generator_function_is_served_joined_and_streamed(store):
    from fastapi.testclient import TestClient

    bundle = nd.capture(words, "words", ["hello world", "the quick brown fox"], store=store)
    assert list(bundle.predict(["a b c"])) == ["A B C "]
    with TestClient(nd.create_app(bundle)) as client:
        events = client.post("/generate", json={"prompt": "one two three four", "max_tokens": 3}).text
        data = [json.loads(line[6:]) for line in events.splitlines() if line.startswith("data: ")]
        assert [d["text"] for d in data[:-1]] == ["ONE ", "TWO ", "THREE "]
        assert data[-1] == {"finish_reason": "length", "usage": {"prompt_tokens": 0, "completion_tokens": 3}}
        body = {"model": "words", "prompt": "x y", "stop": "Y"}
        answer = client.post("/v1/completions", json=body).json()["choices"][0]
        assert answer == {"index": 0, "text": "X ", "logprobs": None, "finish_reason": "stop"}


@pytest.mark.integration
def test_a_sentence_transformer_answers_embeddings(tmp_path):
    embedder = tm.sentence_embedder(tmp_path / "bert")
    bundle = nd.capture(embedder, "sentences", ["hello world"], store=nd.Store(tmp_path / "store"))
    texts = ["hello world", "the quick brown fox"]
    with nd.serve(bundle) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused")
        answer = client.embeddings.create(model="sentences", input=texts)
        got = [item.embedding for item in answer.data]
        np.testing.assert_allclose(got, embedder.encode(texts), rtol=1e-5, atol=1e-6)
        assert answer.usage.prompt_tokens > 0
