"""The mlplane Kubernetes operator (kopf): reconciles ModelDeployments into KServe, KEDA and KubeRay objects.

Importing this package has no side effects: it registers no handler and reads no environment.
`python -m mlplane_operator` (:mod:`mlplane_operator.__main__`, the chart's command) reads the settings
from the environment (:mod:`mlplane_operator.config`), registers the handlers on a registry of its own
and runs kopf. Embedding or testing the operator: call :func:`register` on an own
``kopf.OperatorRegistry`` and run ``kopf.operator(registry=...)``.
"""

from mlplane_operator.config import ConfigError, OperatorConfig
from mlplane_operator.handlers import register

__all__ = ["ConfigError", "OperatorConfig", "register"]
