"""The spec models, the YAML loader and its error messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlplane.spec import (
    API_VERSION,
    AliasRef,
    ModelDeployment,
    ModelRef,
    ModelRefError,
    Platform,
    Problem,
    SpecError,
    UriRef,
    VersionRef,
    dump_yaml,
    load_dict,
    load_file,
    load_text,
    parse_model_ref,
)

SPECS = Path(__file__).parents[1] / "fixtures" / "specs"
EXAMPLES = Path(__file__).parents[2] / "examples"


def problems(name: str) -> list[Problem]:
    path = SPECS / "bad" / name
    with pytest.raises(SpecError) as info:
        load_file(path)
    for p in info.value.problems:
        assert p.source == str(path)
    return info.value.problems


def only_problem(name: str) -> Problem:
    found = problems(name)
    assert len(found) == 1, found
    return found[0]


# --- good files -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted((SPECS / "good").glob("*.yaml")), ids=lambda p: p.name)
def test_good_files_load_and_round_trip(path: Path) -> None:
    docs = load_file(path)
    assert docs
    again = load_text(dump_yaml(docs), source="<dump>")
    assert again == docs
    assert [d.to_dict() for d in again] == [d.to_dict() for d in docs]


def test_minimal_platform_gets_defaults() -> None:
    [platform] = load_file(SPECS / "good" / "minimal_platform.yaml")
    assert isinstance(platform, Platform)
    assert platform.api_version == API_VERSION == "mlplane.io/v1alpha1"
    spec = platform.spec
    assert spec.tracking.mode == "embedded" and spec.tracking.port is None
    assert spec.feature_store.enabled is False and spec.feature_store.project == "mlplane"
    assert spec.feature_store.online_store.type == "sqlite"
    assert spec.feature_store.offline_store.type == "file"
    assert spec.vector_store.backend == "milvus-lite"
    assert spec.serving.host == "127.0.0.1" and spec.serving.grpc is True
    assert spec.serving.max_request_bytes == 16 * 1024 * 1024
    assert spec.serving.grace_period_seconds == 30 and spec.serving.default_runtime == "kserve"
    assert spec.gpu_node_pool.node_selector == {"nvidia.com/gpu.present": "true"}
    [tol] = spec.gpu_node_pool.tolerations
    assert (tol.key, tol.operator, tol.effect) == ("nvidia.com/gpu", "Exists", "NoSchedule")
    assert spec.gpu_node_pool.gpu_resource_name == "nvidia.com/gpu"


def test_platform_spec_may_be_omitted_or_null() -> None:
    head = f"apiVersion: {API_VERSION}\nkind: Platform\nmetadata: {{name: p}}\n"
    assert load_text(head) == load_text(head + "spec:\n") == [Platform.default().model_copy(
        update={"metadata": Platform.default().metadata.model_copy(update={"name": "p"})})]


def test_platform_default() -> None:
    platform = Platform.default()
    assert platform.metadata.name == "local"
    assert load_text(dump_yaml([platform])) == [platform]


def test_minimal_deployment_gets_defaults() -> None:
    [dep] = load_file(SPECS / "good" / "minimal_deployment.yaml")
    assert isinstance(dep, ModelDeployment)
    assert dep.metadata.name == "iris"
    assert dep.spec.runtime == "kserve" and dep.spec.replicas == 1 and dep.spec.autoscaling is None
    assert dep.spec.resources.gpus == 0 and dep.status is None
    assert dep.model_ref == VersionRef("iris", "3")


def test_full_deployment_fields() -> None:
    [dep] = load_file(SPECS / "good" / "full_deployment.yaml")
    assert isinstance(dep, ModelDeployment)
    s = dep.spec
    assert s.runtime == "triton" and dep.model_ref.kind == "uri"
    assert s.autoscaling is not None and s.autoscaling.target is not None
    assert (s.autoscaling.min_replicas, s.autoscaling.max_replicas) == (0, 8)
    assert s.autoscaling.target.metric == "gpu-utilization" and s.autoscaling.target.value == 70
    assert s.autoscaling.scale_down.stabilization_window_seconds == 600
    assert s.resources.requests is not None and s.resources.requests.cpu == "2"
    assert s.resources.limits is not None and s.resources.limits.memory == "8Gi"
    assert s.resources.gpu_type == "NVIDIA-L4" and s.instances == 2
    assert s.rollout is not None and s.rollout.allow_outage is True
    assert s.cold_start_seconds == 45.5
    assert dep.status is not None and dep.status.grpc_url == "127.0.0.1:8081"


def test_autoscaling_defaults() -> None:
    [dep] = load_text(f"apiVersion: {API_VERSION}\nkind: ModelDeployment\nmetadata: {{name: a}}\n"
                      "spec: {model: 'models:/a@b', autoscaling: {}}\n")
    assert isinstance(dep, ModelDeployment) and dep.spec.autoscaling is not None
    a = dep.spec.autoscaling
    assert (a.min_replicas, a.max_replicas, a.target) == (1, 1, None)
    assert (a.scale_up.stabilization_window_seconds, a.scale_down.stabilization_window_seconds) == (0, 300)


def test_multi_document_file() -> None:
    docs = load_file(SPECS / "good" / "multi.yaml")
    assert [(d.kind, d.metadata.name) for d in docs] == [
        ("Platform", "local"), ("ModelDeployment", "iris"), ("ModelDeployment", "iris-canary")]


def test_to_dict_is_camel_case_without_nones() -> None:
    [dep] = load_file(EXAMPLES / "iris" / "deployment.yaml")
    data = dep.to_dict()
    assert data["apiVersion"] == API_VERSION and data["kind"] == "ModelDeployment"
    assert "status" not in data and "autoscaling" not in data["spec"]
    assert data["spec"]["resources"]["requests"] == {"cpu": "500m", "memory": "512Mi"}


def test_python_construction_by_field_name() -> None:
    dep = ModelDeployment.model_validate(
        {"metadata": {"name": "x"}, "spec": {"model": "gs://b/m", "cold_start_seconds": 3}})
    assert dep.spec.cold_start_seconds == 3 and dep.to_dict()["spec"]["coldStartSeconds"] == 3


def test_iris_examples() -> None:
    [platform] = load_file(EXAMPLES / "iris" / "platform.yaml")
    [dep] = load_file(EXAMPLES / "iris" / "deployment.yaml")
    assert isinstance(platform, Platform) and isinstance(dep, ModelDeployment)
    assert dep.metadata.name == "iris" and dep.spec.runtime == "kserve"
    assert dep.model_ref == AliasRef("iris", "champion")


# --- bad files --------------------------------------------------------------------------------


def test_bad_runtime() -> None:
    p = only_problem("bad_runtime.yaml")
    assert (p.document, p.kind, p.name, p.path, p.value) == (1, "ModelDeployment", "iris", "spec.runtime",
                                                              "'tensorflow'")
    assert p.message == "allowed: 'kserve', 'triton', 'ray'"
    assert str(p) == (f"{SPECS / 'bad' / 'bad_runtime.yaml'}: document 1 (ModelDeployment \"iris\"): "
                      "spec.runtime: got 'tensorflow'; allowed: 'kserve', 'triton', 'ray'")


def test_unknown_field_names_it_and_lists_allowed() -> None:
    p = only_problem("unknown_field.yaml")
    assert p.path == "spec.replica"
    assert "unknown field" in p.message and "did you mean 'replicas'?" in p.message
    assert "allowed fields here: 'model', 'runtime'," in p.message and "'replicas', 'autoscaling'" in p.message
    assert "'coldStartSeconds'" in p.message


def test_unknown_nested_and_top_level_fields() -> None:
    text = (f"apiVersion: {API_VERSION}\nkind: Platform\nmetadata: {{name: p}}\nspce: {{}}\n"
            "---\n"
            f"apiVersion: {API_VERSION}\nkind: Platform\nmetadata: {{name: q}}\n"
            "spec: {serving: {grpcc: false}}\n")
    with pytest.raises(SpecError) as info:
        load_text(text, source="p.yaml")
    first, second = info.value.problems
    assert (first.document, first.path) == (1, "spce")
    assert "did you mean 'spec'?" in first.message and "'apiVersion', 'kind', 'metadata'" in first.message
    assert (second.document, second.name, second.path) == (2, "q", "spec.serving.grpcc")
    assert "'maxRequestBytes'" in second.message


def test_max_replicas_below_min() -> None:
    p = only_problem("max_lt_min.yaml")
    assert p.path == "spec.autoscaling" and p.value is None
    assert p.message == "maxReplicas (2) must be greater than or equal to minReplicas (3)"


def test_bad_model_uri() -> None:
    p = only_problem("bad_model.yaml")
    assert (p.path, p.value) == ("spec.model", "'models:/iris'")
    assert p.message.startswith("add '@<alias>' or '/<version>' after the registered model name")
    for form in ("'models:/<name>@<alias>'", "'models:/<name>/<version>'", "storage URI"):
        assert form in p.message


def test_bad_name() -> None:
    p = only_problem("bad_name.yaml")
    assert (p.name, p.path, p.value) == ("Iris_Model", "metadata.name", "'Iris_Model'")
    assert "DNS-1123" in p.message and "lowercase" in p.message and "63" in p.message


@pytest.mark.parametrize("name", ["a" * 64, "-a", "a-", "", "a.b"])
def test_names_rejected(name: str) -> None:
    with pytest.raises(SpecError, match=r"metadata\.name: got .*DNS-1123"):
        load_dict({"apiVersion": API_VERSION, "kind": "Platform", "metadata": {"name": name}})


def test_negative_gpus() -> None:
    p = only_problem("negative_gpus.yaml")
    assert (p.path, p.value, p.message) == ("spec.resources.gpus", "-1", "must be a whole number >= 0")


def test_bad_quantity() -> None:
    p = only_problem("bad_quantity.yaml")
    assert (p.path, p.value) == ("spec.resources.requests.memory", "'2GB'")
    assert "Kubernetes quantity" in p.message and "'512Mi'" in p.message and "'500m'" in p.message


def test_bad_toleration_effect_in_list() -> None:
    p = only_problem("bad_toleration.yaml")
    assert p.path == "spec.gpuNodePool.tolerations[0].effect" and p.value == "'NoScheduel'"
    assert p.message == "allowed: 'NoSchedule', 'PreferNoSchedule', 'NoExecute'"


def test_every_problem_reported() -> None:
    found = problems("many_problems.yaml")
    assert [(p.path, p.value, p.message) for p in found] == [
        ("spec.replicas", "'lots'", "must be a whole number"),
        ("spec.autoscaling.maxReplicas", "0", "must be a whole number >= 1"),
        ("spec.retrieval.topK", "500", "must be a whole number >= 1 and <= 100"),
    ]


def test_yaml_syntax_error_has_line_and_column() -> None:
    p = only_problem("yaml_syntax.yaml")
    assert p.document == 1 and p.path == ""
    assert p.message.startswith("YAML syntax error at line 7, column 10: expected ',' or ']'")
    assert "started at line 6" in p.message


def test_duplicate_yaml_key() -> None:
    expected = r"x.yaml: document 1: YAML syntax error at line 3.*duplicate key 'kind'"
    with pytest.raises(SpecError, match=expected):
        load_text(f"apiVersion: {API_VERSION}\nkind: Platform\nkind: Platform\n", source="x.yaml")


def test_missing_kind() -> None:
    p = only_problem("missing_kind.yaml")
    assert (p.document, p.kind, p.path) == (1, None, "kind")
    assert p.message == "required field is missing; supported kinds: 'Platform', 'ModelDeployment'"


def test_unknown_kind() -> None:
    with pytest.raises(SpecError) as info:
        load_text(f"apiVersion: {API_VERSION}\nkind: InferenceService\nmetadata: {{name: a}}\n")
    [p] = info.value.problems
    assert (p.path, p.value) == ("kind", "'InferenceService'")
    assert "supported kinds: 'Platform', 'ModelDeployment'" in p.message


def test_unknown_api_version() -> None:
    p = only_problem("unknown_api_version.yaml")
    assert (p.path, p.value) == ("apiVersion", "'mlplane.io/v1'")
    assert p.message == "unknown apiVersion; supported: 'mlplane.io/v1alpha1'"


def test_missing_api_version() -> None:
    expected = r"apiVersion: required field is missing; supported: 'mlplane.io/v1alpha1'"
    with pytest.raises(SpecError, match=expected):
        load_text("kind: Platform\nmetadata: {name: a}\n")


def test_non_mapping_document() -> None:
    p = only_problem("not_mapping.yaml")
    assert p.document == 2 and p.value == "['just', 'a list']"
    assert "must be a mapping with apiVersion, kind, metadata and spec" in p.message


def test_empty_file() -> None:
    p = only_problem("empty.yaml")
    assert p.document is None and "empty" in p.message


def test_file_not_found(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(SpecError) as info:
        load_file(missing)
    assert str(info.value) == f"{missing}: file not found"


def test_duplicate_names_in_one_file() -> None:
    doc = f"apiVersion: {API_VERSION}\nkind: ModelDeployment\nmetadata: {{name: a}}\nspec: {{model: /m}}\n"
    with pytest.raises(SpecError, match="document 2 .*duplicate ModelDeployment name; document 1"):
        load_text(doc + "---\n" + doc)


def test_cross_field_and_misc_rules() -> None:
    cases = {
        "spec: {model: /m, retrieval: {collection: c, chunkSize: 10}}":
            "spec.retrieval.chunkSize: unknown field",
        "spec: {model: /m, features: {entityKey: id, features: [nocolon]}}":
            "spec.features.features[0]: got 'nocolon'; must be '<feature_view>:<feature>'",
        "spec: {model: /m, autoscaling: {target: {value: 0}}}":
            "spec.autoscaling.target.value: got 0; must be a number > 0",
        "spec: {model: /m, resources: [1]}":
            "spec.resources: got [1]; must be a mapping with fields 'requests'",
        "spec: {runtime: ray}": "spec.model: required field is missing",
        "spec: {model: /m, autoscaling: {target: {value: 1, metric: cpu}}}":
            "spec.autoscaling.target.metric: got 'cpu'; allowed: 'concurrency', 'rps', 'gpu-utilization', "
            "'queue-depth'",
    }
    for body, expected in cases.items():
        text = f"apiVersion: {API_VERSION}\nkind: ModelDeployment\nmetadata: {{name: a}}\n{body}\n"
        with pytest.raises(SpecError) as info:
            load_text(text)
        assert expected in str(info.value), (body, str(info.value))


def test_missing_enum_field_lists_allowed_values() -> None:
    with pytest.raises(SpecError) as info:
        load_dict({"apiVersion": API_VERSION, "kind": "Platform", "metadata": {"name": "p"},
                   "spec": {"gpuNodePool": {"tolerations": [{"key": "k"}]}}})
    [p] = info.value.problems
    assert p.path == "spec.gpuNodePool.tolerations[0].effect"
    assert p.message == "required field is missing; allowed: 'NoSchedule', 'PreferNoSchedule', 'NoExecute'"


def test_external_tracking_needs_uri() -> None:
    with pytest.raises(SpecError, match=r"spec.tracking: mode 'external' needs `uri`"):
        load_dict({"apiVersion": API_VERSION, "kind": "Platform", "metadata": {"name": "p"},
                   "spec": {"tracking": {"mode": "external"}}}, source="p.yaml")


def test_error_is_never_a_pydantic_dump() -> None:
    text = f"apiVersion: {API_VERSION}\nkind: ModelDeployment\nmetadata: {{name: a}}\nspec: {{model: 3}}\n"
    with pytest.raises(SpecError) as info:
        load_text(text, source="d.yaml")
    message = str(info.value)
    assert "pydantic" not in message and "errors.pydantic.dev" not in message and "Traceback" not in message
    assert message == (
        'd.yaml: document 1 (ModelDeployment "a"): spec.model: got 3; must be a string (quote it in YAML)'
    )


# --- model references -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("models:/iris@champion", AliasRef("iris", "champion")),
        ("models:/my.model-v2_x@prod-1", AliasRef("my.model-v2_x", "prod-1")),
        ("models:/iris/3", VersionRef("iris", "3")),
        ("s3://bucket/path", UriRef("s3://bucket/path")),
        ("gs://bucket/m", UriRef("gs://bucket/m")),
        ("file:///tmp/model", UriRef("file:///tmp/model")),
        ("runs:/0a1b2c/model", UriRef("runs:/0a1b2c/model")),
        ("mlflow-artifacts:/1/abc/artifacts/model", UriRef("mlflow-artifacts:/1/abc/artifacts/model")),
        ("/var/models/iris", UriRef("/var/models/iris")),
    ],
)
def test_parse_model_ref(text: str, expected: ModelRef) -> None:
    ref = parse_model_ref(text)
    assert ref == expected and str(ref) == text
    assert ref.is_registry == (ref.kind != "uri")


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("models:/iris", "add '@<alias>' or '/<version>'"),
        ("models:/iris/0", "positive integers"),
        ("models:/iris/latest", "positive integers"),
        ("models:/ir is@x", "registry names"),
        ("models:/iris@champ:ion", "aliases"),
        ("ftp://host/model", "unknown scheme 'ftp'"),
        ("relative/path", "not a URI or absolute path"),
        ("runs:/only-run", "runs:/<run_id>/<artifact_path>"),
        ("s3://", "no path"),
        ("", "empty"),
    ],
)
def test_parse_model_ref_rejects(text: str, why: str) -> None:
    with pytest.raises(ModelRefError) as info:
        parse_model_ref(text)
    assert why in str(info.value) and "accepted forms" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_model_ref_variants_carry_their_own_fields() -> None:
    version = parse_model_ref("models:/iris/007")
    assert version == VersionRef("iris", "7") and version.kind == "version" and str(version) == "models:/iris/7"
    alias = parse_model_ref("models:/iris@champion")
    assert (alias.kind, alias.name, alias.alias, alias.is_registry) == ("alias", "iris", "champion", True)
    plain = parse_model_ref("s3://bucket/m")
    assert (plain.kind, plain.uri, plain.is_registry) == ("uri", "s3://bucket/m", False)
    assert not hasattr(plain, "name") and not hasattr(alias, "version") and not hasattr(version, "alias")
