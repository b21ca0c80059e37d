"""The key file as a Kubernetes Secret (pure): hashes only, for model servers to mount in a cluster.

A model server pod mounts it at :data:`MOUNT_PATH` and runs ``python -m mlplane.serving
--auth-keys-file /etc/mlplane/auth/keys.json``. The kubelet swaps a mounted Secret's files
atomically when it changes, so a revocation reaches running pods without a restart (after the
kubelet's sync period, about a minute).
"""

from __future__ import annotations

import base64
import json
from typing import Any

from mlplane.auth.keys import KeyRecord, keys_document

__all__ = ["MOUNT_PATH", "SECRET_FILE", "keys_secret"]

SECRET_FILE = "keys.json"
MOUNT_PATH = "/etc/mlplane/auth"


def keys_secret(records: list[KeyRecord], name: str = "mlplane-api-keys", namespace: str | None = None
                ) -> dict[str, Any]:
    """A ``v1/Secret`` whose ``keys.json`` is the key file of ``records``, without the supervisor's key."""
    doc = keys_document([r for r in records if not r.system])
    metadata: dict[str, Any] = {
        "name": name,
        "labels": {"app.kubernetes.io/part-of": "mlplane", "app.kubernetes.io/component": "api-keys"},
    }
    if namespace:
        metadata["namespace"] = namespace
    data = base64.b64encode(json.dumps(doc, indent=2).encode()).decode()
    return {"apiVersion": "v1", "kind": "Secret", "metadata": metadata, "type": "Opaque",
            "data": {SECRET_FILE: data}}
