"""`mlplane cluster install|upgrade|uninstall`: mlplane's charts on a Kubernetes cluster.

Drives Helm's own engine (helm-python-sdk, no `helm` binary) through the plan in
`mlplane.k8s.helm_plan`: the mlplane-crds release first, then mlplane, waiting for the operator.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from mlplane.k8s import helm_plan
from mlplane.k8s.helm_plan import ReleaseStep, ValuesFileError

app = typer.Typer(
    name="cluster",
    help="Install, upgrade or uninstall mlplane (CRDs, operator, MLflow, serving runtimes) on a Kubernetes "
    "cluster with the embedded Helm engine. Third-party operators (KServe, KEDA, ...) come from "
    "charts/mlplane-stack; see docs/kubernetes.md.",
    no_args_is_help=True,
)
out = Console()
err = Console(stderr=True)

ContextOpt = typer.Option(None, "--kube-context", help="kubeconfig context (default: the current one).")
NamespaceOpt = typer.Option(helm_plan.DEFAULT_NAMESPACE, "--namespace", "-n", help="Namespace of the releases.")
ValuesOpt = typer.Option(None, "--values", "-f", help="Values file for the mlplane chart (YAML).")
DryRunOpt = typer.Option(False, "--dry-run", help="Print what would be applied; touch no cluster.")
TimeoutOpt = typer.Option(600, "--timeout", min=1, help="Seconds to wait for each release (and the operator).")
ChartsOpt = typer.Option(None, "--charts-dir", envvar="MLPLANE_CHARTS_DIR",
                         help="Directory holding the mlplane-crds and mlplane charts (default: the charts/ "
                              "folder of the mlplane source tree).")


class ClusterError(Exception):
    """A failed cluster action; `code` is the CLI's exit code (2: bad input)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def say(message: str) -> None:
    out.print(message, highlight=False, soft_wrap=True)


def _fail(message: str, code: int) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


@contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except ClusterError as exc:
        raise _fail(str(exc), exc.code) from None


def _load_values(values_file: Path | None) -> dict[str, Any]:
    try:
        return helm_plan.load_values(values_file) if values_file else {}
    except ValuesFileError as exc:
        raise ClusterError(str(exc), 2) from None


