"""Request bodies of the RAG service's OpenAI-compatible API (pydantic; unknown fields are ignored,
as OpenAI servers do). mlplane's own extensions: ``collection`` and ``top_k``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ContentPart(_Body):
    type: str
    text: str | None = None


class Message(_Body):
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text or "" for p in self.content if p.type == "text")
        return self.content or ""


class ChatCompletionRequest(_Body):
    model: str | None = None
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    collection: str | None = Field(default=None, min_length=1, description="mlplane: collection to search.")
    top_k: int | None = Field(default=None, ge=1, le=100, description="mlplane: chunks to retrieve.")


class EmbeddingRequest(_Body):
    model: str | None = None
    input: str | list[str]
    encoding_format: Literal["float", "base64"] = "float"


class RetrieveRequest(_Body):
    query: str
    collection: str | None = Field(default=None, min_length=1)
    top_k: int | None = Field(default=None, ge=1, le=100)


def error_body(message: str, type_: str, code: str, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error shape."""
    return {"error": {"message": message, "type": type_, "code": code, "param": param}}
