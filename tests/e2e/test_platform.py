"""End to end: a real platform in a temp dir, driven through the `mlplane` CLI as a user would.

`up` starts a real MLflow server; two iris versions are registered; `deploy` starts a real KServe
V2 model server; requests go over HTTP and gRPC with tritonclient; `promote` switches versions
under a concurrent client loop; a killed model server comes back; `down` leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import httpx
import psutil
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from mlflow import MlflowClient

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "examples" / "iris"))
from client import SAMPLES, infer_grpc, infer_http  # noqa: E402
from platform_helpers import mlplane, platform_processes, promote_under_load, status, wait_for  # noqa: E402

from mlplane_pipelines.iris import train_and_register  # noqa: E402


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    state_dir = tmp_path_factory.mktemp("platform") / ".mlplane"
    up = mlplane(state_dir, "up", "-f", str(ROOT / "examples" / "iris" / "platform.yaml"))
    state = status(state_dir)
    tracking = state["trackingUri"]
    v1 = train_and_register(tracking, name="iris", C=1.0, alias="champion")
    v2 = train_and_register(tracking, name="iris", C=0.02)
    yield {"dir": state_dir, "tracking": tracking, "v1": v1, "v2": v2, "up": up}
    mlplane(state_dir, "down", check=False)


def test_up_prints_mlflow_ui_and_refuses_a_second_platform(platform):
    assert platform["tracking"].startswith("http://127.0.0.1:")
    assert platform["tracking"] in platform["up"].stdout
    assert httpx.get(platform["tracking"] + "/health").text.strip() == "OK"
    second = mlplane(platform["dir"], "up", check=False)
    assert second.returncode == 1
    assert "already running" in second.stderr
    text = mlplane(platform["dir"], "status").stdout
    assert platform["tracking"] in text and "mlflow" in text


def test_deploy_serves_champion_over_http_and_grpc(platform):
    state_dir = platform["dir"]
    out = mlplane(state_dir, "deploy", "-f", str(ROOT / "examples" / "iris" / "deployment.yaml"))
    assert "iris" in out.stdout
    dep = status(state_dir)["deployments"]["iris"]
    assert dep["status"] == "ready" and dep["servedVersion"] == "1"
    assert dep["url"].startswith("http://127.0.0.1:") and dep["grpc"].startswith("127.0.0.1:")
    url = dep["url"]
    assert httpx.get(f"{url}/v2/health/live").status_code == 200
    assert httpx.get(f"{url}/v2/health/ready").status_code == 200
    assert httpx.get(f"{url}/v2").json()["name"]
    meta = httpx.get(f"{url}/v2/models/iris").json()
    assert meta["versions"] == ["1"]
    assert [i["name"] for i in meta["inputs"]] == ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    assert all(i["datatype"] == "FP64" for i in meta["inputs"])

    http_classes, http_version = infer_http(url.removeprefix("http://"), "iris", SAMPLES)
    grpc_classes, grpc_version = infer_grpc(dep["grpc"], "iris", SAMPLES)
    assert http_version == grpc_version == "1"
    assert http_classes.tolist() == grpc_classes.tolist() == [0, 1, 2]

    gmeta = grpcclient.InferenceServerClient(dep["grpc"]).get_model_metadata("iris")
    assert list(gmeta.versions) == ["1"]
    assert grpcclient.InferenceServerClient(dep["grpc"]).is_model_ready("iris")
    assert httpclient.InferenceServerClient(url.removeprefix("http://")).is_server_live()


def _readme_curl_example() -> tuple[dict, dict]:
    """The request body and the documented reply of the README's curl example."""
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- readme-example: curl-infer -->", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    body = json.loads(block.split("-d '", 1)[1].split("'", 1)[0])
    reply = json.loads(block.split("# ", 1)[1].strip().replace("…", "x"))
    return body, reply


def test_readme_curl_example_works_as_documented(platform):
    dep = status(platform["dir"])["deployments"]["iris"]
    body, documented = _readme_curl_example()
    r = httpx.post(f"{dep['url']}/v2/models/iris/infer", json=body)
    assert r.status_code == 200, r.text
    reply = r.json()
    assert reply["model_name"] == documented["model_name"]
    assert reply["model_version"] == documented["model_version"] == dep["servedVersion"]
    for key in ("name", "datatype", "shape", "data"):
        assert reply["outputs"][0][key] == documented["outputs"][0][key], key


