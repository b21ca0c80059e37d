"""charts/mlplane rendered by the real Helm engine (helm-python-sdk) under every ci/*-values.yaml.

No cluster: built-in objects are validated against the Kubernetes 1.32 schema, KServe's
ClusterServingRuntimes against the upstream CRD in ../shared/crds.
"""

from __future__ import annotations

import json
import re
from functools import cache
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml
from chart_helpers import (
    CHART,
    CUSTOM_GROUPS,
    K8S_VERSION,
    NAMESPACE,
    RELEASE,
    SCENARIOS,
    TFTPL,
    Obj,
    find,
    objects,
    pod_specs,
    render,
    rendered_scenario,
    scenario_objects,
    scenario_values,
)
from k8s_schema_helpers import REPO_ROOT, UPSTREAM_CRDS, errors, validator_for

from mlplane import images
from mlplane.k8s.chart_values import defaults
from mlplane.k8s.helm_plan import coalesce
from mlplane.spec import Platform
from mlplane_operator import platform_plan
from mlplane_operator.config import OperatorConfig
from mlplane_operator.kube import PERMISSIONS


# --------------------------------------------------------------------------- render, lint, schemas
def test_chart_metadata_and_scenarios() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))
    assert (chart["apiVersion"], chart["name"], chart["version"], chart["appVersion"]) == (
        "v2", "mlplane", "0.1.0", "0.1.0")
    assert {"default", "production", "auth"} <= set(SCENARIOS)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_strict_lint_passes(scenario: str) -> None:
    report = helm_python.lint(str(CHART), scenario_values(scenario), strict=True, namespace=NAMESPACE,
                              kube_version=f"v{K8S_VERSION}.0")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_builtin_objects_validate_against_kubernetes(scenario: str) -> None:
    builtin = [o for o in scenario_objects(scenario) if not o["apiVersion"].startswith((*CUSTOM_GROUPS, "mlplane.io/"))]
    assert len(builtin) >= 9
    for obj in builtin:
        assert kubernetes_validate.validate(obj, K8S_VERSION, strict=True) == K8S_VERSION, obj["metadata"]["name"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_the_platform_object_is_valid_for_the_platform_crd(scenario: str) -> None:
    crd = yaml.safe_load((REPO_ROOT / "charts" / "mlplane-crds" / "templates" / "platforms.mlplane.io.yaml").read_text(
        encoding="utf-8"))
    schema = next(v["schema"]["openAPIV3Schema"] for v in crd["spec"]["versions"] if v["name"] == "v1alpha1")
    platforms = [o for o in scenario_objects(scenario) if o["kind"] == "Platform"]
    assert [p["metadata"]["name"] for p in platforms] == ["default"]
    assert errors(validator_for(schema, check=False), platforms[0]) == []


@cache
def _crd_validator(filename: str, version: str) -> Any:
    path = UPSTREAM_CRDS / filename
    if not path.is_file():
        pytest.fail(f"upstream CRD not found: looked for {path} (`../shared/crds/` from the repository root "
                    f"{REPO_ROOT}); restore the shared CRD copies (see their README.md)")
    crd = yaml.load(path.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    schema = next(v["schema"]["openAPIV3Schema"] for v in crd["spec"]["versions"] if v["name"] == version)
    return validator_for(schema, check=False)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_serving_runtimes_validate_against_the_kserve_crd(scenario: str) -> None:
    runtimes = [o for o in scenario_objects(scenario) if o["kind"] == "ClusterServingRuntime"]
    assert sorted(o["metadata"]["name"] for o in runtimes) == ["mlplane-mlflow", "mlplane-triton"]
    validator = _crd_validator("serving.kserve.io_clusterservingruntimes.yaml", "v1alpha1")
    for runtime in runtimes:
        assert runtime["apiVersion"] == "serving.kserve.io/v1alpha1"
        assert errors(validator, runtime) == [], runtime["metadata"]["name"]


def test_serving_runtimes_match_what_render_references() -> None:
    objs = scenario_objects("default")
    mlflow = find(objs, "ClusterServingRuntime", "mlplane-mlflow")["spec"]
    assert [f["name"] for f in mlflow["supportedModelFormats"]] == ["mlflow"]
    assert mlflow["protocolVersions"] == ["v2"]
    assert [p["containerPort"] for p in mlflow["containers"][0]["ports"]] == [8080]
    assert mlflow["annotations"]["prometheus.kserve.io/port"] == "8080"
    assert "{{.Name}}" in " ".join(mlflow["containers"][0]["args"])  # KServe's placeholder, not Helm's
    triton = find(objs, "ClusterServingRuntime", "mlplane-triton")["spec"]
    assert [f["name"] for f in triton["supportedModelFormats"]] == ["triton"]
    assert triton["containers"][0]["image"] == images.TRITON  # images/mlplane-triton.Containerfile
    ports = {p["name"]: p["containerPort"] for p in triton["containers"][0]["ports"]}
    assert ports == {"http1": 8000, "grpc": 8001, "metrics": 8002}
    assert triton["annotations"]["prometheus.kserve.io/port"] == "8002"


def test_runtimes_can_be_left_to_another_release() -> None:
    kinds = {o["kind"] for o in objects(render({"serving": {"runtimes": {"enabled": False}}}))}
    assert "ClusterServingRuntime" not in kinds


# --------------------------------------------------------------------------- what users care about
WILDCARD = "*"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_rbac_is_least_privilege(scenario: str) -> None:
    objs = scenario_objects(scenario)
    roles = [o for o in objs if o["kind"] in ("ClusterRole", "Role")]
    assert [r["metadata"]["name"] for r in roles] == ["mlplane-operator"]
    rules = roles[0]["rules"]
    for rule in rules:
        for field in ("apiGroups", "resources", "verbs"):
            assert WILDCARD not in rule[field], f"wildcard in {field}: {rule}"
        assert "escalate" not in rule["verbs"] and "bind" not in rule["verbs"] and "impersonate" not in rule["verbs"]
    granted = {(g, r): set(rule["verbs"]) for rule in rules for g in rule["apiGroups"] for r in rule["resources"]}
    assert ("", "pods") not in granted
    assert granted[("", "secrets")] == {"patch", "delete"}, "the operator writes Secrets, never reads them"
    # ConfigMaps: only its own children (the feature store config), applied and pruned by label.
    assert granted[("", "configmaps")] == {"list", "patch", "delete"}
    # Exactly what the operator declares it calls (tests/operator checks the declaration against the calls).
    assert granted == {key: set(verbs) for key, verbs in PERMISSIONS.items()}
    binding = find(objs, "ClusterRoleBinding", "mlplane-operator")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "mlplane-operator", "namespace": NAMESPACE}]


