"""The RAG service on Ray Serve through the local runtime, as a client sees it: OpenAI-compatible chat
(plain and streamed), embeddings, retrieval with sources, clear 4xx errors, autoscaling, a clean `down`."""

from __future__ import annotations

import json
import threading
import time

import httpx
import numpy as np
import psutil
import pytest
from platform_helpers import mlplane, status, wait_for
from rag_helpers import COLLECTION, sse_events

from mlplane.rag.generate import OpenAIGenerator
from mlplane.rag.serve_config import GeneratorArgs
from mlplane.rag.store import Hit
from mlplane.runtime.local.paths import StatePaths
from mlplane.runtime.local.plan import ray_app_file

pytestmark = pytest.mark.e2e
QUESTION = "What does mlplane up start?"


def post(rag: dict, path: str, **kwargs) -> httpx.Response:
    """POST with the tests' API key."""
    kwargs.setdefault("timeout", 300)
    return httpx.post(f"{rag['url']}{path}", headers={**rag["headers"], **kwargs.pop("headers", {})}, **kwargs)


def chat(rag: dict, **body) -> httpx.Response:
    body.setdefault("messages", [{"role": "user", "content": QUESTION}])
    return post(rag, "/v1/chat/completions", json=body)


def test_status_shows_the_endpoint_and_health_names_the_versions(rag):
    dep = status(rag["dir"])["deployments"]["rag"]
    assert dep["status"] == "ready" and dep["runtime"] == "ray" and dep.get("grpc") is None
    assert dep["url"].startswith("http://127.0.0.1:") and dep["servedVersion"] == rag["generator_version"]
    health = httpx.get(f"{rag['url']}/health", timeout=30).json()
    assert health["embedder"]["version"] == rag["embedder_version"]
    assert health["generator"] == {"type": "local", "model": f"models:/mlplane-generator/{rag['generator_version']}",
                                   "version": rag["generator_version"]}
    assert httpx.get(f"{rag['url']}/v1/models", headers=rag["headers"]).json()["data"][0]["id"] == "rag"


def test_chat_answer_cites_its_sources_and_records_the_versions(rag):
    r = chat(rag)
    assert r.status_code == 200, r.text
    body = r.json()
    content = body["choices"][0]["message"]["content"]
    assert body["object"] == "chat.completion" and body["model"] == "rag"
    assert "Sources:\n[1] up.md (Starting a platform)" in content
    assert body["sources"][0]["source"] == "up.md" and body["sources"][0]["index"] == 1
    assert body["sources"][0]["score"] >= body["sources"][1]["score"]
    meta = body["mlplane"]
    assert meta["embedder"]["version"] == rag["embedder_version"]
    assert meta["generator"]["version"] == rag["generator_version"] and meta["collection"] == COLLECTION


