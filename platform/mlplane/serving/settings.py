"""Command line of ``python -m mlplane.serving`` (pure: parsing only, no kserve import)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["DEFAULT_MAX_REQUEST_BYTES", "ServingSettings", "parse_args"]

DEFAULT_MAX_REQUEST_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class ServingSettings:
    name: str
    model_uri: str
    model_version: str | None
    http_port: int
    grpc_port: int
    host: str = "127.0.0.1"
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    grace_period: int = 30
    log_requests: bool = False
    grpc_threads: int = 4
    grpc: bool = True
    features: str | None = None  # spec.features as JSON: join online features to every request
    feature_store_yaml: str | None = None  # the Feast repo config the features are read with
    auth_keys_file: str | None = None  # set: every request needs an API key from this file (mlplane.auth)
    auth_rps: float = 10.0
    auth_burst: int = 20
    control_socket: str | None = None  # set: model control (load/switch) on this Unix socket only; unset: none


def _positive(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return number


def _positive_float(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {value}")
    return number


def _port(value: str) -> int:
    number = int(value)
    if not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"not a TCP port: {value}")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mlplane.serving",
        description="Serve one MLflow pyfunc model over the KServe V2 / Open Inference Protocol "
        "(HTTP and gRPC). Model control (version swaps) is never served on the public ports: only on the "
        "--control-socket, when one is given.",
        allow_abbrev=False,
    )
    parser.add_argument("--name", required=True, help="model name on the V2 endpoints")
    parser.add_argument(
        "--model-uri",
        required=True,
        help="MLflow model URI: models:/name/version (needs MLFLOW_TRACKING_URI), runs:/..., a path or file://",
    )
    parser.add_argument(
        "--model-version",
        default=None,
        help="version reported in metadata and responses (default: taken from a models:/ URI)",
    )
    parser.add_argument("--http-port", type=_port, required=True)
    parser.add_argument("--grpc-port", type=_port, required=True)
    parser.add_argument("--host", default="127.0.0.1", help="address both servers bind (default 127.0.0.1)")
    parser.add_argument(
        "--max-request-bytes",
        type=_positive,
        default=DEFAULT_MAX_REQUEST_BYTES,
        help="larger HTTP bodies get 413, larger gRPC messages RESOURCE_EXHAUSTED",
    )
    parser.add_argument(
        "--grace-period", type=int, default=30, help="seconds in-flight requests get on SIGTERM"
    )
    parser.add_argument(
        "--log-requests",
        action="store_true",
        help="log every request and its latency (off by default: it costs time on the hot path)",
    )
    parser.add_argument("--no-grpc", dest="grpc", action="store_false", help="serve V2 over HTTP only")
    parser.add_argument("--grpc-threads", type=_positive, default=4, help=argparse.SUPPRESS)
    parser.add_argument(
        "--features",
        default=os.environ.get("MLPLANE_FEATURES") or None,
        help="the deployment's spec.features as JSON: fetch these online features for the entity ids in "
        "each request and join them (default: $MLPLANE_FEATURES)",
    )
    parser.add_argument(
        "--feature-store-yaml",
        default=os.environ.get("MLPLANE_FEATURE_STORE_YAML") or None,
        help="Feast feature_store.yaml to read online features with (default: $MLPLANE_FEATURE_STORE_YAML)",
    )
    parser.add_argument(
        "--auth-keys-file",
        default=None,
        help="require an API key (Authorization: Bearer or x-api-key) from this key file on HTTP and gRPC",
    )
    parser.add_argument("--auth-rps", type=_positive_float, default=10.0,
                        help="default requests per second per key (keys may have their own)")
    parser.add_argument("--auth-burst", type=_positive, default=20, help="default burst per key")
    parser.add_argument(
        "--control-socket",
        default=None,
        help="serve POST /v2/repository/models/{name}/load (version swaps) on this Unix socket, created 0600 in "
        "a 0700 directory (mlplane's supervisor uses it); without it nothing can load or switch models",
    )
    return parser


def parse_args(argv: Sequence[str] | None = None) -> ServingSettings:
    parser = build_parser()
    ns = parser.parse_args(argv)
    if bool(ns.features) != bool(ns.feature_store_yaml):
        parser.error("--features and --feature-store-yaml go together")
    return ServingSettings(**vars(ns))