SECRETISH = re.compile(r"pass(word)?|secret|token|credential|private|api[_-]?key", re.IGNORECASE)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_no_secret_material_in_configmaps(scenario: str) -> None:
    objs = scenario_objects(scenario)
    # No scenario sets mlflow.backendStore.password (tests/charts/test_mlflow_server.py covers that Secret).
    assert not [o for o in objs if o["kind"] == "Secret"], "the chart must not create Secrets (existingSecret only)"
    for cm in (o for o in objs if o["kind"] == "ConfigMap"):
        for key, value in cm.get("data", {}).items():
            assert not SECRETISH.search(key), f"{cm['metadata']['name']}: key {key}"
            assert not SECRETISH.search(value), f"{cm['metadata']['name']}: {key}={value}"
            assert "arn:aws:secretsmanager" not in value


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_pods_are_locked_down(scenario: str) -> None:
    specs = pod_specs(scenario_objects(scenario))
    assert {name for name, _ in specs} == {"Deployment/mlplane-operator", "Deployment/mlplane-mlflow",
                                          "Pod/mlplane-test-mlflow"}
    for name, spec in specs:
        pod_sc = spec["securityContext"]
        assert pod_sc["runAsNonRoot"] is True and pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}, name
        # Only the operator talks to the API server.
        assert spec["automountServiceAccountToken"] is (name == "Deployment/mlplane-operator"), name
        mounts_tmp_volume = {v["name"] for v in spec.get("volumes", []) if "emptyDir" in v}
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"] == {"drop": ["ALL"]} and sc["seccompProfile"]["type"] == "RuntimeDefault", name
            assert c["resources"]["requests"] and c["resources"]["limits"]["memory"], name
            if name.startswith("Deployment/"):
                tmp = [m for m in c["volumeMounts"] if m["mountPath"] == "/tmp"]
                assert tmp and tmp[0]["name"] in mounts_tmp_volume, f"{name}: no writable /tmp"
    for sa in (o for o in scenario_objects(scenario) if o["kind"] == "ServiceAccount"):
        assert sa["automountServiceAccountToken"] is (sa["metadata"]["name"] == "mlplane-operator")


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_labels_and_selectors(scenario: str) -> None:
    for o in scenario_objects(scenario):
        labels = o["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "mlplane" and labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/component"] and labels["app.kubernetes.io/managed-by"] == "Helm"
        if o["kind"] == "Deployment":
            selector = o["spec"]["selector"]["matchLabels"]
            assert set(selector) == {"app.kubernetes.io/name", "app.kubernetes.io/instance",
                                     "app.kubernetes.io/component"}
            assert selector.items() <= o["spec"]["template"]["metadata"]["labels"].items()


