"""The ``tritonserver`` flags that protect every mlplane Triton, local or in the cluster. Pure: no I/O.

Both the local runtime (:func:`mlplane.runtime.local.plan.triton_process`) and the cluster entrypoint
(:mod:`mlplane.triton.server`) build Triton's restricted-API flags here, so the two servers
refuse the same requests (docs/triton-limits.md):

* model control (the model-repository API) and the server's log and trace settings answer only a
  request carrying :data:`TRITON_CONTROL_HEADER` with the control key, over HTTP and gRPC;
* the HTTP inference API is closed: its key (:data:`TRITON_HTTP_INFERENCE_CLOSED`) has a value no client
  holds, because tritonserver 2.51's HTTP/JSON front end can be crashed by one request. Clients infer
  over gRPC, where Triton checks shape x datatype against the data before it allocates.

Health, metadata, statistics and metrics are not restricted: the kubelet's probes and Prometheus reach them.
"""

from __future__ import annotations

import hashlib

__all__ = ["OWNED_FLAGS", "TRITON_CONTROL_HEADER", "TRITON_HTTP_INFERENCE_CLOSED", "TRITON_RESTRICTED",
           "restricted_api_args", "triton_http_inference_header"]

#: The header Triton's restricted model-repository API requires (``--http-restricted-api``).
TRITON_CONTROL_HEADER = "mlplane-control-key"
#: Triton APIs only mlplane may call: loading/unloading models, and the server's log and trace settings.
TRITON_RESTRICTED = "model-repository,logging,trace"
#: Triton's HTTP inference API is closed to clients whenever gRPC serves (docs/triton-limits.md): the
#: tritonserver 2.51 of the nvidia-pytriton wheel allocates a JSON tensor from its client-given shape
#: before any check and walks nested ``data`` recursively, so one request aborts it (a shape of 2**63-1),
#: grows it by shape x 8 bytes (2**31: 16 GiB) or overflows its stack (``data`` nested 100k deep), and it
#: has no option (2.51 has no --http-max-input-size) that prevents any of it. Its 403 names this header,
#: which tells the client what to do; its value is held by nobody.
TRITON_HTTP_INFERENCE_CLOSED = "mlplane-triton-inference-is-served-over-grpc-only"
#: The flags :func:`restricted_api_args` sets; a command line that already sets one is refused.
OWNED_FLAGS = ("--http-restricted-api", "--grpc-restricted-protocol")


def triton_http_inference_header(control_key: str) -> dict[str, str]:
    """The header that opens a local Triton's closed HTTP inference API (:data:`TRITON_HTTP_INFERENCE_CLOSED`).

    Derived from the platform's control key, not random: the same spec gives the same command line, so a
    new supervisor recognizes (and adopts) the server an earlier one started. Only what can read the
    control key (the platform's owner: ``bench/triton.py`` measures Triton's HTTP path with it) holds it;
    clients never do.
    """
    value = hashlib.sha256(b"mlplane-http-inference-closed:" + control_key.encode()).hexdigest()
    return {TRITON_HTTP_INFERENCE_CLOSED: value}


def restricted_api_args(control_key: str, inference_closed_value: str, *, grpc: bool = True) -> list[str]:
    """Triton's restricted-API flags: model control behind ``control_key`` (HTTP and, with ``grpc``, gRPC),
    HTTP inference behind ``inference_closed_value`` (a value no client holds)."""
    if not control_key or not inference_closed_value:
        raise ValueError("restricted_api_args needs a control key and a closed-inference value (an empty one "
                         "would let a request with an empty header through)")
    restricted = f"{TRITON_RESTRICTED}:{TRITON_CONTROL_HEADER}={control_key}"
    args = [f"--http-restricted-api={restricted}",
            f"--http-restricted-api=inference:{TRITON_HTTP_INFERENCE_CLOSED}={inference_closed_value}"]
    if grpc:
        args.append(f"--grpc-restricted-protocol={restricted}")
    return args
