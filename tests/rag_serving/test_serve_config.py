"""The pure parts of the RAG service: spec → Ray Serve application, and the request checks."""

from __future__ import annotations

import pytest

from mlplane.rag import api as dp
from mlplane.rag.openai_types import ChatCompletionRequest, EmbeddingRequest
from mlplane.rag.serve_config import LimitArgs, logical_cpus, serve_app_config
from mlplane.spec import ModelDeployment, Platform, SpecError, load_text


def deployment(**spec) -> ModelDeployment:
    return ModelDeployment.model_validate({"metadata": {"name": "docs"},
                                           "spec": {"model": "models:/gen@champion", "runtime": "ray", **spec}})


def test_spec_maps_to_serve_batching_autoscaling_and_args():
    dep = deployment(retrieval={"collection": "kb", "topK": 5}, batching={"maxBatchSize": 32, "maxLatencyMs": 20},
                     autoscaling={"minReplicas": 1, "maxReplicas": 3, "target": {"metric": "concurrency", "value": 4},
                                  "scaleUp": {"stabilizationWindowSeconds": 2},
                                  "scaleDown": {"stabilizationWindowSeconds": 30}},
                     rag={"generator": {"maxTokens": 99}})
    app = serve_app_config(dep, Platform.default(), tracking_uri="http://mlflow:5000",
                           generator_uri="models:/gen/7", generator_version="7")
    assert app["import_path"] == "mlplane.rag.serve_app:build_app" and app["name"] == "docs"
    by_name = {d["name"]: d for d in app["deployments"]}
    assert by_name["Embedder"]["autoscaling_config"] == {
        "min_replicas": 1, "max_replicas": 3, "target_ongoing_requests": 4.0,
        "upscale_delay_s": 2.0, "downscale_delay_s": 30.0}
    assert by_name["Embedder"]["max_ongoing_requests"] == 64  # room for two full batches
    assert by_name["Ingress"]["num_replicas"] == by_name["Retriever"]["num_replicas"] == 1
    args = app["args"]
    assert args["embedder"] == {"model_uri": "models:/mlplane-embedder@champion", "max_batch_size": 32,
                                "batch_wait_timeout_s": 0.02}
    assert args["generator"]["model_uri"] == "models:/gen@champion"  # the same whichever version it points at
    assert by_name["Generator"]["user_config"] == {"model_uri": "models:/gen/7", "model_version": "7"}
    assert args["generator"]["max_tokens"] == 99 and (args["collection"], args["top_k"]) == ("kb", 5)
    assert logical_cpus(app) == pytest.approx(3 + 3 + 0.2)


def test_without_batching_or_autoscaling_the_embedder_takes_one_text_per_batch():
    app = serve_app_config(deployment(replicas=2), Platform.default())
    by_name = {d["name"]: d for d in app["deployments"]}
    assert app["args"]["embedder"]["max_batch_size"] == 1 and by_name["Embedder"]["num_replicas"] == 2


@pytest.mark.parametrize("metric", ["rps", "gpu-utilization", "queue-depth"])
def test_metrics_ray_cannot_scale_on_are_refused_by_name(metric):
    with pytest.raises(SpecError, match=rf"spec: autoscaling.target.metric: '{metric}' .* use 'concurrency'"):
        load_text("kind: ModelDeployment\napiVersion: mlplane.io/v1alpha1\nmetadata: {name: r}\n"
                  "spec: {model: 'models:/g@c', runtime: ray, autoscaling: {maxReplicas: 2, "
                  f"target: {{metric: {metric}, value: 5}}}}}}")
    # A deployment naming no runtime passes the loader; the Serve config (runtime ray) refuses it the same way.
    dep = ModelDeployment.model_validate({"metadata": {"name": "docs"}, "spec": {
        "model": "models:/gen@champion", "autoscaling": {"maxReplicas": 2, "target": {"metric": metric, "value": 5}}}})
    with pytest.raises(ValueError, match=f"autoscaling.target.metric: '{metric}'"):
        serve_app_config(dep, Platform.default())


