"""`mlplane cluster install|upgrade|uninstall`: the plan, dry runs through the embedded Helm engine, bad input.

There is no API server here: dry runs render client-side (Helm's memory release storage, nothing
sent anywhere), and real runs are checked up to the point where they must reach the cluster.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from chart_helpers import CHARTS, render

from mlplane.k8s import helm_plan
from mlplane.k8s.helm_plan import ValuesFileError
from mlplane.runtime.local.process import free_port


def run(tmp_path: Path, *args: str, kubeconfig: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HOME": str(tmp_path), "COLUMNS": "200", "NO_COLOR": "1"}
    env.pop("HELM_DRIVER", None)
    env["KUBECONFIG"] = str(kubeconfig or tmp_path / "no-kubeconfig")
    return subprocess.run([sys.executable, "-m", "mlplane", "cluster", *args], capture_output=True, text=True,
                          env=env, timeout=120)


def releases(stdout: str) -> list[tuple[str, list[dict]]]:
    """The dry-run output split per release: (header line, objects); phase headers dropped."""
    parts = re.split(r"^(# Release .*)$", stdout, flags=re.MULTILINE)
    assert parts[0].startswith("# phase 1/4 cert-manager"), parts[0]
    return [(parts[i], [d for d in yaml.safe_load_all(parts[i + 1]) if d]) for i in range(1, len(parts), 2)]


@pytest.fixture()
def unreachable_kubeconfig(tmp_path: Path) -> Path:
    """A kubeconfig whose API server is a loopback port nothing listens on."""
    port = free_port("127.0.0.1")
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "lab",
        "clusters": [{"name": "lab", "cluster": {"server": f"https://127.0.0.1:{port}"}}],
        "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": "lab"}}],
        "users": [{"name": "lab", "user": {"token": "not-a-secret"}}]}), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- the plan (pure)
PHASED = [  # (phase, release, namespace)
    ("cert-manager", "cert-manager", "cert-manager"),
    ("crds", "kserve-crd", "kserve"), ("crds", "mlplane-crds", "ml"),
    ("controllers", "kube-prometheus-stack", "monitoring"), ("controllers", "gpu-operator", "gpu-operator"),
    ("controllers", "kuberay-operator", "kuberay"), ("controllers", "keda", "keda"),
    ("controllers", "kserve-resources", "kserve"),
    ("mlplane", "mlplane", "ml"),
]


def test_install_goes_in_phases_each_release_waiting() -> None:
    plan = helm_plan.install_plan({"mlflow": {"port": 5001}}, namespace="ml", charts_dir=CHARTS)
    assert [(s.phase, s.release, s.namespace) for s in plan] == PHASED
    assert all(s.wait for s in plan)
    by_name = {s.release: s for s in plan}
    assert dict(by_name["mlplane"].values) == {"mlflow": {"port": 5001}} and by_name["mlplane"].local
    assert by_name["mlplane-crds"].chart == CHARTS / "mlplane-crds"
    # Third-party charts: referenced by repository and exact version, with the stack's values.
    cert_manager = by_name["cert-manager"]
    assert (cert_manager.chart, cert_manager.version, cert_manager.repo_url) == (
        "cert-manager", "v1.21.1", "https://charts.jetstack.io")
    assert dict(cert_manager.values) == {"crds": {"enabled": True}}
    kserve = by_name["kserve-resources"]
    assert (kserve.chart, kserve.version, kserve.repo_url) == ("oci://ghcr.io/kserve/charts/kserve-resources",
                                                                "v0.20.0", None)
    assert by_name["gpu-operator"].values["dcgmExporter"]["serviceMonitor"]["honorLabels"] is True


def test_components_can_be_skipped_and_milvus_included() -> None:
    plan = helm_plan.install_plan({}, skip=["gpu-operator", "cert-manager"], include=["milvus"])
    names = [s.release for s in plan]
    assert "gpu-operator" not in names and "cert-manager" not in names
    assert names[-2:] == ["milvus", "mlplane"]
    with pytest.raises(helm_plan.UnknownComponentError, match="--skip: unknown component.*kserve;.*kserve-resources"):
        helm_plan.install_plan({}, skip=["kserve"])


def test_a_values_file_is_checked_as_helm_merges_it_into_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "values.yaml"
    path.write_text("mlflow:\n  image:\n    tag: v3.1.0\n  nodeSelector: null\n", encoding="utf-8")
    assert helm_plan.load_values(path) == {"mlflow": {"image": {"tag": "v3.1.0"}, "nodeSelector": None}}
    assert helm_plan.coalesce({"a": {"b": 1, "c": 2}, "d": [1]}, {"a": {"b": 3, "c": None}, "d": [2]}) == {
        "a": {"b": 3}, "d": [2]}


def test_uninstall_goes_the_other_way_and_keeps_the_crd_releases() -> None:
    plan = helm_plan.uninstall_plan(namespace="ml")
    assert [s.release for s in plan] == [r for _, r, _ in reversed(PHASED) if r not in ("mlplane-crds", "kserve-crd")]
    with_crds = helm_plan.uninstall_plan(namespace="ml", delete_crds=True)
    assert [s.release for s in with_crds] == [r for _, r, _ in reversed(PHASED)]


def test_the_default_charts_dir_is_the_source_tree_here() -> None:
    assert helm_plan.DEFAULT_CHARTS_DIR == CHARTS  # an installed wheel uses mlplane/_charts (tests/stack)


def test_the_operator_deployment_is_found_in_the_release_manifest() -> None:
    manifest = "\n---\n".join(t for p, t in render({"fullnameOverride": "ml"}).items() if p.endswith(".yaml"))
    assert helm_plan.operator_deployment(helm_plan.manifest_objects(manifest)) == "ml-operator"
    assert helm_plan.operator_deployment(helm_plan.manifest_objects("---\n# Source: x\n")) is None


@pytest.mark.parametrize(("content", "message"), [
    ("mlflow:\n  port: [\n", "not valid YAML (line 3)"),
    ("- a\n- b\n", "must be a mapping of chart values, got list"),
    ("mlflow:\n  prot: 5001\n", "mlflow.prot: Extra inputs are not permitted"),
    ("networkPolicy:\n  apiServer:\n    ports: []\n", "networkPolicy.apiServer.ports"),
])
def test_bad_values_files_are_named(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "values.yaml"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValuesFileError, match=re.escape(message)) as raised:
        helm_plan.load_values(path)
    assert str(path) in str(raised.value)


# --------------------------------------------------------------------------- dry runs (Helm engine)
@pytest.mark.parametrize("action", ["install", "upgrade"])
def test_dry_run_prints_every_phase_and_what_it_installs(tmp_path: Path, action: str) -> None:
    values = tmp_path / "values.yaml"
    values.write_text("mlflow:\n  port: 5001\nplatform:\n  serving:\n    maxRequestBytes: 2048\n", encoding="utf-8")
    proc = run(tmp_path, action, "--dry-run", "-n", "ml", "--values", str(values))
    assert proc.returncode == 0, proc.stderr
    phases = [line for line in proc.stdout.splitlines() if line.startswith("# phase ")]
    assert [p.split(":")[0] for p in phases] == ["# phase 1/4 cert-manager", "# phase 2/4 crds",
                                                 "# phase 3/4 controllers", "# phase 4/4 mlplane"]
    parts = releases(proc.stdout)
    assert [h.split()[2] for h, _ in parts] == [r for _, r, _ in PHASED]
    headers = dict((h.split()[2], h) for h, _ in parts)
    assert headers["cert-manager"] == ("# Release cert-manager (chart cert-manager v1.21.1 from https://charts.jetstack.io)"
                                       ", namespace cert-manager; downloaded by Helm at install time")
    assert "(chart oci://ghcr.io/kserve/charts/kserve-resources v0.20.0), namespace kserve" in headers[
        "kserve-resources"]
    gpu_section = proc.stdout.split(headers["gpu-operator"])[1].split("# Release")[0]
    assert "#         honorLabels: true" in gpu_section.splitlines()
    (_, crds), (_, objs) = parts[2], parts[-1]
    assert headers["mlplane-crds"] == "# Release mlplane-crds (chart mlplane-crds 0.1.0), namespace ml"
    assert sorted(o["metadata"]["name"] for o in crds) == ["modeldeployments.mlplane.io", "platforms.mlplane.io"]
    assert headers["mlplane"] == "# Release mlplane (chart mlplane 0.1.0), namespace ml"
    assert all(not objects for name, objects in ((h.split()[2], o) for h, o in parts) if "downloaded" in headers[name])
    by_name = {(o["kind"], o["metadata"]["name"]): o for o in objs}
    assert by_name[("Service", "mlplane-mlflow")]["spec"]["ports"][0]["port"] == 5001
    assert by_name[("Service", "mlplane-mlflow")]["metadata"]["namespace"] == "ml"
    config = by_name[("ConfigMap", "mlplane-operator")]["data"]
    assert by_name[("Platform", "default")]["spec"] == {"serving": {"maxRequestBytes": 2048}}
    assert config["MLFLOW_TRACKING_URI"] == "http://mlplane-mlflow.ml.svc:5001"
    assert ("Deployment", "mlplane-operator") in by_name


def test_dry_run_with_skip_and_include(tmp_path: Path) -> None:
    proc = run(tmp_path, "install", "--dry-run", "--skip", "gpu-operator", "--include", "milvus")
    assert proc.returncode == 0, proc.stderr
    names = [h.split()[2] for h, _ in releases(proc.stdout)]
    assert "gpu-operator" not in names and names[-2:] == ["milvus", "mlplane"]
    proc = run(tmp_path, "install", "--dry-run", "--skip", "kserve")
    _assert_clean_failure(proc, 2, "--skip: unknown component(s) kserve; choose from cert-manager")


def test_uninstall_dry_run_says_what_goes_and_what_stays(tmp_path: Path) -> None:
    proc = run(tmp_path, "uninstall", "--dry-run", "-n", "ml")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[:7] == [f"would uninstall release {r} in namespace {ns}" for _, r, ns in reversed(PHASED)
                         if r not in ("mlplane-crds", "kserve-crd")]
    assert lines[7].startswith("the CRDs would stay: mlplane's (modeldeployments.mlplane.io, platforms.mlplane.io), "
                               "KServe's (release kserve-crd), cert-manager's")
    proc = run(tmp_path, "uninstall", "--dry-run", "-n", "ml", "--delete-crds")
    lines = proc.stdout.splitlines()
    assert lines[-3:-1] == ["would uninstall release cert-manager in namespace cert-manager",
                            "would delete the CRDs modeldeployments.mlplane.io and platforms.mlplane.io"]
    assert "would uninstall release kserve-crd in namespace kserve" in lines
    assert "mlplane's" not in lines[-1]


# --------------------------------------------------------------------------- bad input, unreachable clusters
def _assert_clean_failure(proc: subprocess.CompletedProcess, code: int, *needles: str) -> None:
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stdout + proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


@pytest.mark.parametrize(("content", "needles"), [
    (None, ["values.yaml: no such file"]),
    ("mlflow: [\n", ["values.yaml: not valid YAML (line 2)"]),
    ("mlflow:\n  bad: 1\n", ["values.yaml: mlflow.bad: Extra inputs are not permitted"]),
    # Caught by the chart's own `fail`, rendered offline before the cluster is contacted.
    ("mlflow:\n  backendStore:\n    type: postgresql\n",
     ["values for mlplane are invalid", "mlflow.backendStore.host is required"]),
])
def test_a_bad_values_file_exits_2_naming_the_problem(tmp_path: Path, unreachable_kubeconfig: Path,
                                                      content: str | None, needles: list[str]) -> None:
    path = tmp_path / "values.yaml"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    for args in (["install", "--dry-run"], ["upgrade"], ["install"]):
        proc = run(tmp_path, *args, "--values", str(path), kubeconfig=unreachable_kubeconfig)
        _assert_clean_failure(proc, 2, *needles)


def test_real_install_refuses_an_unreachable_cluster_before_changing_anything(
        tmp_path: Path, unreachable_kubeconfig: Path) -> None:
    proc = run(tmp_path, "install", "--timeout", "5", kubeconfig=unreachable_kubeconfig)
    _assert_clean_failure(proc, 1, "cannot reach the Kubernetes API server (the current kubeconfig context)")
    assert proc.stdout == ""
    proc = run(tmp_path, "upgrade", "--kube-context", "prod", kubeconfig=unreachable_kubeconfig)
    _assert_clean_failure(proc, 1, "cannot reach the Kubernetes API server (context prod)", 'context "prod"')
    proc = run(tmp_path, "uninstall", kubeconfig=unreachable_kubeconfig)
    _assert_clean_failure(proc, 1, "cannot reach the Kubernetes API server")


def test_without_the_cluster_extra_the_cli_says_what_to_install(tmp_path: Path) -> None:
    """`pip install mlplane` without the `cluster` extra has no helm-python-sdk: the command says so."""
    missing = tmp_path / "without-helm"
    missing.mkdir()
    (missing / "helm_python.py").write_text('raise ModuleNotFoundError("No module named \'helm_python\'")\n')
    env = {**os.environ, "HOME": str(tmp_path), "COLUMNS": "200", "NO_COLOR": "1",
           "KUBECONFIG": str(tmp_path / "no-kubeconfig"), "PYTHONPATH": str(missing)}
    proc = subprocess.run([sys.executable, "-m", "mlplane", "cluster", "install", "--dry-run"], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "pip install 'mlplane[cluster]'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_missing_charts_dir_is_named(tmp_path: Path) -> None:
    proc = run(tmp_path, "install", "--dry-run", "--charts-dir", str(tmp_path / "nowhere"))
    _assert_clean_failure(proc, 2, f"{tmp_path / 'nowhere' / 'mlplane-stack' / 'values.yaml'}: cannot be read",
                          "set --charts-dir")
    empty = tmp_path / "charts"
    (empty / "mlplane-stack").mkdir(parents=True)
    (empty / "mlplane-stack" / "values.yaml").write_text("{}\n", encoding="utf-8")
    proc = run(tmp_path, "install", "--dry-run", "--charts-dir", str(empty))
    _assert_clean_failure(proc, 2, "cannot load the chart", "set --charts-dir")
