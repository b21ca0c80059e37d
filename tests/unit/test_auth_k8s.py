"""The key file as a Kubernetes Secret: valid for the API server, hashes only, usable by a server as is."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from mlplane.auth import Authenticator, AuthSettings, KeyStore, RateLimit, Unauthenticated
from mlplane.auth.k8s import SECRET_FILE, keys_secret

K8S_VERSION = "1.32"


def test_secret_is_valid_and_serves_the_same_keys(tmp_path: Path):
    store = KeyStore(tmp_path / "keys.json")
    _, alice = store.create("alice", RateLimit(3.0, 4))
    _, bob = store.create("bob")
    store.revoke("bob")
    supervisor = store.issue_system_key()
    secret = keys_secret(store.list(), namespace="ml")
    assert kubernetes_validate.validate(secret, K8S_VERSION, strict=True) == K8S_VERSION
    content = base64.b64decode(secret["data"][SECRET_FILE])
    for key in (alice, bob, supervisor):
        assert key.encode() not in content and key.split("_", 2)[2].encode() not in content
    names = [k["name"] for k in json.loads(content)["keys"]]
    assert names == ["alice", "bob"]  # the local supervisor's key stays local

    mounted = tmp_path / "mounted" / SECRET_FILE
    mounted.parent.mkdir()
    mounted.write_bytes(content)
    auth = Authenticator(AuthSettings(mounted, RateLimit(10, 10)))
    assert asyncio.run(auth.authenticate(alice)).rate_limit == RateLimit(3.0, 4)
    with pytest.raises(Unauthenticated, match="revoked"):
        asyncio.run(auth.authenticate(bob))
    with pytest.raises(Unauthenticated, match="unknown API key"):
        asyncio.run(auth.authenticate(supervisor))


def test_keys_secret_command_prints_yaml(tmp_path: Path):
    KeyStore(tmp_path / "auth" / "keys.json").create("alice")
    out = subprocess.run([sys.executable, "-m", "mlplane", "keys", "secret", "--state-dir", str(tmp_path),
                          "-n", "ml"], capture_output=True, text=True, check=True)
    obj = yaml.safe_load(out.stdout)
    assert obj["kind"] == "Secret" and obj["metadata"]["namespace"] == "ml" and SECRET_FILE in obj["data"]