# --------------------------------------------------------------------------- executor
class HelmExecutor:
    """Runs release steps with one Helm configuration (kube context, namespace, release storage).

    Release storage is Helm's: Secrets in the namespace, or `$HELM_DRIVER` (secret, configmap, memory).
    """

    def __init__(self, kube_context: str | None, namespace: str, *, dry_run: bool, timeout: int) -> None:
        import helm_python

        self.helm = helm_python
        self.dry_run, self.timeout, self.context = dry_run, timeout, kube_context
        driver = "memory" if dry_run else os.environ.get("HELM_DRIVER") or None
        self.config = helm_python.Config(kube_context=kube_context, namespace=namespace, storage_driver=driver)

    def close(self) -> None:
        self.config.close()

    def check_values(self, step: ReleaseStep) -> None:
        """Render the chart offline first: bad values fail here, before anything touches the cluster."""
        try:
            with self.helm.Chart.load(str(step.chart)) as chart:
                chart.render(dict(step.values), name=step.release, namespace=step.namespace, is_install=True)
        except self.helm.HelmChartLoadError as exc:
            raise ClusterError(f"cannot load the chart {step.chart}: {exc} (set --charts-dir)", 2) from None
        except self.helm.HelmError as exc:
            raise ClusterError(f"values for {step.release} are invalid: {exc}".strip(), 2) from None

    def apply(self, step: ReleaseStep, *, upgrade: bool) -> dict[str, Any]:
        """Install or upgrade one release; with --dry-run, render it client-side instead."""
        kwargs: dict[str, Any] = {"namespace": step.namespace, "timeout": self.timeout}
        if self.dry_run:  # what would be applied: the same whether the release exists or not
            return self._call(step.release, self.config.install, str(step.chart), step.release, dict(step.values),
                              dry_run="client", **kwargs)
        if step.wait:
            kwargs["wait"] = "watcher"
        if upgrade:
            return self._call(step.release, self.config.upgrade, str(step.chart), step.release, dict(step.values),
                              **kwargs)
        return self._call(step.release, self.config.install, str(step.chart), step.release, dict(step.values),
                          create_namespace=True, **kwargs)

    def uninstall(self, step: ReleaseStep) -> None:
        self._call(step.release, self.config.uninstall, step.release, ignore_not_found=True, wait="watcher",
                   timeout=self.timeout)

    def _call(self, release: str, action: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return action(*args, **kwargs)
        except self.helm.HelmKubeError as exc:
            where = f"context {self.context}" if self.context else "the current kubeconfig context"
            raise ClusterError(f"cannot reach the Kubernetes API server ({where}): {exc}") from None
        except self.helm.HelmNotFoundError:
            raise ClusterError(f"release {release} is not installed: run `mlplane cluster install` first") from None
        except self.helm.HelmError as exc:
            message = str(exc)
            if "cannot re-use a name that is still in use" in message:
                raise ClusterError(f"release {release} already exists: use `mlplane cluster upgrade`") from None
            raise ClusterError(message.strip()) from None


@contextmanager
def _executor(kube_context: str | None, namespace: str, dry_run: bool, timeout: int) -> Iterator[HelmExecutor]:
    executor = HelmExecutor(kube_context, namespace, dry_run=dry_run, timeout=timeout)
    try:
        yield executor
    finally:
        executor.close()


def _print_manifest(step: ReleaseStep, release: dict[str, Any]) -> None:
    sys.stdout.write(f"# Release {step.release} (chart {release.get('chart_name')} {release.get('chart_version')}), "
                     f"namespace {step.namespace}\n")
    manifest = str(release.get("manifest", "")).strip()
    sys.stdout.write(manifest + "\n" if manifest else "")
    sys.stdout.flush()


def _run_install(upgrade: bool, kube_context: str | None, namespace: str, values_file: Path | None, dry_run: bool,
                 timeout: int, charts_dir: Path | None) -> None:
    plan = helm_plan.install_plan(_load_values(values_file), namespace=namespace,
                                     charts_dir=charts_dir or helm_plan.DEFAULT_CHARTS_DIR)
    with _executor(kube_context, namespace, dry_run, timeout) as helm:
        for step in plan:
            helm.check_values(step)
        for step in plan:
            release = helm.apply(step, upgrade=upgrade)
            if dry_run:
                _print_manifest(step, release)
                continue
            say(f"{step.release}: revision {release.get('revision')} {release.get('status')} "
                      f"in namespace {step.namespace}")
            operator = helm_plan.operator_deployment(helm_plan.manifest_objects(str(release.get("manifest", ""))))
            if step.wait and operator:
                say(f"{step.release}: deployment/{operator} is ready")


@app.command()
def install(kube_context: str | None = ContextOpt, namespace: str = NamespaceOpt, values_file: Path | None = ValuesOpt,
            dry_run: bool = DryRunOpt, timeout: int = TimeoutOpt, charts_dir: Path | None = ChartsOpt) -> None:
    """Install the mlplane-crds release, then mlplane, and wait for the operator to be ready."""
    with _errors():
        _run_install(False, kube_context, namespace, values_file, dry_run, timeout, charts_dir)


@app.command()
def upgrade(kube_context: str | None = ContextOpt, namespace: str = NamespaceOpt, values_file: Path | None = ValuesOpt,
            dry_run: bool = DryRunOpt, timeout: int = TimeoutOpt, charts_dir: Path | None = ChartsOpt) -> None:
    """Upgrade both releases (CRDs first) to these charts and values; wait for the operator."""
    with _errors():
        _run_install(True, kube_context, namespace, values_file, dry_run, timeout, charts_dir)


@app.command()
def uninstall(kube_context: str | None = ContextOpt, namespace: str = NamespaceOpt, dry_run: bool = DryRunOpt,
              timeout: int = TimeoutOpt, charts_dir: Path | None = ChartsOpt) -> None:
    """Uninstall mlplane, then the mlplane-crds release. The CRDs and every ModelDeployment stay."""
    plan = helm_plan.uninstall_plan(namespace=namespace, charts_dir=charts_dir or helm_plan.DEFAULT_CHARTS_DIR)
    if dry_run:
        for step in plan:
            say(f"would uninstall release {step.release} in namespace {step.namespace}")
        say("the CRDs modeldeployments.mlplane.io and platforms.mlplane.io would stay "
                  "(helm.sh/resource-policy: keep)")
        return
    with _errors(), _executor(kube_context, namespace, False, timeout) as helm:
        for step in plan:
            helm.uninstall(step)
            say(f"{step.release}: uninstalled from namespace {step.namespace}")
        say("kept: the mlplane CRDs and every ModelDeployment (delete the CRDs with kubectl to remove them)")
