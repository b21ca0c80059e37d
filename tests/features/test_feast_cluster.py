"""The cluster feature store path for real, on a Redis online store with a password.

A throwaway `redis-server` (Debian's) on loopback stands for the cluster's Redis. The Platform's
cluster render gives a predictor its ``feature_store.yaml`` and env (the connection string, password
included, from a Secret via ``secretKeyRef``); with exactly that env and file the feature pipeline
applies and materializes into Redis, and the model server's online read (``mlplane.features.online``)
returns the features. The FeatureStore the Feast operator gets points at the same Redis: its feature
server's config, built from the settings Secret and the same env, reads the same values.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import yaml

from mlplane.features.config import ENTITY_KEY_SERIALIZATION_VERSION, FEATURE_STORE_YAML
from mlplane.features.k8s import MOUNT_PATH, pod_features
from mlplane.features.online import EntityNotFound, OnlineFeatures
from mlplane.features.operator import feature_store
from mlplane.runtime.local.process import free_port
from mlplane.spec import ModelDeployment, Platform, load_file
from mlplane_pipelines import features as F
from mlplane_pipelines.iris import FEATURES, load_data

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
PASSWORD = "s3cret-for-this-test-only"
SECRET = ("feast-redis", "connection-string")  # the user's Secret the Platform names


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    assert Path(binary).exists(), f"needs Debian's redis-server (looked for {binary}; `make system-deps`)"
    port = free_port(HOST)
    proc = subprocess.Popen([binary, "--bind", HOST, "--port", str(port), "--requirepass", PASSWORD,
                             "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    client = redis.Redis(host=HOST, port=port, password=PASSWORD)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if client.ping():
                    break
            except redis.ConnectionError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
                time.sleep(0.1)
        yield f"{HOST}:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Platform:
    registry = tmp_path_factory.mktemp("registry") / "registry.db"  # stands for s3://... in a cluster
    return Platform.model_validate({"metadata": {"name": "prod"}, "spec": {"featureStore": {
        "enabled": True, "project": "cluster_redis", "registry": str(registry),
        "onlineStore": {"type": "redis", "options": {"key_ttl_seconds": 86400},
                        "secrets": {"connection_string": {"name": SECRET[0], "key": SECRET[1]}}}}}})


def secret_env(env: list[dict], secrets: dict[tuple[str, str], str]) -> dict[str, str]:
    """The env vars a pod gets: values, and `secretKeyRef`s resolved from the cluster's Secrets."""
    out = {}
    for item in env:
        if "value" in item:
            out[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            out[item["name"]] = secrets[ref["name"], ref["key"]]
    return out


@pytest.fixture(scope="module")
def pod(platform: Platform, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The predictor pod's view: its mounted feature_store.yaml and its env; the pipeline has run against it."""
    (doc,) = load_file(ROOT / "examples" / "features" / "deployment.yaml")
    deployment = ModelDeployment.model_validate(doc.to_dict())
    features = pod_features(deployment, platform)
    mount = tmp_path_factory.mktemp("mount")  # what MOUNT_PATH holds in the pod
    (mount / FEATURE_STORE_YAML).write_text(features.config_data[FEATURE_STORE_YAML])
    env = secret_env(features.env, {SECRET: f"{redis_url},password={PASSWORD}"})
    assert env["MLPLANE_FEATURE_STORE_YAML"] == f"{MOUNT_PATH}/{FEATURE_STORE_YAML}"
    mp = pytest.MonkeyPatch()
    for name, value in env.items():
        mp.setenv(name, value)
    try:
        base = F.default_base()
        fs = F.store(mount)
        F.apply(fs, F.write_source(tmp_path_factory.mktemp("data"), base))
        F.materialize(fs)
        yield mount
    finally:
        mp.undo()


def test_the_password_is_only_in_the_secret(platform, pod):
    text = (pod / FEATURE_STORE_YAML).read_text()
    assert PASSWORD not in text
    assert yaml.safe_load(text)["online_store"] == {
        "type": "redis", "key_ttl_seconds": 86400, "connection_string": "${MLPLANE_FEAST_ONLINE_CONNECTION_STRING}"}
    for obj in feature_store(platform, "ml"):
        assert PASSWORD not in yaml.safe_dump(obj)


def test_materialized_features_are_in_redis_and_redis_wants_the_password(redis_url, pod):
    host, port = redis_url.split(":")
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host=host, port=int(port)).dbsize()
    assert redis.Redis(host=host, port=int(port), password=PASSWORD).dbsize() == 150  # one key per flower


def test_model_server_reads_the_online_features_from_redis(pod):
    from mlplane.spec.deployment import FeaturesSpec

    spec = FeaturesSpec.model_validate({"entityKey": F.ENTITY_KEY, "features": F.FEATURE_REFS})
    online = OnlineFeatures(spec, pod / FEATURE_STORE_YAML)
    X, _ = load_data()
    columns = online.fetch([3, 149])
    for i, name in enumerate(FEATURES):
        assert columns[i] == [round(X.loc[3, name] * F.GROWTH[-1], 4), round(X.loc[149, name] * F.GROWTH[-1], 4)]
    with pytest.raises(EntityNotFound, match="flower_id \\[5000\\]"):
        online.fetch([5000])


def test_the_feast_operators_feature_server_reads_the_same_store(platform, redis_url, tmp_path, monkeypatch, pod):
    """The feature server's config as the Feast operator builds it (its FeatureStore and the settings
    Secret, as-is under the store type), with the env its container gets, reads what was materialized."""
    from feast import FeatureStore

    settings, store = feature_store(platform, "ml")
    services = store["spec"]["services"]
    key = services["onlineStore"]["persistence"]["store"]["type"]
    assert services["onlineStore"]["persistence"]["store"]["secretRef"]["name"] == settings["metadata"]["name"]
    config = {"project": store["spec"]["feastProject"], "provider": "local",
              "registry": {"registry_type": "file",
                           "path": services["registry"]["local"]["persistence"]["file"]["path"]},
              "online_store": {"type": key, **yaml.safe_load(settings["stringData"][key])},
              "entity_key_serialization_version": ENTITY_KEY_SERIALIZATION_VERSION}
    # Feast's feature server gets it as FEATURE_STORE_YAML_BASE64 and loads it from a file, expanding ${...}.
    (tmp_path / FEATURE_STORE_YAML).write_bytes(base64.b64decode(base64.b64encode(yaml.safe_dump(config).encode())))
    env = secret_env(services["onlineStore"]["server"]["env"], {SECRET: f"{redis_url},password={PASSWORD}"})
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    fs = FeatureStore(repo_path=str(tmp_path))
    got = fs.get_online_features(features=F.FEATURE_REFS, entity_rows={F.ENTITY_KEY: [7]}).to_dict()
    X, _ = load_data()
    assert [got[f][0] for f in FEATURES] == [round(X.loc[7, f] * F.GROWTH[-1], 4) for f in FEATURES]
