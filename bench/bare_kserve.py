"""Baseline for bench/serving.py: a stock kserve ``ModelServer`` (default settings, bound to loopback) with the
minimal ``kserve.Model`` that serves an MLflow pyfunc over V2: V2 -> DataFrame -> predict -> V2.

    python bench/bare_kserve.py --name iris --model-uri PATH --http-port P --grpc-port Q
"""

from __future__ import annotations

import argparse
import sys
import uuid

ours = argparse.ArgumentParser()
ours.add_argument("--name", required=True)
ours.add_argument("--model-uri", required=True)
ours.add_argument("--http-port", type=int, required=True)
ours.add_argument("--grpc-port", type=int, required=True)
ARGS = ours.parse_args()
sys.argv = sys.argv[:1]  # kserve parses sys.argv at import time

import mlflow.pyfunc  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer  # noqa: E402
from kserve.utils.numpy_codec import from_np_dtype  # noqa: E402


def _bind_loopback() -> None:
    """Stock kserve listens on 0.0.0.0 and [::]; servers here stay on loopback.

    Only the listen address changes: the request path being measured is kserve's own.
    """
    import grpc.aio._server as grpc_server
    import uvicorn

    class LoopbackConfig(uvicorn.Config):
        def __init__(self, *args, **kwargs):
            kwargs["host"] = "127.0.0.1"
            super().__init__(*args, **kwargs)

    add_port = grpc_server.Server.add_insecure_port

    def loopback_port(self, address: str) -> int:
        return add_port(self, address.replace("[::]", "127.0.0.1"))

    uvicorn.Config = LoopbackConfig
    grpc_server.Server.add_insecure_port = loopback_port


class BarePyfuncModel(Model):
    def __init__(self, name: str, model_uri: str) -> None:
        super().__init__(name)
        self.model_uri = model_uri
        self.model = None

    def load(self) -> bool:
        self.model = mlflow.pyfunc.load_model(self.model_uri)
        self.ready = True
        return True

    def predict(self, payload: InferRequest, headers: dict | None = None) -> InferResponse:
        frame = pd.DataFrame({inp.name: inp.as_numpy() for inp in payload.inputs})
        prediction = np.asarray(self.model.predict(frame))
        out = InferOutput("output-0", list(prediction.shape), from_np_dtype(prediction.dtype))
        out.set_data_from_numpy(prediction)
        return InferResponse(payload.id or str(uuid.uuid4()), self.name, [out])


if __name__ == "__main__":
    _bind_loopback()
    model = BarePyfuncModel(ARGS.name, ARGS.model_uri)
    model.load()
    ModelServer(http_port=ARGS.http_port, grpc_port=ARGS.grpc_port).start([model])
