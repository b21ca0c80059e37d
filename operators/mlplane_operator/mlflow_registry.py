"""MLflow as the operator uses it: resolve references, store serving archives, tag served versions.

Every failure is a `mlplane.registry.RegistryError`: `RegistryUnavailable` (MLflow did not answer) is
worth retrying, `ArtifactStoreError` (S3/GCS/artifact proxy/disk, with a condition reason) too,
`UnfetchableArtifact` needs a different artifact store, the others mean the registry said no. Calls
give up after `timeout_s` (the operator's `MLPLANE_REGISTRY_TIMEOUT_SECONDS`, default 10) instead of
MLflow's minutes of retries.
"""

from __future__ import annotations

from mlplane.registry import DEFAULT_TIMEOUT_S, MlflowRegistry, RegistryError, RegistryUnavailable, bound_requests


class ModelRegistry(MlflowRegistry):
    """The MLflow tracking server + model registry at `tracking_uri`."""

    def __init__(self, tracking_uri: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        bound_requests(timeout_s)
        super().__init__(tracking_uri)

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
