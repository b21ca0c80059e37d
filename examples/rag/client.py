"""Calling the RAG service with plain HTTP (httpx), as any OpenAI-compatible client does.

    .venv/bin/python examples/rag/client.py http://127.0.0.1:PORT "What does mlplane up start?" [--stream]

With auth on, set MLPLANE_API_KEY (from `mlplane keys create NAME`).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from typing import Any

import httpx


def _headers() -> dict[str, str]:
    key = os.environ.get("MLPLANE_API_KEY")
    return {"Authorization": f"Bearer {key}"} if key else {}


def ask(url: str, question: str, timeout: float = 300) -> dict[str, Any]:
    """One chat completion: the answer (ending with its sources), ``sources`` and ``mlplane`` metadata."""
    r = httpx.post(f"{url}/v1/chat/completions", headers=_headers(), timeout=timeout,
                   json={"messages": [{"role": "user", "content": question}]})
    r.raise_for_status()
    return r.json()


def ask_stream(url: str, question: str, timeout: float = 300) -> Iterator[dict[str, Any]]:
    """The chunks of a streamed chat completion (server-sent events), as they arrive."""
    body = {"messages": [{"role": "user", "content": question}], "stream": True}
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, headers=_headers(), timeout=timeout) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: "):
                continue
            data = line[len("data: "):]
            if data == "[DONE]":
                return
            yield json.loads(data)


def print_stream(url: str, question: str) -> dict[str, Any]:
    """Print a streamed answer as it comes; return the last chunk (with ``sources`` and ``mlplane``)."""
    last: dict[str, Any] = {}
    for chunk in ask_stream(url, question):
        if "error" in chunk:
            raise RuntimeError(chunk["error"]["message"])
        print(chunk["choices"][0]["delta"].get("content") or "", end="", flush=True)
        last = chunk
    print()
    return last


def main(argv: list[str]) -> None:
    url, question = argv[1], argv[2]
    if "--stream" in argv:
        print_stream(url, question)
    else:
        print(ask(url, question)["choices"][0]["message"]["content"])


if __name__ == "__main__":
    main(sys.argv)
