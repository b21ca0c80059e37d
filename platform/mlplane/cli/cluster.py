"""`mlplane cluster install|upgrade|uninstall`: the stack and mlplane's charts on a Kubernetes cluster.

Drives Helm's own engine (helm-python-sdk, no `helm` binary) through the plan in
`mlplane.k8s.helm_plan`: cert-manager, then the CRDs, then the controllers, then mlplane, each
release waiting for its objects to be ready before the next.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
import yaml

from mlplane.cli.toolkit import EXIT_INPUT, EXIT_RUNTIME, fail, out
from mlplane.k8s import helm_plan, versions
from mlplane.k8s.helm_plan import ReleaseStep, UnknownComponentError, ValuesFileError

app = typer.Typer(
    name="cluster",
    help="Install, upgrade or uninstall the stack (cert-manager, KServe, KubeRay, KEDA, Prometheus, the GPU "
    "operator) and mlplane (CRDs, operator, MLflow, serving runtimes) on a Kubernetes cluster with the "
    "embedded Helm engine, in phases; see docs/kubernetes.md.",
    no_args_is_help=True,
)
ContextOpt = typer.Option(None, "--kube-context", help="kubeconfig context (default: the current one).")
NamespaceOpt = typer.Option(helm_plan.DEFAULT_NAMESPACE, "--namespace", "-n", help="Namespace of the releases.")
ValuesOpt = typer.Option(None, "--values", "-f", help="Values file for the mlplane chart (YAML).")
DryRunOpt = typer.Option(False, "--dry-run", help="Print what would be applied; touch no cluster.")
TimeoutOpt = typer.Option(600, "--timeout", min=1, help="Seconds to wait for each release (and the operator).")
ChartsOpt = typer.Option(None, "--charts-dir", envvar="MLPLANE_CHARTS_DIR",
                         help="Directory holding the mlplane-stack, mlplane-crds and mlplane charts (default: "
                              "the charts shipped in the mlplane package).")
SkipOpt = typer.Option([], "--skip", metavar="COMPONENT",
                       help=f"Leave a component out, e.g. one the cluster already runs (repeatable; one of "
                            f"{', '.join(helm_plan.COMPONENTS)}).")
IncludeOpt = typer.Option([], "--include", metavar="COMPONENT",
                          help=f"Add an optional component (repeatable; {', '.join(sorted(helm_plan.OPTIONAL))}).")
DeleteCrdsOpt = typer.Option(False, "--delete-crds",
                             help="Also remove the CRD releases and mlplane's CRDs, and with them every "
                                  "ModelDeployment and InferenceService.")


class ClusterError(Exception):
    """A failed cluster action; `code` is the CLI's exit code (2: bad input)."""

    def __init__(self, message: str, code: int = EXIT_RUNTIME) -> None:
        super().__init__(message)
        self.code = code


def say(message: str) -> None:
    out.print(message, highlight=False, soft_wrap=True)


@contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except ClusterError as exc:
        raise fail(str(exc), exc.code) from None


def _load_values(values_file: Path | None) -> dict[str, Any]:
    try:
        return helm_plan.load_values(values_file) if values_file else {}
    except ValuesFileError as exc:
        raise ClusterError(str(exc), EXIT_INPUT) from None