def _mlflow(objs: list[Obj]) -> Obj:
    return find(objs, "Deployment", "mlplane-mlflow")["spec"]["template"]["spec"]["containers"][0]


def test_production_uses_postgres_from_env_s3_and_irsa() -> None:
    objs = scenario_objects("production")
    container = _mlflow(objs)
    args, env = container["args"], {e["name"]: e for e in container["env"]}
    host = "mlplane-mlflow.abcdefghijkl.us-east-1.rds.amazonaws.com"
    assert f"--backend-store-uri=postgresql://$(DB_USER)@{host}:5432/mlflow" in args
    assert env["DB_USER"]["value"] == "mlflow"
    # The password comes from a Secret, as libpq's PGPASSWORD: never a literal in the pod spec.
    assert env["PGPASSWORD"] == {"name": "PGPASSWORD", "valueFrom": {"secretKeyRef": {
        "name": "mlplane-mlflow-db", "key": "password"}}}
    assert all("value" not in e for e in container["env"] if SECRETISH.search(e["name"]))
    assert "--default-artifact-root=s3://mlplane-mlflow-artifacts-123456789012" in args
    assert env["AWS_REGION"]["value"] == "us-east-1"
    assert not [o for o in objs if o["kind"] == "PersistentVolumeClaim"]
    # IRSA: Terraform's roles trust exactly these service-account names in namespace `mlplane`.
    mlflow_sa = find(objs, "ServiceAccount", "mlplane-mlflow")
    assert mlflow_sa["metadata"]["annotations"] == {
        "eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/mlplane-mlflow"}
    assert find(objs, "Deployment", "mlplane-mlflow")["spec"]["template"]["spec"]["serviceAccountName"] == (
        "mlplane-mlflow")
    # The model servers' account in the release namespace and each of serving.namespaces (Terraform's
    # model_server_namespaces): the model-server role trusts exactly these.
    model_servers = [o for o in objs
                     if o["kind"] == "ServiceAccount" and o["metadata"]["name"] == "mlplane-model-server"]
    assert [o["metadata"]["namespace"] for o in model_servers] == ["mlplane", "team-a", "team-b"]
    for sa in model_servers:
        assert sa["metadata"]["annotations"] == {
            "eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/mlplane-model-server"}
    annotations = find(objs, "Deployment", "mlplane-mlflow")["metadata"]["annotations"]
    assert annotations["mlplane.io/db-password-secret-arn"].startswith("arn:aws:secretsmanager:")
    # The platform settings are the release's Platform object, not operator settings.
    platform = find(objs, "Platform", "default")
    assert platform["metadata"]["namespace"] == "mlplane"
    assert platform["spec"]["gpuNodePool"]["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert platform["spec"]["gpuNodePool"]["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert not [k for k in find(objs, "ConfigMap", "mlplane-operator")["data"] if k.startswith("MLPLANE_GPU")]
    assert "External Secrets" in rendered_scenario("production")[0]["mlplane/templates/NOTES.txt"]


def test_default_is_sqlite_on_a_pvc_with_a_warning() -> None:
    objs = scenario_objects("default")
    args = _mlflow(objs)["args"]
    assert "--backend-store-uri=sqlite:////mlflow/db/mlflow.db" in args
    assert "--artifacts-destination=/mlflow/artifacts" in args
    pvcs = {o["metadata"]["name"] for o in objs if o["kind"] == "PersistentVolumeClaim"}
    assert pvcs == {"mlplane-mlflow-sqlite", "mlplane-mlflow-artifacts"}
    assert find(objs, "Deployment", "mlplane-mlflow")["spec"]["strategy"] == {"type": "Recreate"}
    notes = rendered_scenario("default")[0]["mlplane/templates/NOTES.txt"]
    assert "http://mlplane-mlflow.mlplane.svc:5000" in notes and "WARNING: MLflow uses sqlite" in notes


def test_auth_takes_mlflows_users_from_an_existing_secret() -> None:
    objs = scenario_objects("auth")
    container = _mlflow(objs)
    assert "--app-name=mlplane-auth" in container["args"]
    env = {e["name"]: e for e in container["env"]}
    for var, key in (("MLFLOW_AUTH_ADMIN_USERNAME", "admin-username"), ("MLFLOW_AUTH_ADMIN_PASSWORD", "admin-password"),
                     ("MLPLANE_MLFLOW_READER_PASSWORD", "reader-password"),
                     ("MLPLANE_MLFLOW_WRITER_USERNAME", "writer-username"),
                     ("MLPLANE_MLFLOW_WRITER_PASSWORD", "writer-password")):
        assert env[var]["valueFrom"]["secretKeyRef"]["name"] == "mlflow-users"
        assert env[var]["valueFrom"]["secretKeyRef"]["key"] == key
    # The writer and the reader are optional in an existing Secret; the admin is not.
    assert env["MLPLANE_MLFLOW_WRITER_PASSWORD"]["valueFrom"]["secretKeyRef"]["optional"] is True
    assert "optional" not in env["MLFLOW_AUTH_ADMIN_PASSWORD"]["valueFrom"]["secretKeyRef"]
    operator = {e["name"]: e for e in find(objs, "Deployment", "mlplane-operator")["spec"]["template"]["spec"]
                ["containers"][0]["env"]}
    assert operator["MLFLOW_TRACKING_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "mlflow-users",
                                                                                "key": "admin-password"}
    assert not [o for o in objs if o["kind"] == "Secret"]  # nothing generated: the user's Secrets are used
    sa = find(objs, "ServiceAccount", "mlplane-model-server")
    assert sa["secrets"] == [{"name": "mlplane-mlflow-storage"}]
    notes = rendered_scenario("auth")[0]["mlplane/templates/NOTES.txt"]
    assert "authentication is off" not in notes and "mlplane-mlflow-storage" in notes


def test_operator_command_config_and_checksum() -> None:
    objs = scenario_objects("default")
    deployment = find(objs, "Deployment", "mlplane-operator")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    # mlplane_operator/__main__.py: kopf on every namespace, standalone, with the probe's liveness endpoint.
    assert container["command"] == ["python", "-m", "mlplane_operator", "--liveness=http://0.0.0.0:8080/healthz"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    assert {"name": "healthz", "containerPort": 8080, "protocol": "TCP"} in container["ports"]
    assert container["envFrom"] == [{"configMapRef": {"name": "mlplane-operator"}}]
    assert find(objs, "ConfigMap", "mlplane-operator")["data"]["MLFLOW_TRACKING_URI"] == (
        "http://mlplane-mlflow.mlplane.svc:5000")
    checksum = deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    assert re.fullmatch(r"[0-9a-f]{64}", checksum)
    changed = find(objects(render({"operator": {"resyncSeconds": 15}})), "Deployment", "mlplane-operator")
    assert changed["spec"]["template"]["metadata"]["annotations"]["checksum/config"] != checksum


def test_helm_test_pod_curls_mlflow_health() -> None:
    pod = find(scenario_objects("default"), "Pod", "mlplane-test-mlflow")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    container = pod["spec"]["containers"][0]
    assert container["command"][0] == "curl" and "--fail" in container["command"]
    assert container["args"] == ["http://mlplane-mlflow.mlplane.svc:5000/health"]


def test_escape_hatches() -> None:
    extra = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "{{ .Release.Name }}-extra"},
             "data": {"a": "b"}}
    objs = objects(render({"extraObjects": [extra],
                           "operator": {"extraEnv": [{"name": "MLPLANE_EXTRA", "value": "1"}]}}))
    assert find(objs, "ConfigMap", "mlplane-extra")["data"] == {"a": "b"}
    env = find(objs, "Deployment", "mlplane-operator")["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "MLPLANE_EXTRA", "value": "1"} in env


# --------------------------------------------------------------------------- values contract
@pytest.mark.parametrize(("values", "where"), [
    ({"mlflow": {"backendStor": {"type": "sqlite"}}}, "backendStor"),
    ({"mlflow": {"backendStore": {"type": "mysql"}}}, "/mlflow/backendStore/type"),
    ({"operatr": {}}, "operatr"),
    ({"platform": {"gpuNodePool": {"nodeSelector": {"a": "b"}, "gpus": 1}}}, "gpus"),
    ({"platform": {"gpuNodePool": {"tolerations": [{"key": "g", "effect": "Sometimes"}]}}},
     "/platform/gpuNodePool/tolerations/0/effect"),
    ({"gpuNodePool": {}}, "gpuNodePool"),  # gone: the Platform holds it
])
def test_schema_rejects_unknown_keys_and_bad_values(values: Obj, where: str) -> None:
    with pytest.raises(helm_python.HelmError, match=where):
        render(values)


@pytest.mark.parametrize(("values", "message"), [
    ({"mlflow": {"backendStore": {"type": "postgresql"}}}, "mlflow.backendStore.host is required"),
    ({"mlflow": {"artifactStore": {"type": "s3"}}}, "mlflow.artifactStore.bucket is required"),
    ({"mlflow": {"auth": {"enabled": True}}}, "mlflow.auth.enabled needs the admin's password"),
    ({"mlflow": {"auth": {"enabled": True, "adminPassword": "admin-password-1",
                          "writerPassword": "writer-password-1"}}},
     "needs the reader's password (KServe's storage initializer"),
    ({"mlflow": {"auth": {"enabled": True, "adminPassword": "admin-password-1",
                          "readerPassword": "reader-password-1"}}},
     "needs the writer's password (ingestion Jobs log their runs as the writer"),
    ({"mlflow": {"replicas": 2}}, "needs mlflow.backendStore.type: postgresql"),
])
def test_invalid_combinations_fail_with_a_clear_message(values: Obj, message: str) -> None:
    with pytest.raises(helm_python.HelmError, match=re.escape(message)):
        render(values)


def test_long_release_names_fail_clearly_or_fit() -> None:
    """The full name may be 46 characters: 63 minus the longest suffix, "-mlflow-artifacts"."""
    fits = "mlplane-" + "a" * 38
    names = [o["metadata"]["name"] for o in objects(render(name=fits))]
    assert f"{fits}-mlflow-artifacts" in names and max(map(len, names)) == 63
    with pytest.raises(helm_python.HelmError, match="longer than 63 characters"):
        render(name=fits + "a")


def _terraform_rendered_values() -> str:
    """The Terraform template with sample outputs substituted, as `terraform output mlplane_values` prints it."""
    sample = {"cluster_name": "mlplane", "db_host": "mlplane.abc.us-east-1.rds.amazonaws.com", "db_port": 5432,
              "db_name": "mlflow", "db_username": "mlflow",
              "db_password_secret_arn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:rds!db-1-AbC",
              "bucket": "mlplane-mlflow-artifacts-123456789012", "region": "us-east-1",
              "mlflow_role_arn": "arn:aws:iam::123456789012:role/mlplane-mlflow",
              "model_server_role_arn": "arn:aws:iam::123456789012:role/mlplane-model-server",
              "cluster_autoscaler_role_arn": "arn:aws:iam::123456789012:role/mlplane-cluster-autoscaler",
              "model_server_account": "mlplane-model-server", "model_server_namespaces": ["team-a", "team-b"]}
    text = TFTPL.read_text(encoding="utf-8")
    text = re.sub(r"\$\{jsonencode\((\w+)\)\}", lambda m: json.dumps(sample[m[1]]), text)
    text = re.sub(r"\$\{(\w+)\}", lambda m: str(sample[m[1]]), text)
    assert "${" not in text, "the Terraform template uses an expression this test does not substitute"
    return text


def _key_paths(node: Any, prefix: str = "") -> set[str]:
    if not isinstance(node, dict):
        return {prefix}
    return {p for k, v in node.items() for p in _key_paths(v, f"{prefix}.{k}")}


def test_terraform_rendered_values_are_accepted() -> None:
    values = yaml.safe_load(_terraform_rendered_values())
    # The production scenario is exactly the Terraform layout (same keys, sample values).
    assert _key_paths(values) == _key_paths(scenario_values("production"))
    objs = objects(render(values))
    args = _mlflow(objs)["args"]
    assert "--backend-store-uri=postgresql://$(DB_USER)@mlplane.abc.us-east-1.rds.amazonaws.com:5432/mlflow" in args
    assert find(objs, "ServiceAccount", "mlplane-mlflow")["metadata"]["annotations"][
        "eks.amazonaws.com/role-arn"] == "arn:aws:iam::123456789012:role/mlplane-mlflow"
    report = helm_python.lint(str(CHART), values, strict=True, namespace=NAMESPACE, kube_version=f"v{K8S_VERSION}.0")
    assert report["errors"] == []


def test_values_schema_is_closed_on_our_keys() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))

    def open_objects(node: Obj, path: str) -> list[str]:
        found = [path] if "properties" in node and node.get("additionalProperties") is not False else []
        for key, sub in node.get("properties", {}).items():
            found += open_objects(sub, f"{path}.{key}")
        return found

    assert open_objects(schema, "") == []
    defaults = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    assert set(defaults) <= set(schema["properties"])


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_the_operator_accepts_the_settings_the_chart_gives_it(scenario: str) -> None:
    objs = scenario_objects(scenario)
    config = OperatorConfig.from_env(find(objs, "ConfigMap", "mlplane-operator")["data"])
    values = coalesce(defaults(), scenario_values(scenario))
    assert config.tracking_uri == f"http://mlplane-mlflow.{NAMESPACE}.svc:{values['mlflow']['port']}"
    assert config.resync_seconds == values["operator"]["resyncSeconds"]
    # The Platform the chart installs is one the operator accepts, with the values' spec.
    body = find(objs, "Platform", "default")
    platform = platform_plan.parse(body)
    spec = {**values["platform"]}
    if values["mlflow"]["auth"]["enabled"]:  # plus the pods' MLflow users (test_mlplane_chart_mlflow_creds.py)
        spec["tracking"] = {**spec.get("tracking", {}), "credentials": {
            role: {"secret": f"mlplane-mlflow-{role}"} for role in ("reader", "writer")}}
    assert platform.to_dict()["spec"] == Platform.model_validate(
        {"metadata": {"name": "default"}, "spec": spec}).to_dict()["spec"]
