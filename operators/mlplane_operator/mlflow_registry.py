"""MLflow as the operator uses it: resolve references, store Triton repositories, tag served versions.

Every failure is a `mlplane.registry.RegistryError`; `RegistryUnavailable` (MLflow did not answer)
is worth retrying, the others mean the registry said no.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mlplane import registry
from mlplane.registry import NOT_FOUND_CODES, RegistryError, RegistryUnavailable
from mlplane.spec import ModelDeployment, ModelRef
from mlplane_operator.triton import repository

T = TypeVar("T")


class ModelRegistry:
    """The MLflow tracking server + model registry at `tracking_uri`."""

    def __init__(self, tracking_uri: str) -> None:
        self.tracking_uri = tracking_uri
        self._client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    def resolve(self, ref: ModelRef) -> tuple[str, str]:
        """(registry version, artifact location) that `ref` points at now."""
        return registry.artifact_location(self.tracking_uri, ref)

    def triton_repository(self, deployment: ModelDeployment, name: str, version: str, location: str) -> str:
        """The URI of the Triton repository for `deployment` serving `name` version `version`; written once."""
        sig = registry.signature(self.tracking_uri, f"models:/{name}/{version}")
        repo = repository(deployment, version, location, sig.inputs, sig.outputs)
        mv = self._call(f"models:/{name}/{version}", lambda: self._client.get_model_version(name, version))
        run_id = mv.run_id
        if not run_id:
            raise RegistryError(f"models:/{name}/{version} was registered without a run; runtime triton stores its "
                                "model repository with the version's run: register the model from a run")
        where = f"run {run_id}"
        run = self._call(where, lambda: self._client.get_run(run_id))
        if not self._call(where, lambda: self._client.list_artifacts(run_id, repo.artifact_path)):
            with tempfile.TemporaryDirectory(prefix="mlplane-triton-") as tmp:
                for rel, text in repo.files.items():
                    path = Path(tmp, rel)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text(text, encoding="utf-8")
                self._call(where, lambda: self._client.log_artifacts(run_id, tmp, repo.artifact_path))
        return f"{run.info.artifact_uri.rstrip('/')}/{repo.artifact_path}"

    def mark_served(self, name: str, version: str, tag: str, value: str) -> None:
        """Tag `version` as served (`tag`=`value`) and remove `tag` from every other version of `name`."""
        where = f"models:/{name}"
        versions = self._call(where, lambda: self._client.search_model_versions(f"name='{name}'"))
        for mv in versions:
            if str(mv.version) != version and tag in (mv.tags or {}):
                self._untag(name, str(mv.version), tag)
            elif str(mv.version) == version and (mv.tags or {}).get(tag) != value:
                self._call(where, lambda: self._client.set_model_version_tag(name, version, tag, value))

    def unmark(self, name: str, tag: str) -> None:
        """Remove `tag` from every version of `name` (the deployment is gone)."""
        where = f"models:/{name}"
        try:
            versions = self._call(where, lambda: self._client.search_model_versions(f"name='{name}'"))
        except RegistryError as exc:
            if isinstance(exc, RegistryUnavailable):
                raise
            return  # the model itself is gone: nothing to untag
        for mv in versions:
            if tag in (mv.tags or {}):
                self._untag(name, str(mv.version), tag)

    def _untag(self, name: str, version: str, tag: str) -> None:
        self._call(f"models:/{name}/{version}", lambda: self._client.delete_model_version_tag(name, version, tag))

    @staticmethod
    def _call(what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except MlflowException as exc:
            text = str(exc.message if hasattr(exc, "message") else exc).splitlines()[0][:300]
            if exc.error_code in NOT_FOUND_CODES:
                raise RegistryError(f"{what}: {text}") from None
            raise RegistryUnavailable(f"{what}: the registry did not answer ({text})") from None
