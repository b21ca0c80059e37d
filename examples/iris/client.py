"""Call an mlplane model endpoint with NVIDIA's tritonclient over the KServe V2 protocol.

    python examples/iris/client.py --http 127.0.0.1:PORT --grpc 127.0.0.1:PORT

Any Open Inference Protocol (KServe V2) client works: the endpoint is a KServe ModelServer.
"""

from __future__ import annotations

import argparse

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
SPECIES = ["setosa", "versicolor", "virginica"]
# One flower of each species, in FEATURES order.
SAMPLES = np.array([[5.1, 3.5, 1.4, 0.2], [6.4, 3.2, 4.5, 1.5], [7.7, 3.0, 6.1, 2.3]], dtype=np.float64)


def _inputs(client_module, rows: np.ndarray) -> list:
    """One FP64 V2 input per feature column (the model's MLflow signature says so)."""
    inputs = []
    for i, name in enumerate(FEATURES):
        inp = client_module.InferInput(name, [len(rows)], "FP64")
        inp.set_data_from_numpy(np.ascontiguousarray(rows[:, i]))
        inputs.append(inp)
    return inputs


def infer_http(url: str, model: str, rows: np.ndarray) -> tuple[np.ndarray, str]:
    """One V2 request over HTTP. Returns (predicted classes, served version)."""
    result = httpclient.InferenceServerClient(url=url).infer(model, _inputs(httpclient, rows))
    response = result.get_response()
    return result.as_numpy(response["outputs"][0]["name"]), response["model_version"]


def infer_grpc(url: str, model: str, rows: np.ndarray) -> tuple[np.ndarray, str]:
    """The same request over gRPC."""
    result = grpcclient.InferenceServerClient(url=url).infer(model, _inputs(grpcclient, rows))
    response = result.get_response()
    return result.as_numpy(response.outputs[0].name), response.model_version


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--http", required=True, help="host:port of the V2 HTTP endpoint")
    p.add_argument("--grpc", required=True, help="host:port of the V2 gRPC endpoint")
    p.add_argument("--model", default="iris")
    a = p.parse_args()
    for proto, fn, url in (("HTTP", infer_http, a.http), ("gRPC", infer_grpc, a.grpc)):
        classes, version = fn(url, a.model, SAMPLES)
        print(f"{proto}: version {version} predicts {[SPECIES[int(c)] for c in classes]}")


if __name__ == "__main__":
    main()