# --------------------------------------------------------------------------- executor
class HelmExecutor:
    """Runs release steps with Helm configurations (kube context, release storage) per namespace.

    Release storage is Helm's: Secrets in each release's namespace, or `$HELM_DRIVER` (secret,
    configmap, memory).
    """

    def __init__(self, kube_context: str | None, *, dry_run: bool, timeout: int) -> None:
        try:
            import helm_python  # the `cluster` extra (helm-python-sdk): only these commands need Helm's engine
        except ImportError:
            raise ClusterError("mlplane cluster drives Helm's engine from the helm-python-sdk package, which is not "
                               "installed: pip install 'mlplane[cluster]'") from None
        self.helm = helm_python
        self.dry_run, self.timeout, self.context = dry_run, timeout, kube_context
        self.driver = "memory" if dry_run else os.environ.get("HELM_DRIVER") or None
        self.configs: dict[str, Any] = {}

    def config(self, namespace: str) -> Any:
        if namespace not in self.configs:
            self.configs[namespace] = self.helm.Config(kube_context=self.context, namespace=namespace,
                                                       storage_driver=self.driver)
        return self.configs[namespace]

    def check_reachable(self, namespace: str) -> None:
        """Fail before changing anything when the API server cannot be reached."""
        self._call("the cluster", self.config(namespace).check_reachable)

    def close(self) -> None:
        for config in self.configs.values():
            config.close()

    def check_values(self, step: ReleaseStep) -> None:
        """Render a local chart offline first: bad values fail here, before anything touches the cluster."""
        if not step.local:
            return
        try:
            with self.helm.Chart.load(str(step.chart)) as chart:
                chart.render(dict(step.values), name=step.release, namespace=step.namespace, is_install=True)
        except self.helm.HelmChartLoadError as exc:
            raise ClusterError(f"cannot load the chart {step.chart}: {exc} (set --charts-dir)", EXIT_INPUT) from None
        except self.helm.HelmError as exc:
            raise ClusterError(f"values for {step.release} are invalid: {exc}".strip(), EXIT_INPUT) from None

    def render_local(self, step: ReleaseStep) -> dict[str, Any]:
        """What a dry run shows for mlplane's own charts: the release rendered client-side."""
        return self._call(step.release, self.config(step.namespace).install, str(step.chart), step.release,
                          dict(step.values), namespace=step.namespace, timeout=self.timeout, dry_run="client")

    def apply(self, step: ReleaseStep, *, upgrade: bool) -> dict[str, Any]:
        """Install or upgrade one release and wait until its objects are ready."""
        kwargs: dict[str, Any] = {"namespace": step.namespace, "timeout": self.timeout}
        if step.wait:
            kwargs["wait"] = "watcher"  # kstatus: CRDs established, Deployments available, Jobs complete
        if not step.local:
            kwargs["chart_version"] = step.version
            if step.repo_url:
                kwargs["chart_repo_url"] = step.repo_url
        config = self.config(step.namespace)
        if upgrade:
            return self._call(step.release, config.upgrade, str(step.chart), step.release, dict(step.values),
                              **kwargs)
        return self._call(step.release, config.install, str(step.chart), step.release, dict(step.values),
                          create_namespace=True, **kwargs)

    def uninstall(self, step: ReleaseStep) -> None:
        self._call(step.release, self.config(step.namespace).uninstall, step.release, ignore_not_found=True,
                   wait="watcher", timeout=self.timeout)

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
            raise ClusterError(f"{release}: {message.strip()}") from None


@contextmanager
def _executor(kube_context: str | None, dry_run: bool, timeout: int) -> Iterator[HelmExecutor]:
    executor = HelmExecutor(kube_context, dry_run=dry_run, timeout=timeout)
    try:
        yield executor
    finally:
        executor.close()


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _phase_header(index: int, total: int, phase: str) -> str:
    return f"phase {index}/{total} {phase}: {versions.PHASE_PURPOSE[phase]}"


def _print_dry_run(helm: HelmExecutor, plan: list[ReleaseStep]) -> None:
    """Every phase and what it installs: mlplane's charts rendered, third-party charts named with their values."""
    grouped = helm_plan.phases(plan)
    for index, (phase, steps) in enumerate(grouped, start=1):
        _write(f"# {_phase_header(index, len(grouped), phase)}\n")
        for step in steps:
            if step.local:
                release = helm.render_local(step)
                _write(f"# Release {step.release} (chart {release.get('chart_name')} "
                       f"{release.get('chart_version')}), namespace {step.namespace}\n")
                manifest = str(release.get("manifest", "")).strip()
                _write(manifest + "\n" if manifest else "")
                continue
            _write(f"# Release {step.release} (chart {step.source}), namespace {step.namespace}; "
                   "downloaded by Helm at install time\n")
            shown = yaml.safe_dump(dict(step.values), sort_keys=False).strip() if step.values else "{}"
            _write("".join(f"#   {line}\n" for line in ["values:", *("  " + v for v in shown.splitlines())]))


def _plan(values_file: Path | None, namespace: str, charts_dir: Path | None, skip: list[str],
          include: list[str]) -> list[ReleaseStep]:
    try:
        return helm_plan.install_plan(_load_values(values_file), namespace=namespace, charts_dir=charts_dir,
                                      skip=skip, include=include)
    except (ValuesFileError, UnknownComponentError) as exc:
        raise ClusterError(str(exc), EXIT_INPUT) from None


