"""End to end: `mlplane up` with a feature store runs `feast serve`; the feature pipeline applies,
materializes and retrains on Feast; a deployment with `features:` answers requests by entity id."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import mlflow
import numpy as np
import pandas as pd
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import yaml
from tritonclient.utils import InferenceServerException

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "features"
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from platform_helpers import mlplane, platform_processes, status, wait_for  # noqa: E402

from mlplane.registry import tracking as tracking_uris  # noqa: E402
from mlplane_pipelines import features as F  # noqa: E402
from mlplane_pipelines.iris import FEATURES  # noqa: E402

FLOWERS = [0, 60, 120, 7]


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    state_dir = tmp_path_factory.mktemp("features") / ".mlplane"
    mlplane(state_dir, "up", "-f", str(EXAMPLE / "platform.yaml"))
    try:
        state = status(state_dir)
        repo = state_dir / "feast"
        result = F.run(repo, state["trackingUri"], name="iris-features", alias="champion")
        mlplane(state_dir, "deploy", "-f", str(EXAMPLE / "deployment.yaml"))
        yield {"dir": state_dir, "repo": repo, "tracking": state["trackingUri"], "registered": result.registered}
    finally:
        mlplane(state_dir, "down", check=False)
    assert not platform_processes(state_dir)


def _deployment(platform, name="iris-features"):
    return status(platform["dir"])["deployments"][name]


def _online(platform, ids) -> pd.DataFrame:
    got = F.store(platform["repo"]).get_online_features(features=F.FEATURE_REFS,
                                                        entity_rows={"flower_id": ids}).to_dict()
    return pd.DataFrame({f: got[f] for f in FEATURES})


def _expected(platform, ids) -> list[int]:
    """The registered model applied to the features the online store holds for ``ids``."""
    with tracking_uris(platform["tracking"]):  # models:/ resolves through the registry URI, restored afterwards
        model = mlflow.pyfunc.load_model("models:/iris-features@champion")
    return model.predict(_online(platform, ids)).tolist()


def _infer_http(url: str, ids, name="iris-features") -> httpx.Response:
    body = {"inputs": [{"name": "flower_id", "shape": [len(ids)], "datatype": "INT64", "data": list(ids)}]}
    return httpx.post(f"{url}/v2/models/{name}/infer", json=body, timeout=30)


def test_up_runs_the_feast_feature_server(platform):
    feast = status(platform["dir"])["components"]["feast"]
    assert feast["status"] == "ready" and feast["kind"] == "feature-server"
    assert feast["url"].startswith("http://127.0.0.1:")
    assert httpx.get(feast["url"] + "/health").status_code == 200
    assert feast["url"] in mlplane(platform["dir"], "status").stdout
    config = yaml.safe_load((platform["repo"] / "feature_store.yaml").read_text())
    assert config["online_store"]["path"] == str(platform["repo"] / "online.db")
    # The feature server serves what the pipeline materialized.
    r = httpx.post(feast["url"] + "/get-online-features", timeout=30,
                   json={"features": F.FEATURE_REFS, "entities": {"flower_id": [60]}})
    assert r.status_code == 200, r.text
    served = dict(zip(r.json()["metadata"]["feature_names"], (res["values"][0] for res in r.json()["results"]),
                      strict=True))
    assert [served[f] for f in FEATURES] == _online(platform, [60]).iloc[0].tolist()


def test_model_is_retrained_on_feast_features(platform):
    reg = platform["registered"]
    assert reg.name == "iris-features" and reg.version == "1"
    assert reg.accuracy > 0.8
    run = mlflow.MlflowClient(platform["tracking"]).get_run(reg.run_id)
    assert run.data.params["features"] == ",".join(F.FEATURE_REFS)


def test_requests_by_entity_id_get_the_online_features_joined(platform):
    dep = _deployment(platform)
    assert dep["status"] == "ready"
    meta = httpx.get(f"{dep['url']}/v2/models/iris-features").json()
    assert meta["inputs"] == [{"name": "flower_id", "datatype": "INT64", "shape": [-1]}]
    expected = _expected(platform, FLOWERS)
    assert expected[:3] == [0, 1, 2]  # one flower of each species
    r = _infer_http(dep["url"], FLOWERS)
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == expected

    inp = grpcclient.InferInput("flower_id", [len(FLOWERS)], "INT64")
    inp.set_data_from_numpy(np.array(FLOWERS, dtype=np.int64))
    result = grpcclient.InferenceServerClient(dep["grpc"]).infer("iris-features", [inp])
    assert result.as_numpy(result.get_response().outputs[0].name).tolist() == expected


def test_unknown_entity_is_a_404_naming_it_and_the_server_keeps_serving(platform):
    dep = _deployment(platform)
    r = _infer_http(dep["url"], [3, 4242])
    assert r.status_code == 404
    assert "flower_id [4242]" in r.json()["error"] and "onMissing" in r.json()["error"]
    client = httpclient.InferenceServerClient(dep["url"].removeprefix("http://"))
    inp = httpclient.InferInput("flower_id", [1], "INT64")
    inp.set_data_from_numpy(np.array([4242], dtype=np.int64))
    with pytest.raises(InferenceServerException, match="4242"):
        client.infer("iris-features", [inp])
    ginp = grpcclient.InferInput("flower_id", [1], "INT64")
    ginp.set_data_from_numpy(np.array([4242], dtype=np.int64))
    with pytest.raises(InferenceServerException, match="4242"):  # gRPC: INVALID_ARGUMENT with the message
        grpcclient.InferenceServerClient(dep["grpc"]).infer("iris-features", [ginp])
    # Feature columns are the store's to send, and the ids must be there.
    sent = {"inputs": [{"name": "sepal_length", "shape": [1], "datatype": "FP64", "data": [5.0]},
                       {"name": "flower_id", "shape": [1], "datatype": "INT64", "data": [1]}]}
    bad = httpx.post(f"{dep['url']}/v2/models/iris-features/infer", json=sent)
    assert bad.status_code == 400 and "comes from the feature store" in bad.json()["error"]
    none = httpx.post(f"{dep['url']}/v2/models/iris-features/infer",
                      json={"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1.0]}]})
    assert none.status_code == 400 and "flower_id" in none.json()["error"]
    ok = _infer_http(dep["url"], [0])
    assert ok.status_code == 200 and ok.json()["outputs"][0]["data"] == _expected(platform, [0])
    assert _deployment(platform)["restarts"] == 0


def test_on_missing_default_uses_the_documented_defaults(platform, tmp_path):
    spec = yaml.safe_load((EXAMPLE / "deployment.yaml").read_text())
    spec["metadata"]["name"] = "iris-defaults"
    defaults = dict(zip(F.FEATURE_REFS, [6.5, 3.0, 5.5, 2.0], strict=True))  # a virginica-like flower
    spec["spec"]["features"].update({"onMissing": "default", "defaults": defaults})
    file = tmp_path / "defaults.yaml"
    file.write_text(yaml.safe_dump(spec))
    mlplane(platform["dir"], "deploy", "-f", str(file))
    try:
        dep = _deployment(platform, "iris-defaults")
        r = _infer_http(dep["url"], [0, 999], name="iris-defaults")
        assert r.status_code == 200, r.text
        with tracking_uris(platform["tracking"]):
            model = mlflow.pyfunc.load_model("models:/iris-features@champion")
        rows = pd.concat([_online(platform, [0]), pd.DataFrame([dict(zip(FEATURES, defaults.values(),
                                                                           strict=True))])])
        assert r.json()["outputs"][0]["data"] == model.predict(rows).tolist()
    finally:
        mlplane(platform["dir"], "undeploy", "iris-defaults")


def test_unknown_features_are_refused_at_deploy_time(platform, tmp_path):
    spec = yaml.safe_load((EXAMPLE / "deployment.yaml").read_text())
    spec["metadata"]["name"] = "iris-typo"
    spec["spec"]["features"]["features"] = ["iris_measurements:sepal_lenght", "iris_flowers:petal_width"]
    file = tmp_path / "typo.yaml"
    file.write_text(yaml.safe_dump(spec))
    out = mlplane(platform["dir"], "deploy", "-f", str(file), check=False)
    assert out.returncode == 2
    assert "no feature 'sepal_lenght'" in out.stderr and "feature view 'iris_flowers' does not exist" in out.stderr
    assert "iris-typo" not in status(platform["dir"])["deployments"]


def test_a_killed_feature_server_comes_back(platform):
    import os
    import signal

    feast = status(platform["dir"])["components"]["feast"]
    os.killpg(feast["pid"], signal.SIGKILL)
    wait_for(lambda: status(platform["dir"])["components"]["feast"]["restarts"] == 1
             and status(platform["dir"])["components"]["feast"]["status"] == "ready", 180, "feast to restart")
    assert httpx.get(feast["url"] + "/health").status_code == 200
