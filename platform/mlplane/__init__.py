"""mlplane: one declarative spec for ML platforms and model deployments, two runtimes.

The public surface is small on purpose: the spec lives in :mod:`mlplane.spec`, the local
runtime in :mod:`mlplane.runtime.local`, the CLI in :mod:`mlplane.cli`.
"""

from mlplane._version import __version__

__all__ = ["__version__"]
