"""`python -m mlplane_operator`: the operator process (the mlplane chart's operator Deployment runs it).

    python -m mlplane_operator [--liveness URL] [--verbose | --quiet]

Reads :class:`~mlplane_operator.config.OperatorConfig` from the environment (a bad value: exit 2 with a
message naming the variable, before anything connects), registers the handlers on a registry of its
own and runs kopf on it, watching every namespace, standalone (no peering: never two operators at once),
with kopf's liveness endpoint at ``--liveness`` (default ``http://0.0.0.0:8080/healthz``, the chart's
probe). Importing :mod:`mlplane_operator` registers nothing: all of that happens here, when run.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import kopf

from mlplane_operator.config import ConfigError, OperatorConfig
from mlplane_operator.handlers import register

DEFAULT_LIVENESS = "http://0.0.0.0:8080/healthz"
EXIT_CONFIG = 2


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m mlplane_operator", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--liveness", default=DEFAULT_LIVENESS, metavar="URL",
                        help=f"kopf's liveness endpoint (default {DEFAULT_LIVENESS}); '' for none")
    level = parser.add_mutually_exclusive_group()
    level.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG")
    level.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = OperatorConfig.from_env()
    except ConfigError as exc:
        print(f"error: the operator's configuration: {exc}", file=sys.stderr)
        return EXIT_CONFIG

    kopf.configure(verbose=args.verbose, quiet=args.quiet, log_prefix=None)  # as `kopf run` configures it
    registry = kopf.OperatorRegistry()
    register(registry, config)

    # A fresh registry has none of the logins kopf's default registry brings: the kubernetes client's
    # (in-cluster service account, else a kubeconfig), which is what `kopf run` uses when it is installed.
    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_via_client(**kwargs)

    kopf.run(registry=registry, clusterwide=True, standalone=True, liveness_endpoint=args.liveness or None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