def test_render_resolves_the_alias_to_the_versions_artifact_location(platform):
    import yaml

    out = mlplane(platform["dir"], "render", "-f", str(ROOT / "examples" / "iris" / "deployment.yaml"))
    isvc = next(o for o in yaml.safe_load_all(out.stdout) if o["kind"] == "InferenceService")
    # The local MLflow proxies its artifacts (mlflow-artifacts:), which KServe's storage initializer cannot
    # fetch: render points at the archive the operator logs next to version 1, on MLflow's artifact proxy.
    run = MlflowClient(platform["tracking"]).get_model_version("iris", "1").run_id
    storage_uri = isvc["spec"]["predictor"]["model"]["storageUri"]
    assert storage_uri.startswith(f"{platform['tracking']}/api/2.0/mlflow-artifacts/artifacts/")
    assert f"/{run}/artifacts/mlplane-serving/1/model.tar.gz" in storage_uri
    assert isvc["metadata"]["labels"]["mlplane.io/model-version"] == "1"


def test_promote_switches_version_with_zero_failed_requests(platform):
    state_dir = platform["dir"]
    dep = status(state_dir)["deployments"]["iris"]

    def infer(proto: str) -> str:
        if proto == "http":
            return infer_http(dep["url"].removeprefix("http://"), "iris", SAMPLES)[1]
        return infer_grpc(dep["grpc"], "iris", SAMPLES)[1]

    out, results = promote_under_load(state_dir, "iris", platform["v2"].version, infer)
    assert "1 → 2" in out.stdout
    assert results["errors"] == []
    assert results["versions"][0] == "1" and results["versions"][-1] == "2"
    assert len(results["versions"]) > 50
    # Once a request saw version 2, none saw version 1 again (per-thread order is preserved overall).
    assert "1" not in results["versions"][results["versions"].index("2") + 20:]
    after = status(state_dir)["deployments"]["iris"]
    assert after["servedVersion"] == "2" and after["url"] == dep["url"]
    alias = MlflowClient(platform["tracking"]).get_model_version_by_alias("iris", "champion")
    assert alias.version == "2"
    assert httpx.get(f"{dep['url']}/v2/models/iris").json()["versions"] == ["2"]


def test_moving_the_alias_in_mlflow_is_followed(platform):
    state_dir = platform["dir"]
    MlflowClient(platform["tracking"]).set_registered_model_alias("iris", "champion", "1")
    wait_for(lambda: status(state_dir)["deployments"]["iris"]["servedVersion"] == "1", 30,
             "the endpoint to follow champion back to version 1")
    url = status(state_dir)["deployments"]["iris"]["url"]
    assert httpx.get(f"{url}/v2/models/iris").json()["versions"] == ["1"]
    mlplane(state_dir, "promote", "iris", "--version", "2")


def test_killed_model_server_is_restarted(platform):
    state_dir = platform["dir"]
    dep = status(state_dir)["deployments"]["iris"]
    expected, _ = infer_http(dep["url"].removeprefix("http://"), "iris", SAMPLES)
    os.kill(dep["pid"], signal.SIGKILL)
    back = wait_for(lambda: (d := status(state_dir)["deployments"]["iris"])["status"] == "ready"
                    and d["pid"] != dep["pid"] and d, 60, "the model server to come back")
    assert back["restarts"] == 1
    assert back["url"] == dep["url"]
    classes, version = infer_http(back["url"].removeprefix("http://"), "iris", SAMPLES)
    assert version == "2" and classes.tolist() == expected.tolist()
    assert "iris" in mlplane(state_dir, "logs", "iris", "-n", "200").stdout