def test_streaming_yields_incremental_chunks(rag):
    with httpx.stream("POST", f"{rag['url']}/v1/chat/completions", timeout=300, headers=rag["headers"],
                      json={"messages": [{"role": "user", "content": QUESTION}], "stream": True}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    pieces = [c["choices"][0]["delta"].get("content") for c in chunks[1:-2]]
    assert len([p for p in pieces if p]) >= 3  # the model's tokens, as they come
    assert chunks[-2]["choices"][0]["delta"]["content"].startswith("\n\nSources:\n[1] up.md")
    last = chunks[-1]
    assert last["choices"][0]["finish_reason"] == "stop"
    assert last["sources"][0]["source"] == "up.md" and last["mlplane"]["generator"]["type"] == "local"


def test_embeddings_are_openai_shaped_unit_vectors(rag):
    r = post(rag, "/v1/embeddings", json={"input": ["first text", "second text"]})
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert [d["index"] for d in data] == [0, 1]
    vectors = np.array([d["embedding"] for d in data])
    assert vectors.shape == (2, 384) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    b64 = post(rag, "/v1/embeddings", json={"input": "first text", "encoding_format": "base64"}).json()
    b64 = b64["data"][0]["embedding"]
    import base64

    assert np.allclose(np.frombuffer(base64.b64decode(b64), dtype="<f4"), vectors[0], atol=1e-6)


def test_retrieve_returns_chunks_with_sources_and_scores(rag):
    r = post(rag, "/v1/retrieve", json={"query": "how do I move the champion alias?", "top_k": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["collection"] == COLLECTION and len(body["data"]) == 3
    top = body["data"][0]
    assert top["source"] == "promote.md" and top["title"] == "Promoting a model" and "champion" in top["text"]
    scores = [d["score"] for d in body["data"]]
    assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize(("body", "status_code", "code", "names"), [
    ({"messages": [{"role": "user", "content": "   "}]}, 400, "empty_question", "empty"),
    ({"messages": [{"role": "system", "content": "be brief"}]}, 400, "empty_question", "no user message"),
    ({"messages": [{"role": "user", "content": "why? " * 200}]}, 413, "input_too_large", "at most 500"),
    ({"messages": [{"role": "user", "content": QUESTION}], "collection": "nope"}, 404, "collection_not_found",
     "'nope' does not exist"),
    ({"messages": []}, 422, "invalid_body", "messages"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, 422, "invalid_body", "role"),
])
def test_bad_chat_requests_get_a_clear_4xx_and_the_service_keeps_serving(rag, body, status_code, code, names):
    r = chat(rag, **body)
    assert r.status_code == status_code, r.text
    error = r.json()["error"]
    assert error["code"] == code and names in error["message"]
    assert httpx.get(f"{rag['url']}/health", timeout=30).status_code == 200


def test_other_bad_inputs(rag):
    not_json = post(rag, "/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert not_json.status_code == 400 and "not valid JSON" in not_json.json()["error"]["message"]
    unknown = post(rag, "/v1/retrieve", json={"query": "x", "collection": "missing"})
    assert unknown.status_code == 404 and "existing collections: docs" in unknown.json()["error"]["message"]
    empty = post(rag, "/v1/embeddings", json={"input": ["ok", ""]})
    assert empty.status_code == 400 and "positions [1]" in empty.json()["error"]["message"]
    huge = post(rag, "/v1/embeddings", json={"input": "x" * 20_000})
    assert huge.status_code == 413 and "at most 16000" in huge.json()["error"]["message"]
    many = post(rag, "/v1/embeddings", json={"input": ["a"] * 300})
    assert many.status_code == 413 and "at most 256" in many.json()["error"]["message"]
    body = post(rag, "/v1/embeddings", content=b"x" * (17 * 1024 * 1024), headers={"content-type": "application/json"})
    assert body.status_code == 413 and "bytes" in body.json()["error"]["message"]
    assert post(rag, "/v1/retrieve", json={"query": "stop"}).status_code == 200


def test_the_openai_client_generator_streams_from_an_openai_compatible_server(rag, monkeypatch):
    monkeypatch.setenv("RAG_TEST_KEY", rag["key"])  # spec.rag.generator.apiKeyEnv names the variable
    args = GeneratorArgs(type="openai", url=f"{rag['url']}/v1", model_name="rag", api_key_env="RAG_TEST_KEY")
    client = OpenAIGenerator(args, None)
    hits = [Hit(chunk_id="x#0", text="mlplane down stops every component.", source="down.md", score=1.0)]
    pieces = list(client.stream("What does mlplane down do?", hits, max_tokens=8, temperature=0.0))
    assert len(pieces) >= 3 and "Sources:" in "".join(pieces)


def _replicas(state_dir, name: str = "Embedder") -> int:
    file = ray_app_file(StatePaths(state_dir), "rag").with_name("status.json")
    return json.loads(file.read_text())["deployments"][name]["replicas"]


def test_a_burst_scales_the_embedder_up_and_back_to_the_minimum(rag):
    assert _replicas(rag["dir"]) == 1
    stop = threading.Event()
    errors: list[str] = []

    def client() -> None:
        with httpx.Client(timeout=60, headers=rag["headers"]) as http:
            while not stop.is_set():
                r = http.post(f"{rag['url']}/v1/embeddings", json={"input": ["scale me " * 20] * 4})
                if r.status_code != 200:
                    errors.append(r.text)

    threads = [threading.Thread(target=client) for _ in range(16)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: _replicas(rag["dir"]) > 1, 180, "the embedder to scale above 1 replica")
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == []
    wait_for(lambda: _replicas(rag["dir"]) == 1, 240, "the embedder to scale back to 1 replica")
    assert post(rag, "/v1/retrieve", json={"query": "batching"}).status_code == 200


def test_api_keys_and_rate_limits_guard_the_api_but_not_health(rag):
    url = rag["url"]
    assert httpx.get(f"{url}/health", timeout=30).status_code == 200
    missing = httpx.post(f"{url}/v1/retrieve", json={"query": "batching"}, timeout=30)
    assert missing.status_code == 401 and "error" in missing.json()
    assert post(rag, "/v1/retrieve", json={"query": "batching"}, headers={"Authorization": "Bearer nope"}
                ).status_code == 401
    slow = mlplane(rag["dir"], "keys", "create", "slow", "--rps", "0.1", "--burst", "2").stdout.strip()
    codes = [post(rag, "/v1/retrieve", json={"query": "batching"}, headers={"Authorization": f"Bearer {slow}"}
                  ).status_code for _ in range(4)]
    assert codes[:2] == [200, 200] and codes[-1] == 429
    mlplane(rag["dir"], "keys", "revoke", "slow")
    revoked = post(rag, "/v1/retrieve", json={"query": "batching"}, headers={"Authorization": f"Bearer {slow}"})
    assert revoked.status_code == 401
    assert post(rag, "/v1/retrieve", json={"query": "batching"}).status_code == 200


def test_promote_moves_the_generator_and_answers_record_the_new_version(rag):
    from mlplane.rag.generate import register_generator

    v2 = register_generator(rag["tracking"], alias="candidate")
    out = mlplane(rag["dir"], "promote", "rag", "--version", v2, timeout=540)
    assert v2 in out.stdout
    assert status(rag["dir"])["deployments"]["rag"]["servedVersion"] == v2
    body = post(rag, "/v1/retrieve", json={"query": "promote"}).json()
    assert body["data"][0]["source"] == "promote.md"
    meta = chat(rag, max_tokens=4).json()["mlplane"]
    assert meta["generator"]["version"] == v2 and meta["embedder"]["version"] == rag["embedder_version"]


def test_undeploy_removes_its_files_and_no_ray_process_is_left(rag):
    state = status(rag["dir"])
    before = state["deployments"]["rag"]["pid"]
    # Ray processes of other platforms on this machine (e.g. `make demo`'s, left running) are not ours.
    platform_started = psutil.Process(state["supervisor"]["pid"]).create_time()
    tree = psutil.Process(before).children(recursive=True)
    assert any("raylet" in " ".join(p.cmdline()) for p in tree)
    assert (rag["dir"] / "ray" / "rag" / "app.json").exists()
    mlplane(rag["dir"], "undeploy", "rag")
    assert not (rag["dir"] / "ray" / "rag").exists()
    mlplane(rag["dir"], "down")
    deadline = time.monotonic() + 60  # Ray's workers exit after their raylet: poll, do not guess a delay
    while time.monotonic() < deadline and any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in tree):
        time.sleep(0.5)
    left = [p for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert left == []
    ray_left = [p.info["cmdline"] for p in psutil.process_iter(["cmdline", "create_time"])
                if p.info["create_time"] >= platform_started
                and any(word in " ".join(p.info["cmdline"] or []) for word in ("raylet", "gcs_server", "ray::"))]
    assert ray_left == []
