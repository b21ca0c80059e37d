"""The mlplane Kubernetes operator (kopf): reconciles ModelDeployments into KServe, KEDA and KubeRay objects.

`kopf run -m mlplane_operator --all-namespaces --standalone` (the chart's command) imports this
package, which registers the handlers on kopf's default registry with the settings in the
environment (:mod:`mlplane_operator.config`). Embedding or testing the operator: call
:func:`register` on an own ``kopf.OperatorRegistry`` and run ``kopf.operator(registry=...)``.
"""

import kopf

from mlplane_operator.config import ConfigError, OperatorConfig
from mlplane_operator.handlers import register

__all__ = ["ConfigError", "OperatorConfig", "register"]

register(kopf.get_default_registry(), OperatorConfig.from_env())
