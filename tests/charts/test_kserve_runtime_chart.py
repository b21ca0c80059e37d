"""The chart's ClusterServingRuntime `mlplane-mlflow` with the InferenceService mlplane renders, merged as
KServe merges them: the model server's own argument parser reads the Platform's request size limit and
drain time from that command line, as the local runtime passes them (`kserve_process`)."""

from __future__ import annotations

from triton_cluster import predictor_container, rendered_isvc, serving_runtime

from mlplane.serving.settings import DEFAULT_MAX_REQUEST_BYTES, parse_args


def test_the_cluster_model_server_takes_the_platforms_request_limit_and_grace_period() -> None:
    container = predictor_container(serving_runtime("mlplane-mlflow"),
                                    rendered_isvc("kserve", max_request_bytes=3 << 20, grace_period_s=11))
    assert container["command"] == ["python", "-m", "mlplane.serving"]
    # KServe fills the {{.Name}} placeholder with the InferenceService's name.
    args = [a.replace("{{.Name}}", "iris") for a in container["args"]]
    settings = parse_args(args)
    assert settings.max_request_bytes == 3 << 20 != DEFAULT_MAX_REQUEST_BYTES
    assert settings.grace_period == 11
    assert (settings.name, settings.host, settings.http_port) == ("iris", "0.0.0.0", 8080)
