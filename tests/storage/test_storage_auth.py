"""With MLflow behind basic auth, KServe's storage initializer still downloads the proxied model: as the reader.

The chart renders, per serving namespace, a Secret with `https-host` and `headers` that the model servers'
service account lists; KServe's credential builder turns it into the variable `<https-host>-headers` of the
storage initializer, and `kserve_storage` sends those headers on its HTTP download. Here the real chart is
rendered (Helm), the operator's code path writes the archive as the admin, and `kserve_storage` downloads the
rendered storageUri with the rendered headers (the host rewritten to the test server's, as everywhere in these
tests): the model loads. Without the headers the download is refused.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.parse
from pathlib import Path

import pytest
from conftest import READER, WRITER, Mlflow
from kserve_storage import Storage
from test_storage_uri import deployment, predicts_iris

from mlplane._generated import REPO_ROOT
from mlplane.k8s.resolve import resolve_served
from mlplane.spec import Platform
from mlplane_operator.mlflow_registry import ModelRegistry

sys.path.insert(0, str(REPO_ROOT / "tests" / "k8s"))
sys.path.insert(0, str(REPO_ROOT / "tests" / "charts"))
from chart_helpers import find, objects, render


def _storage_secret() -> dict[str, str]:
    values = {"mlflow": {"auth": {"enabled": True, "adminPassword": "admin-Pa55word-1",
                                  "writerUsername": WRITER[0], "writerPassword": WRITER[1],
                                  "readerUsername": READER[0], "readerPassword": READER[1]}}}
    objs = objects(render(values))
    secret = find(objs, "Secret", "mlplane-mlflow-storage")
    sa = find(objs, "ServiceAccount", "mlplane-model-server")
    assert {"name": "mlplane-mlflow-storage"} in sa["secrets"]  # what KServe reads the Secret through
    return secret["stringData"]


def test_the_storage_initializer_downloads_the_proxied_model_as_the_reader(
        auth_mlflow: Mlflow, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    applied = resolve_served(deployment("iris", "kserve"), Platform.default(), ModelRegistry(auth_mlflow.url),
                             write=True)
    uri = applied.artifact.storage_uri
    assert uri.startswith(f"{auth_mlflow.url}/api/2.0/mlflow-artifacts/artifacts/")
    storage = _storage_secret()
    assert storage["https-host"] == "mlplane-mlflow.mlplane.svc"
    headers = json.loads(storage["headers"])
    assert headers["Authorization"].startswith("Basic ")
    host = urllib.parse.urlparse(uri).hostname
    # The storage initializer has no MLflow credentials: only what KServe injects from the Secret.
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME")
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD")
    with pytest.raises(Exception, match="401|authentication failed"):
        Storage.download(uri, str(tmp_path / "anonymous"))
    monkeypatch.setenv(f"{host}-headers", storage["headers"])  # KServe: env `<https-host>-headers`
    out = Path(Storage.download(uri, str(tmp_path / "mnt-models")))
    assert (out / "MLmodel").is_file()
    predicts_iris(out)
    assert os.environ.get("MLFLOW_TRACKING_PASSWORD") is None