def test_promote_and_deploy_errors_are_clear(platform):
    state_dir = platform["dir"]
    bad = mlplane(state_dir, "promote", "iris", "--version", "99", check=False)
    assert bad.returncode == 1 and "99" in bad.stderr
    missing = mlplane(state_dir, "promote", "nope", "--version", "1", check=False)
    assert missing.returncode == 1 and "no deployment named 'nope'" in missing.stderr
    unknown_alias = mlplane(state_dir, "deploy", "other", "--model", "models:/iris@staging", check=False)
    assert unknown_alias.returncode == 1 and "staging" in unknown_alias.stderr
    ray = mlplane(state_dir, "deploy", "other", "--model", "models:/iris/1", "--runtime", "ray", check=False)
    assert ray.returncode == 2 and "spec.rag: runtime 'ray' serves a RAG application" in ray.stderr
    bad_uri = mlplane(state_dir, "deploy", "other", "--model", "models:/", check=False)
    assert bad_uri.returncode == 2 and "spec.model" in bad_uri.stderr
    # The endpoint still serves after all of that.
    dep = status(state_dir)["deployments"]["iris"]
    assert infer_http(dep["url"].removeprefix("http://"), "iris", SAMPLES)[1] == "2"


def test_down_then_up_restores_deployments_and_down_leaves_nothing(platform):
    state_dir = platform["dir"]
    before = status(state_dir)
    pids = [before["supervisor"]["pid"], before["components"]["mlflow"]["pid"],
            before["deployments"]["iris"]["pid"]]
    procs = [psutil.Process(pid) for pid in pids]
    children = [c for p in procs for c in p.children(recursive=True)]
    assert children, "MLflow runs worker processes"
    mlplane(state_dir, "down")
    left = [p for p in [*procs, *children] if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert left == []
    assert mlplane(state_dir, "status", check=False).returncode == 1

    (state_dir / "deployments" / "ghost.yaml").write_text(
        "apiVersion: mlplane.io/v1alpha1\nkind: ModelDeployment\nmetadata: {name: ghost}\n"
        "spec: {model: 'models:/ghost@champion'}\n")
    up = mlplane(state_dir, "up")
    assert "deployment ghost was not restored" in up.stderr and "ghost" in up.stderr
    assert "ghost" in status(state_dir)["restoreErrors"]
    (state_dir / "deployments" / "ghost.yaml").unlink()
    dep = wait_for(lambda: status(state_dir)["deployments"].get("iris"), 60, "iris to be restored")
    assert dep["status"] == "ready" and dep["servedVersion"] == "2"
    # Same addresses as before: clients and bookmarks keep working across down/up.
    assert dep["url"] == before["deployments"]["iris"]["url"]
    assert status(state_dir)["trackingUri"] == platform["tracking"]
    assert infer_grpc(dep["grpc"], "iris", SAMPLES)[1] == "2"
    mlplane(state_dir, "undeploy", "iris")
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{dep['url']}/v2/health/live", timeout=2)
    mlplane(state_dir, "down")
    assert platform_processes(state_dir) == []


def test_killed_mlflow_comes_back_on_the_same_port(platform):
    state_dir = platform["dir"]
    mlplane(state_dir, "up")
    before = status(state_dir)["components"]["mlflow"]
    os.killpg(before["pid"], signal.SIGKILL)
    after = wait_for(lambda: (c := status(state_dir)["components"]["mlflow"])["status"] == "ready"
                     and c["pid"] != before["pid"] and c, 90, "MLflow to be restarted")
    assert after["url"] == before["url"] and after["restarts"] == 1
    assert httpx.get(after["url"] + "/health").status_code == 200
    assert MlflowClient(platform["tracking"]).get_model_version_by_alias("iris", "champion").version == "2"


def test_down_cleans_up_after_a_dead_supervisor(platform):
    state_dir = platform["dir"]
    state = status(state_dir)
    mlflow_pid = state["components"]["mlflow"]["pid"]
    os.kill(state["supervisor"]["pid"], signal.SIGKILL)
    wait_for(lambda: mlplane(state_dir, "status", check=False).returncode == 1, 10, "the supervisor to be gone")
    assert psutil.pid_exists(mlflow_pid)  # orphaned, still running
    out = mlplane(state_dir, "down")
    assert "mlflow" in out.stderr  # reported as a leftover it had to kill
    assert platform_processes(state_dir) == []