def test_actor_options_come_from_each_roles_resources():
    """The Generator gets spec.resources (GPUs included), the Embedder its own: no GPU it doesn't use."""
    dep = deployment(resources={"requests": {"cpu": "4"}, "gpus": 1},
                     rag={"embedder": {"resources": {"requests": {"cpu": "1500m"}}}},
                     autoscaling={"maxReplicas": 2}, coldStartSeconds=400)
    by_name = {d["name"]: d for d in serve_app_config(dep, Platform.default())["deployments"]}
    assert by_name["Generator"]["ray_actor_options"] == {"num_cpus": 4.0, "num_gpus": 1}
    assert by_name["Embedder"]["ray_actor_options"] == {"num_cpus": 1.5}
    assert by_name["Ingress"]["ray_actor_options"] == by_name["Retriever"]["ray_actor_options"] == {"num_cpus": 0.1}
    # Scale down waits at least a cold start, as KEDA does in the cluster.
    assert by_name["Generator"]["autoscaling_config"]["downscale_delay_s"] == 400.0


def test_a_remote_generator_holds_no_gpu():
    with pytest.raises(SpecError, match="resources.gpus"):
        load_text("kind: ModelDeployment\napiVersion: mlplane.io/v1alpha1\nmetadata: {name: r}\n"
                  "spec: {model: 'models:/g@c', runtime: ray, resources: {gpus: 1}, "
                  "rag: {generator: {type: openai, url: 'http://llm:8080'}}}")


def test_rag_spec_errors_name_the_field():
    with pytest.raises(SpecError, match="spec.rag.generator.*needs `url`"):
        load_text("kind: ModelDeployment\napiVersion: mlplane.io/v1alpha1\nmetadata: {name: r}\n"
                  "spec: {model: 'models:/g@c', runtime: ray, rag: {generator: {type: openai}}}")
    with pytest.raises(SpecError, match="runtime 'ray' only"):
        load_text("kind: ModelDeployment\napiVersion: mlplane.io/v1alpha1\nmetadata: {name: r}\n"
                  "spec: {model: 'models:/g@c', runtime: kserve, rag: {}}")


LIMITS = LimitArgs(max_question_chars=10, max_input_chars=30, max_embedding_inputs=2)


@pytest.mark.parametrize(("messages", "error", "text"), [
    ([{"role": "user", "content": " "}], dp.EmptyQuestion, "empty"),
    ([{"role": "assistant", "content": "hi"}], dp.EmptyQuestion, "no user message"),
    ([{"role": "user", "content": "x" * 11}], dp.TooLarge, "at most 10"),
    ([{"role": "system", "content": "y" * 25}, {"role": "user", "content": "why?" * 2}], dp.TooLarge, "at most 30"),
])
def test_chat_checks(messages, error, text):
    with pytest.raises(error, match=text):
        dp.chat_question(ChatCompletionRequest(messages=messages), LIMITS, "kb", 4)


def test_chat_question_is_the_last_user_message_and_the_collection_defaults():
    req = ChatCompletionRequest(messages=[{"role": "user", "content": "old"}, {"role": "assistant", "content": "a"},
                                          {"role": "user", "content": [{"type": "text", "text": " new? "}]}])
    assert dp.chat_question(req, LIMITS, "kb", 4) == dp.Question("new?", "kb", 4)
    with pytest.raises(dp.NoCollection, match="send `collection`"):
        dp.chat_question(req, LIMITS, None, 4)


def test_embedding_checks():
    assert dp.embedding_inputs(EmbeddingRequest(input="one"), LIMITS) == ["one"]
    with pytest.raises(dp.TooLarge, match="3 texts; at most 2"):
        dp.embedding_inputs(EmbeddingRequest(input=["a", "b", "c"]), LIMITS)
    with pytest.raises(dp.EmptyQuestion, match=r"positions \[1\]"):
        dp.embedding_inputs(EmbeddingRequest(input=["a", " "]), LIMITS)
    assert dp.TooLarge("x").status == 413 and dp.CollectionNotFound("x").status == 404


def test_the_example_specs_validate_and_build_an_application():
    from pathlib import Path

    from mlplane.spec import load_file

    examples = Path(__file__).resolve().parents[2] / "examples" / "rag"
    (platform,) = load_file(examples / "platform.yaml")
    (dep,) = load_file(examples / "deployment.yaml")
    app = serve_app_config(dep, platform)
    assert app["args"]["collection"] == platform.spec.vector_store.collections[0].name
    assert app["args"]["generator"]["type"] == "local" and app["args"]["embedder"]["max_batch_size"] == 16
