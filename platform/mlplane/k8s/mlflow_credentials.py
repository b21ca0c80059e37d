"""MLflow credentials of the pods mlplane renders that talk to MLflow themselves. Pure: no I/O.

With MLflow behind basic auth (the mlplane chart's `mlflow.auth.enabled`), every call but `/health` needs
a user. MLflow's client reads `MLFLOW_TRACKING_USERNAME` / `MLFLOW_TRACKING_PASSWORD`, so a pod gets
them as env vars from a Secret (`valueFrom.secretKeyRef`), never as values:

- RayService containers (head and workers; Serve places replicas on any node): the reader,
  `spec.tracking.credentials.reader`. The RAG/LLM application only reads MLflow: it pins aliases to
  versions and downloads the embedder's and generator's files (`mlplane.rag.serve_app`).
- ingestion Jobs and CronJobs: the writer, `spec.tracking.credentials.writer`. The pipeline logs a run
  per ingestion (`mlplane_pipelines.ingest`).

No credential for a kind of pod: no env (MLflow without auth).
"""

from __future__ import annotations

from typing import Any, Literal

from mlplane.spec.platform import MlflowCredentialRef, Platform

Obj = dict[str, Any]
Role = Literal["reader", "writer"]

# What MLflow's client reads (mlflow.environment_variables); the local runtime sets the same names
# (mlplane.auth.mlflow.USERNAME_ENV / PASSWORD_ENV).
USERNAME_ENV = "MLFLOW_TRACKING_USERNAME"
PASSWORD_ENV = "MLFLOW_TRACKING_PASSWORD"


def credential_env(ref: MlflowCredentialRef | None) -> list[Obj]:
    """The env vars of a container that talks to MLflow as the user of `ref`; [] without one."""
    if ref is None:
        return []
    return [{"name": name, "valueFrom": {"secretKeyRef": {"name": ref.secret, "key": key}}}
            for name, key in ((USERNAME_ENV, ref.username_key), (PASSWORD_ENV, ref.password_key))]


def platform_credential(platform: Platform, role: Role) -> MlflowCredentialRef | None:
    """The Platform's MLflow user for `role`, if it names one."""
    credentials = platform.spec.tracking.credentials
    return None if credentials is None else getattr(credentials, role)


def mlflow_env(platform: Platform, role: Role) -> list[Obj]:
    """The env vars that give a pod the Platform's MLflow user for `role` (`reader`: RayService pods,
    `writer`: ingestion Jobs); [] when the Platform names none."""
    return credential_env(platform_credential(platform, role))
