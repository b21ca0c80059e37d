"""Model servers' cloud identity end to end: Terraform's values -> the chart's ServiceAccounts -> the Platform the
chart installs -> the InferenceServices, RayServices and ingestion Jobs mlplane renders under it.

The Terraform side (the IRSA role trusts `system:serviceaccount:<ns>:<account>` for exactly the namespaces and
account it writes into the values) is held by `terraform test` (modules/gpu-cluster/tests/plan.tftest.hcl,
run "model_servers_in_several_namespaces", via tests/infra); here the chart is held to the same values.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import helm_python
import pytest
import yaml
from chart_helpers import NAMESPACE, TFTPL, Obj, find, objects, render

from mlplane.k8s import ResolvedArtifact
from mlplane.k8s import render as render_deployment
from mlplane.k8s.ingest import render_ingest
from mlplane.k8s.render import service_account_problem
from mlplane.spec import ModelDeployment, Platform

ROLE = "arn:aws:iam::123456789012:role/mlplane-model-server"
ARTIFACT = ResolvedArtifact(registry_version="3", storage_uri="s3://mlplane-mlflow-artifacts/1/abc/artifacts/model")


def _terraform_values(account: str, namespaces: list[str]) -> Obj:
    """The values template with sample outputs, as `terraform output mlplane_values` prints it."""
    sample = {"cluster_name": "mlplane", "db_host": "db.example", "db_port": 5432, "db_name": "mlflow",
              "db_username": "mlflow", "db_password_secret_arn": "arn:aws:secretsmanager:us-east-1:1:secret:x",
              "bucket": "mlplane-mlflow-artifacts", "region": "us-east-1",
              "mlflow_role_arn": "arn:aws:iam::123456789012:role/mlplane-mlflow", "model_server_role_arn": ROLE,
              "cluster_autoscaler_role_arn": "arn:aws:iam::123456789012:role/mlplane-cluster-autoscaler",
              "model_server_account": account, "model_server_namespaces": namespaces}
    text = TFTPL.read_text(encoding="utf-8")
    text = re.sub(r"\$\{jsonencode\((\w+)\)\}", lambda m: json.dumps(sample[m[1]]), text)
    text = re.sub(r"\$\{(\w+)\}", lambda m: str(sample[m[1]]), text)
    assert "${" not in text, "the Terraform template uses an expression this test does not substitute"
    return yaml.safe_load(text)


def _model_server_accounts(objs: list[Obj]) -> dict[tuple[str, str], Obj]:
    return {(o["metadata"]["namespace"], o["metadata"]["name"]): o for o in objs
            if o["kind"] == "ServiceAccount" and o["metadata"]["labels"]["app.kubernetes.io/component"] == "serving"}


def _platform(objs: list[Obj]) -> Platform:
    obj = find(objs, "Platform", "default")
    return Platform.model_validate({**obj, "metadata": {"name": "default", "namespace": obj["metadata"]["namespace"]}})


def _deployment(runtime: str, namespace: str) -> ModelDeployment:
    spec: Obj = {"model": "models:/fraud@champion", "runtime": runtime}
    if runtime == "ray":
        spec["model"] = "models:/rag-generator@champion"
    return ModelDeployment.model_validate({"apiVersion": "mlplane.io/v1alpha1", "kind": "ModelDeployment",
                                           "metadata": {"name": "fraud", "namespace": namespace}, "spec": spec})


def _pod_service_accounts(obj: Obj) -> list[str]:
    if obj["kind"] == "InferenceService":
        return [obj["spec"]["predictor"]["serviceAccountName"]]
    if obj["kind"] == "RayService":
        cluster = obj["spec"]["rayClusterConfig"]
        groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
        return [g["template"]["spec"].get("serviceAccountName", "<unset>") for g in groups]
    if obj["kind"] == "Job":
        return [obj["spec"]["template"]["spec"].get("serviceAccountName", "<unset>")]
    if obj["kind"] == "CronJob":
        return [obj["spec"]["jobTemplate"]["spec"]["template"]["spec"].get("serviceAccountName", "<unset>")]
    return []


@pytest.mark.parametrize("account", ["mlplane-model-server", "serving"])
def test_terraform_values_give_every_trusted_namespace_its_account(account: str) -> None:
    objs = objects(render(_terraform_values(account, ["team-a", "team-b"])))
    accounts = _model_server_accounts(objs)
    # Exactly the subjects the model-server role trusts: system:serviceaccount:<ns>:<account>.
    assert set(accounts) == {(NAMESPACE, account), ("team-a", account), ("team-b", account)}
    for sa in accounts.values():
        assert sa["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": ROLE}
    assert _platform(objs).spec.serving.service_account_name == account


@pytest.mark.parametrize("runtime", ["kserve", "triton", "ray"])
def test_rendered_model_servers_run_under_the_charts_account(runtime: str) -> None:
    objs = objects(render(_terraform_values("mlplane-model-server", ["team-a"])))
    platform = _platform(objs)
    created = _model_server_accounts(objs)
    rendered = render_deployment(_deployment(runtime, "team-a"), platform, ARTIFACT)
    names = [n for o in rendered for n in _pod_service_accounts(o)]
    assert names and all(("team-a", n) in created for n in names), (names, sorted(created))


def test_ingestion_jobs_run_under_the_platforms_account() -> None:
    platform = Platform.model_validate({
        "apiVersion": "mlplane.io/v1alpha1", "kind": "Platform", "metadata": {"name": "default"},
        "spec": {"serving": {"serviceAccountName": "corpus-reader"},
                 "vectorStore": {"enabled": True, "backend": "milvus", "uri": "http://milvus.milvus:19530",
                                 "collections": [{"name": "docs", "source": "/corpus/docs", "volumeClaim": "corpus",
                                                  "schedule": "0 3 * * *"}]}}})
    jobs = render_ingest(platform, "docs")
    assert {o["kind"] for o in jobs} == {"Job", "CronJob"}
    assert [n for o in jobs for n in _pod_service_accounts(o)] == ["corpus-reader", "corpus-reader"]


def test_a_platform_naming_an_account_the_chart_does_not_create_is_refused() -> None:
    with pytest.raises(helm_python.HelmError, match=re.escape(
            "platform.serving.serviceAccountName is mlplane-model-server but the chart creates the model servers' "
            "service account other (serving.serviceAccount.name)")):
        render({"serving": {"serviceAccount": {"name": "other"}}})
    # Named in one place only, the other follows.
    objs = objects(render({"platform": {"serving": {"serviceAccountName": "other"}}}))
    assert set(_model_server_accounts(objs)) == {(NAMESPACE, "other")}


def test_operator_check_names_the_field_and_the_fix() -> None:
    platform = Platform.model_validate({"apiVersion": "mlplane.io/v1alpha1", "kind": "Platform",
                                        "metadata": {"name": "default"}})
    assert service_account_problem(platform, "team-a", ["default", "mlplane-model-server"]) is None
    problem = service_account_problem(platform, "team-c", ["default"])
    assert problem is not None
    assert problem.startswith("spec.serving.serviceAccountName: service account 'mlplane-model-server' does not exist "
                              "in namespace 'team-c'")
    assert "serving.namespaces" in problem


def test_cluster_install_dry_run_refuses_an_account_the_chart_does_not_create(tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text("serving:\n  serviceAccount:\n    name: team-reader\n", encoding="utf-8")
    env = {**os.environ, "HOME": str(tmp_path), "COLUMNS": "200", "NO_COLOR": "1",
           "KUBECONFIG": str(tmp_path / "no-kubeconfig")}
    env.pop("HELM_DRIVER", None)
    proc = subprocess.run([sys.executable, "-m", "mlplane", "cluster", "install", "--dry-run", "--values", str(values)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2, (proc.stdout[-2000:], proc.stderr)
    assert "platform.serving.serviceAccountName is mlplane-model-server" in proc.stderr
    assert "set platform.serving.serviceAccountName: team-reader" in proc.stderr
