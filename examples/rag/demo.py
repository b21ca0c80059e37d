"""`make demo`, the RAG part: a platform with a vector store, the docs corpus ingested, a RAG service on
Ray Serve, and two questions through its OpenAI-compatible API (one streamed).

1. `mlplane up -f examples/rag/platform.yaml`  MLflow + Milvus Lite (state dir .mlplane-rag)
2. register the embedder and the generator     MLflow pyfuncs wrapping the packaged weights (@champion)
3. `mlplane ingest examples/rag/corpus`        chunk, embed and index the docs
4. `mlplane deploy -f .../deployment.yaml`     Ray Serve: embedder → retriever → generator
5. ask two questions                           answers with their numbered sources
The platform keeps running; `MLPLANE_STATE_DIR=.mlplane-rag mlplane down` stops it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
STATE_DIR = ROOT / ".mlplane-rag"  # its own platform: the iris demo's has no vector store
ENV = {**os.environ, "MLPLANE_STATE_DIR": str(STATE_DIR), "HF_HUB_OFFLINE": "1"}
MLPLANE = [sys.executable, "-m", "mlplane"]
QUESTIONS = ["How does promotion switch versions without failing requests?",
             "Which command starts the local platform in the background?"]

sys.path.insert(0, str(HERE))
from client import ask, print_stream  # noqa: E402


def mlplane(*args: str, capture: bool = False) -> str:
    proc = subprocess.run([*MLPLANE, *args], cwd=ROOT, env=ENV, text=True,
                          stdout=subprocess.PIPE if capture else None)
    if proc.returncode != 0:
        sys.exit(f"`mlplane {' '.join(args)}` failed with exit code {proc.returncode}")
    return proc.stdout or ""


def step(title: str) -> None:
    print(f"\n\033[1m==> {title}\033[0m", flush=True)


def registered(tracking_uri: str, name: str) -> str | None:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return MlflowClient(tracking_uri).get_model_version_by_alias(name, "champion").version
    except MlflowException:
        return None


def sources(body: dict) -> str:
    return ", ".join(f"[{s['index']}] {s['source']} ({s['score']:.2f})" for s in body["sources"])


def main() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    step(f"mlplane up -f examples/rag/platform.yaml (state dir {STATE_DIR.name})")
    already = subprocess.run([*MLPLANE, "status", "-o", "json"], cwd=ROOT, env=ENV, capture_output=True, text=True)
    if already.returncode == 0:
        print("The RAG platform is already running; reusing it.")
    else:
        mlplane("up", "-f", str(HERE / "platform.yaml"))
    state = json.loads(mlplane("status", "-o", "json", capture=True))
    tracking_uri = state["trackingUri"]
    # With spec.auth.enabled, MLflow needs the platform's credentials (what `eval "$(mlplane env)"` sets).
    from mlplane.auth.mlflow import use_platform_credentials

    use_platform_credentials(Path(state["stateDir"]))

    step("Register the embedder and the generator in MLflow (alias champion)")
    from mlplane.rag.embedding import register_embedder
    from mlplane.rag.generate import register_generator

    for name, register in (("mlplane-embedder", register_embedder), ("mlplane-generator", register_generator)):
        version = registered(tracking_uri, name) or register(tracking_uri)
        print(f"models:/{name}@champion -> version {version}")

    step("mlplane ingest examples/rag/corpus --collection mlplane_docs")
    mlplane("ingest", "examples/rag/corpus", "--collection", "mlplane_docs")

    step("mlplane deploy -f examples/rag/deployment.yaml (Ray Serve)")
    mlplane("deploy", "-f", str(HERE / "deployment.yaml"))
    dep = json.loads(mlplane("status", "-o", "json", capture=True))["deployments"]["docs-rag"]
    url = dep["url"]

    step(f"Ask: {QUESTIONS[0]}")
    body = ask(url, QUESTIONS[0])
    print(body["choices"][0]["message"]["content"])
    meta = body["mlplane"]
    print(f"\nanswered by generator version {meta['generator']['version']} and embedder version "
          f"{meta['embedder']['version']}; sources: {sources(body)}")

    step(f"Ask, streamed: {QUESTIONS[1]}")
    last = print_stream(url, QUESTIONS[1])
    print(f"sources: {sources(last)}")

    step("Done")
    print(f"MLflow UI:           {tracking_uri}")
    print(f"OpenAI-compatible:   {url}/v1/chat/completions  (also /v1/embeddings, /v1/retrieve, /v1/models)")
    print(f"Try:  .venv/bin/python examples/rag/client.py {url} 'How are API keys stored?' --stream")
    print("Stop it with `MLPLANE_STATE_DIR=.mlplane-rag .venv/bin/mlplane down`.")


if __name__ == "__main__":
    main()