def _run_install(upgrade: bool, kube_context: str | None, namespace: str, values_file: Path | None, dry_run: bool,
                 timeout: int, charts_dir: Path | None, skip: list[str], include: list[str]) -> None:
    plan = _plan(values_file, namespace, charts_dir, skip, include)
    with _executor(kube_context, dry_run, timeout) as helm:
        for step in plan:
            helm.check_values(step)
        if dry_run:
            _print_dry_run(helm, plan)
            return
        helm.check_reachable(namespace)
        grouped = helm_plan.phases(plan)
        for index, (phase, steps) in enumerate(grouped, start=1):
            say(_phase_header(index, len(grouped), phase))
            for step in steps:
                say(f"  {step.release}: {'upgrading' if upgrade else 'installing'} {step.source} "
                    f"in namespace {step.namespace} ...")
                release = helm.apply(step, upgrade=upgrade)
                say(f"  {step.release}: revision {release.get('revision')} {release.get('status')}, ready")
                objects = helm_plan.manifest_objects(str(release.get("manifest", "")))
                operator = helm_plan.operator_deployment(objects)
                if step.release == helm_plan.MLPLANE_RELEASE and operator:
                    say(f"  {step.release}: deployment/{operator} is ready")


@app.command()
def install(kube_context: str | None = ContextOpt, namespace: str = NamespaceOpt, values_file: Path | None = ValuesOpt,
            dry_run: bool = DryRunOpt, timeout: int = TimeoutOpt, charts_dir: Path | None = ChartsOpt,
            skip: list[str] = SkipOpt, include: list[str] = IncludeOpt) -> None:
    """Install the stack and mlplane in phases (cert-manager, CRDs, controllers, mlplane), each one ready first."""
    with _errors():
        _run_install(False, kube_context, namespace, values_file, dry_run, timeout, charts_dir, skip, include)


@app.command()
def upgrade(kube_context: str | None = ContextOpt, namespace: str = NamespaceOpt, values_file: Path | None = ValuesOpt,
            dry_run: bool = DryRunOpt, timeout: int = TimeoutOpt, charts_dir: Path | None = ChartsOpt,
            skip: list[str] = SkipOpt, include: list[str] = IncludeOpt) -> None:
    """Upgrade every release, in the install order, to these charts and values."""
    with _errors():
        _run_install(True, kube_context, namespace, values_file, dry_run, timeout, charts_dir, skip, include)


def _delete_mlplane_crds(kube_context: str | None) -> None:
    """mlplane's CRDs carry `helm.sh/resource-policy: keep`: Helm leaves them, so delete them here."""
    from kubernetes import client, config  # ~0.7 s to import: only `cluster uninstall --delete-crds` needs it
    from kubernetes.client.exceptions import ApiException  # as above

    try:
        config.load_kube_config(context=kube_context)
        api = client.ApiextensionsV1Api()
        for name in helm_plan.MLPLANE_CRDS:
            try:
                api.delete_custom_resource_definition(name)
            except ApiException as exc:
                if exc.status != 404:
                    raise ClusterError(f"cannot delete the CRD {name}: {exc.reason}") from None
    except (config.ConfigException, OSError) as exc:
        raise ClusterError(f"cannot reach the Kubernetes API server: {exc}") from None


@app.command()
def uninstall(kube_context: str | None = ContextOpt, namespace: str = NamespaceOpt, dry_run: bool = DryRunOpt,
              timeout: int = TimeoutOpt, charts_dir: Path | None = ChartsOpt, skip: list[str] = SkipOpt,
              include: list[str] = IncludeOpt, delete_crds: bool = DeleteCrdsOpt) -> None:
    """Uninstall in reverse order. CRDs, and so every ModelDeployment, stay unless --delete-crds."""
    with _errors():
        try:
            plan = helm_plan.uninstall_plan(namespace=namespace, charts_dir=charts_dir, skip=skip, include=include,
                                            delete_crds=delete_crds)
        except UnknownComponentError as exc:
            raise ClusterError(str(exc), EXIT_INPUT) from None
        kept = helm_plan.kept_crds(delete_crds)
        if dry_run:
            for step in plan:
                say(f"would uninstall release {step.release} in namespace {step.namespace}")
            if delete_crds:
                say(f"would delete the CRDs {' and '.join(helm_plan.MLPLANE_CRDS)}")
            say(f"the CRDs would stay: {kept}")
            return
        with _executor(kube_context, False, timeout) as helm:
            helm.check_reachable(namespace)
            for step in plan:
                helm.uninstall(step)
                say(f"{step.release}: uninstalled from namespace {step.namespace}")
        if delete_crds:
            _delete_mlplane_crds(kube_context)
            say(f"deleted the CRDs {' and '.join(helm_plan.MLPLANE_CRDS)}")
        say(f"kept: {kept} (delete them with kubectl delete crd)")
