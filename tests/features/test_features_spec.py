"""`spec.features` and `spec.featureStore` validation, and the feature server's process spec (pure)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mlplane.runtime.local.paths import StatePaths
from mlplane.runtime.local.plan import FEATURE_STORE_COMPONENT, RESERVED_NAMES, feature_server_process
from mlplane.spec import SpecError, load_dict


def _deployment(features: dict, **spec) -> object:
    return load_dict({"apiVersion": "mlplane.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "d"},
                      "spec": {"model": "models:/m@champion", "features": features, **spec}})


BASE = {"entityKey": "flower_id", "features": ["v:a", "v:b"]}


@pytest.mark.parametrize(("features", "spec", "message"), [
    ({**BASE, "defaults": {"v:c": 1.0}}, {}, "defaults: ['v:c'] are not in `features`"),
    ({**BASE, "features": ["v:a", "w:a"]}, {}, "['a'] appear in more than one feature view"),
    ({**BASE, "entityKey": "flower id"}, {}, "spec.features.entityKey"),
    ({**BASE, "features": []}, {}, "spec.features.features"),
    # One rule set: validate, the CRD's CEL rule and render refuse it alike (mlplane.spec.rules).
    (BASE, {"runtime": "triton"}, "`features` (online Feast lookup) is served by runtime 'kserve' only"),
])
def test_features_spec_errors_name_the_problem(features, spec, message):
    with pytest.raises(SpecError) as exc:
        _deployment(features, **spec)
    assert message in str(exc.value)


def test_defaults_keep_their_types():
    dep = _deployment({**BASE, "onMissing": "default", "defaults": {"v:a": 1.5, "v:b": "gold"}})
    assert dep.spec.features.defaults == {"v:a": 1.5, "v:b": "gold"}


@pytest.mark.parametrize(("runtime", "feature_store", "message"), [
    ("kserve", False, "set spec.featureStore.enabled: true"),
])
def test_deploy_refuses_features_the_platform_cannot_serve(tmp_path, runtime, feature_store, message):
    from mlplane.features.local import FeatureLookupError, check_deployment

    platform = load_dict({"apiVersion": "mlplane.io/v1alpha1", "kind": "Platform", "metadata": {"name": "p"},
                          "spec": {"featureStore": {"enabled": feature_store}}})
    with pytest.raises(FeatureLookupError, match=re.escape(message)):
        check_deployment(platform, tmp_path, _deployment(BASE, runtime=runtime))


def test_feature_server_process_binds_the_host_and_probes_health(tmp_path: Path):
    paths = StatePaths(tmp_path)
    spec = feature_server_process(paths, "127.0.0.1", 6570)
    assert FEATURE_STORE_COMPONENT in RESERVED_NAMES
    argv = list(spec.argv)
    assert argv[argv.index("--feature-store-yaml") + 1] == str(tmp_path / "feast" / "feature_store.yaml")
    assert argv[argv.index("--host") + 1] == "127.0.0.1" and argv[argv.index("--port") + 1] == "6570"
    assert spec.ready_url == "http://127.0.0.1:6570/health"
    assert spec.env["XDG_RUNTIME_DIR"] == str(tmp_path / "feast" / "run")  # gunicorn's socket, per platform
