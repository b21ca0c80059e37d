"""mlplane model server: an MLflow pyfunc model on the KServe V2 protocol (HTTP + gRPC).

Run it with ``python -m mlplane.serving --name iris --model-uri models:/iris/1 --http-port 8080
--grpc-port 8081``. Importing this package has no side effects: kserve (which parses ``sys.argv``
when imported) is only imported by :mod:`mlplane.serving.server` and :mod:`mlplane.serving.model`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlplane.core.signature import RequestDecoder, ResponseEncoder, SignatureError, TensorMeta

from .settings import ServingSettings, parse_args

if TYPE_CHECKING:
    from .model import PyfuncModel
    from .server import PyfuncModelServer, serve

__all__ = [
    "PyfuncModel",
    "PyfuncModelServer",
    "RequestDecoder",
    "ResponseEncoder",
    "ServingSettings",
    "SignatureError",
    "TensorMeta",
    "parse_args",
    "serve",
]


def __getattr__(name: str) -> Any:  # lazy: keeps kserve's import-time argv parsing out of `import`
    if name == "PyfuncModel":
        from .model import PyfuncModel

        return PyfuncModel
    if name in ("PyfuncModelServer", "serve"):
        from . import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
