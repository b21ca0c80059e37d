"""The ``mlplane`` command line: a thin layer over the spec and the local runtime."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from mlplane import __version__
from mlplane.auth.mlflow import PASSWORD_ENV, read_credentials, shell_exports, use_platform_credentials
from mlplane.cli import ingest as rag_cli
from mlplane.cli.cluster import app as cluster_app
from mlplane.cli.keys import keys_app
from mlplane.cli.toolkit import (
    EXIT_RUNTIME,
    Output,
    OutputOpt,
    StateDirOpt,
    emit,
    emit_manifests,
    err,
    fail,
    out,
    output_option,
)
from mlplane.core.statedir import STATE_DIR_ENV, resolve_state_dir
from mlplane.k8s import render as render_objects
from mlplane.runtime.local import control
from mlplane.runtime.local.paths import StatePaths
from mlplane.spec import API_VERSION, ModelDeployment, Platform, SpecError, dump_yaml, load_dict, load_file
from mlplane.triton.repository import TritonRepoError

app = typer.Typer(
    name="mlplane",
    help="mlplane: one declarative spec for ML platforms and model deployments.\n\n"
    "The local runtime runs real components (MLflow, KServe V2 model servers) as supervised "
    "processes on this machine, with state under ./.mlplane (override with --state-dir or "
    f"${STATE_DIR_ENV}).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(keys_app, name="keys")
app.add_typer(cluster_app, name="cluster")


def _paths(state_dir: Path | None) -> StatePaths:
    return StatePaths(resolve_state_dir(state_dir))


def _load(file: Path) -> list[Any]:
    try:
        return load_file(file)
    except SpecError as exc:
        raise fail(str(exc)) from None


def _call(paths: StatePaths, op: str, **fields: Any) -> Any:
    try:
        return control.request(paths, op, **fields)
    except control.ControlError as exc:
        raise fail(str(exc), exc.code) from None


def _deployments_table(deps: dict[str, dict[str, Any]]) -> Table:
    t = Table(title="Deployments", title_justify="left")
    metrics = any(d.get("metrics") for d in deps.values())  # the column only when a server has metrics
    for col in ("NAME", "STATUS", "MODEL", "VERSION", "HTTP (V2)", "gRPC (V2)", *(("METRICS",) if metrics else ()),
                "RESTARTS"):
        t.add_column(col, overflow="fold")
    for name, d in deps.items():
        t.add_row(name, _status(d.get("status", "")), d.get("model", ""), str(d.get("servedVersion") or "-"),
                  d.get("url", ""), d.get("grpc", ""), *((d.get("metrics") or "-",) if metrics else ()),
                  str(d.get("restarts", 0)) + (f" ({d['reloads']} reloads)" if d.get("reloads") else ""))
    return t


def _status(s: str) -> str:
    color = {"ready": "green", "starting": "yellow", "restarting": "yellow", "reloading": "yellow",
             "failed": "red"}.get(s, "white")
    return f"[{color}]{s}[/]"


# --------------------------------------------------------------------------- commands
@app.command()
def version() -> None:
    """Print the mlplane version."""
    out.print(f"mlplane {__version__}", highlight=False)


@app.command()
def validate(
    file: Path = typer.Option(..., "--file", "-f", help="YAML file with one or more documents."),
    output: Output = OutputOpt,
) -> None:
    """Validate a spec file (Platform / ModelDeployment documents) and do nothing else.

    Exits 2 with the file, document, field path, bad value and what is allowed when invalid.
    """
    docs = _load(file)
    if output is not Output.table:
        emit([d.to_dict() for d in docs], output)
        return
    kinds = ", ".join(f"{d.kind} '{d.metadata.name}'" for d in docs)
    out.print(f"[green]valid[/]: {file} ({kinds})", highlight=False)


@app.command()
def up(
    file: Path | None = typer.Option(None, "--file", "-f", help="Platform spec (YAML). Defaults apply without it."),
    state_dir: Path | None = StateDirOpt,
    timeout: float = typer.Option(180.0, help="Seconds to wait for every component to be ready."),
    reset_state: bool = typer.Option(
        False, "--reset-state",
        help="Move state.json and ports.json aside first (kept as <file>.corrupt-<time>): a clean start when they "
             "are broken. Saved deployments, MLflow data and keys stay; processes they name are stopped, not adopted."),
    output: Output = OutputOpt,
) -> None:
    """Start the local platform (MLflow tracking server + registry, saved deployments) in the background.

    After a supervisor crash, model servers and components that still run, are ready and are unchanged are
    adopted (no restart, no failed request); what cannot be adopted is stopped and started anew.
    """
    paths = _paths(state_dir)
    platform = Platform.default()
    if file is not None:
        docs = _load(file)
        platforms = [d for d in docs if isinstance(d, Platform)]
        if len(platforms) != 1:
            raise fail(f"{file}: expected exactly one Platform document, found {len(platforms)}")
        platform = platforms[0]
    pid = control.running_supervisor(paths)
    if pid:
        raise fail(f"a platform is already running on {paths.root} (supervisor pid {pid}); "
                    "run `mlplane down` first or pass another --state-dir", EXIT_RUNTIME)
    problems: list[str] = []
    if reset_state:
        for moved in control.reset_state(paths):
            err.print(f"moved aside: {moved}", highlight=False)
    else:
        control.read_state(paths, problems)  # a broken state.json is moved aside (and reported) here
    # What a supervisor that died left running is adopted by the new one when healthy, else stopped by it.
    proc = control.start_supervisor(paths, platform)
    state = _wait_up(paths, proc, timeout)
    problems += state.get("warnings") or []
    for problem in problems:
        err.print(f"[yellow]warning:[/] {problem}", highlight=False, soft_wrap=True)
    if output is not Output.table:
        emit(state, output)
        return
    _print_summary(state)
    for name, why in (state.get("restoreErrors") or {}).items():
        err.print(f"[yellow]warning:[/] deployment {name} was not restored: {why} (its spec is kept: `mlplane status` "
                  f"lists it as failed; fix the cause and run `mlplane up` again, or `mlplane undeploy {name}`)",
                  highlight=False, soft_wrap=True)
    out.print("Deploy a model with [bold]mlplane deploy -f deployment.yaml[/]; "
              "stop everything with [bold]mlplane down[/].")


def _wait_up(paths: StatePaths, proc: Any, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    shown: set[str] = set()
    with err.status("Starting the platform…") as spinner:
        while True:
            state = control.read_state(paths) or {}
            for name, comp in {**state.get("components", {}), **state.get("deployments", {})}.items():
                label = f"{name}: {comp.get('status')}"
                spinner.update(f"Starting {name} ({comp.get('status')})…")
                if comp.get("status") == "ready" and name not in shown:
                    shown.add(name)
                    err.print(f"[green]✓[/] {label}", highlight=False)
            if state.get("phase") == "running":
                return state
            if proc.poll() is not None:
                why = state.get("error") or f"the supervisor exited with code {proc.returncode}"
                raise fail(f"the platform did not start: {why} (log: {paths.log_file('supervisor')})", EXIT_RUNTIME)
            if time.monotonic() > deadline:
                control.stop_platform(paths)
                raise fail(f"the platform was not ready after {timeout:.0f}s; see {paths.logs}", EXIT_RUNTIME)
            time.sleep(0.3)


def _print_summary(state: dict[str, Any]) -> None:
    mlflow = state.get("components", {}).get("mlflow")
    out.print(f"Platform [bold]{state.get('platform')}[/] running from {state.get('stateDir')} "
              f"(supervisor pid {state.get('supervisor', {}).get('pid')})", highlight=False)
    tracking = (mlflow or {}).get("url") or state.get("trackingUri")
    out.print(f"MLflow UI and tracking URI: [bold cyan]{tracking}[/]", highlight=False)
    for warning in state.get("warnings") or []:
        err.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    deployments = dict(state.get("deployments") or {})
    for name, why in (state.get("restoreErrors") or {}).items():  # saved but not running: never silently gone
        deployments.setdefault(name, {"status": "failed", "error": why, "model": "-"})
    if deployments:
        out.print(_deployments_table(deployments))
        for name, d in deployments.items():
            if d.get("error"):
                err.print(f"{name}: {d.get('status')}: {d['error']}", highlight=False, soft_wrap=True)
            elif d.get("lastReload"):
                err.print(f"{name}: {d['lastReload']}", highlight=False, soft_wrap=True)


@app.command()
def down(state_dir: Path | None = StateDirOpt) -> None:
    """Stop the platform and every process it started (MLflow workers included)."""
    paths = _paths(state_dir)
    was_running = control.running_supervisor(paths)
    problems: list[str] = []
    with err.status("Stopping the platform…"):
        leftovers = control.stop_platform(paths, problems=problems)
    for problem in problems:
        err.print(f"[yellow]warning:[/] {problem}; processes it named were not stopped", highlight=False,
                  soft_wrap=True)
    if leftovers:
        err.print(f"killed leftover processes: {', '.join(leftovers)}")
    if was_running or leftovers:
        out.print(f"Platform on {paths.root} stopped.", highlight=False)
    else:
        out.print(f"No platform was running on {paths.root}.", highlight=False)


@app.command()
def status(state_dir: Path | None = StateDirOpt, output: Output = OutputOpt) -> None:
    """Show the platform's components, deployments, URLs and served versions."""
    paths = _paths(state_dir)
    problems: list[str] = []
    state = control.read_state(paths, problems)
    for problem in problems:
        err.print(f"[yellow]warning:[/] {problem}", highlight=False, soft_wrap=True)
    pid = control.running_supervisor(paths)
    if pid and state is None and problems:
        raise fail(f"the supervisor (pid {pid}) runs on {paths.root} but its state file was unusable; it writes a "
                    "new one within a second: run `mlplane status` again", EXIT_RUNTIME)
    if not pid or state is None:
        if output is not Output.table:
            emit({"phase": "stopped", "stateDir": str(paths.root)}, output)
        raise fail(f"no platform is running on {paths.root}; start one with `mlplane up`", EXIT_RUNTIME)
    if output is not Output.table:
        emit(state, output)
        return
    _print_summary(state)
    t = Table(title="Components", title_justify="left")
    for col in ("NAME", "KIND", "STATUS", "PID", "URL", "RESTARTS"):
        t.add_column(col, overflow="fold")
    for name, c in state.get("components", {}).items():
        t.add_row(name, c.get("kind", ""), _status(c.get("status", "")), str(c.get("pid") or "-"),
                  c.get("url", ""), str(c.get("restarts", 0)))
    out.print(t)
    if not state.get("deployments"):
        out.print("No deployments yet: [bold]mlplane deploy -f deployment.yaml[/]")


@app.command()
def deploy(
    name: str | None = typer.Argument(None, help="Deployment name (with --model, instead of -f)."),
    file: Path | None = typer.Option(None, "--file", "-f", help="ModelDeployment spec (YAML)."),
    model: str | None = typer.Option(None, "--model", "-m",
                                     help="models:/NAME@ALIAS, models:/NAME/VERSION or a storage URI."),
    runtime: str | None = typer.Option(None, help="Serving runtime (default: the Platform's "
                                                  "serving.defaultRuntime)."),
    state_dir: Path | None = StateDirOpt,
    output: Output = OutputOpt,
) -> None:
    """Start or update a model endpoint: `deploy -f deployment.yaml` or `deploy NAME --model URI`.

    Updating the model of a running endpoint swaps it in place with no failed requests.
    """
    paths = _paths(state_dir)
    if file is not None:
        if name or model:
            raise fail("give either -f FILE or NAME --model URI, not both")
        docs = _load(file)
        deployments = [d for d in docs if isinstance(d, ModelDeployment)]
        if not deployments:
            raise fail(f"{file}: no ModelDeployment document in it")
        sources = [(d, str(file)) for d in deployments]
    elif name and model:
        data = {"apiVersion": API_VERSION, "kind": "ModelDeployment",
                "metadata": {"name": name},
                "spec": {"model": model, **({"runtime": runtime} if runtime else {})}}
        try:
            dep = load_dict(data, source="command line")
        except SpecError as exc:
            raise fail(str(exc)) from None
        assert isinstance(dep, ModelDeployment)  # the kind set above
        sources = [(dep, "command line")]
    else:
        raise fail("nothing to deploy: pass -f FILE, or NAME and --model URI")
    results = []
    for dep, source in sources:
        with err.status(f"Deploying {dep.metadata.name} ({dep.spec.model})…"):
            results.append(_call(paths, "deploy", name=dep.metadata.name, yaml=dump_yaml([dep]), source=source))
    if output is not Output.table:
        emit(results, output)
        return
    out.print(_deployments_table({r["name"]: r for r in results}))


@app.command()
def undeploy(name: str = typer.Argument(..., help="Deployment name."),
             state_dir: Path | None = StateDirOpt) -> None:
    """Stop a model endpoint and forget it."""
    _call(_paths(state_dir), "undeploy", name=name)
    out.print(f"Deployment {name} removed.", highlight=False)


@app.command()
def promote(
    name: str = typer.Argument(..., help="Deployment name."),
    to_version: str = typer.Option(..., "--version", help="Registry version to serve."),
    state_dir: Path | None = StateDirOpt,
    output: Output = OutputOpt,
) -> None:
    """Serve another registry version: moves the deployment's MLflow alias (or pins the version),
    loads the new version next to the old one, switches, then drops the old one — no failed requests.
    """
    if not to_version.isdigit() or int(to_version) < 1:
        raise fail(f"--version: got {to_version!r}; expected a positive integer registry version")
    with err.status(f"Promoting {name} to version {to_version}…"):
        result = _call(_paths(state_dir), "promote", name=name, version=to_version)
    if output is not Output.table:
        emit(result, output)
        return
    out.print(f"{name}: version {result.get('previousVersion')} → {result.get('servedVersion')} "
              f"({result.get('model')})", highlight=False)


@app.command()
def render(
    file: Path | None = typer.Option(None, "--file", "-f",
                                     help="ModelDeployment spec(s) (YAML); a Platform document in it applies."),
    platform_file: Path | None = typer.Option(None, "--platform",
                                              help="Platform spec (YAML) for GPU pool and serving defaults."),
    ingest: str | None = typer.Option(
        None, "--ingest", metavar="COLLECTION",
        help="Instead of deployments: the ingestion Job (and CronJob, with a schedule) of this collection of the "
             "Platform's spec.vectorStore.collections (needs --platform)."),
    tracking_uri: str | None = typer.Option(
        None, "--tracking-uri", envvar="MLFLOW_TRACKING_URI",
        help="MLflow that resolves models:/ references (default: the running local platform's)."),
    gpu_headroom: int | None = typer.Option(
        None, min=0, help="GPUs free for a surge pod during rolling updates (default: the platform's gpuHeadroom)."),
    registry_timeout: float = typer.Option(
        10.0, "--registry-timeout", min=0.1,
        help="Seconds each MLflow call may take before render gives up (no retries)."),
    state_dir: Path | None = StateDirOpt,
    output: Output = output_option(Output.yaml),
) -> None:
    """Print the Kubernetes objects for deployments: exactly what the operator applies (less its owner references).

    models:/NAME@ALIAS and models:/NAME/VERSION resolve in MLflow the way the operator resolves them
    (mlplane.k8s.resolve): storageUri is a location KServe's storage initializer downloads: the version's
    s3:// or gs:// location, or, with MLflow proxying artifacts, the HTTP URL of an archive the operator
    stores with the version's run (runtime triton: its generated model repository). Render writes nothing;
    a note on stderr says when the archive does not exist yet.
    The KEDA scale-down window is at least the model's cold start: spec.coldStartSeconds, or, when
    unset, the start-to-ready time the local runtime measured for the deployment (state dir).
    With --ingest COLLECTION --platform FILE: the collection's ingestion Job and CronJob instead.
    """
    from mlplane import registry  # mlflow: seconds to import, only this command needs it
    from mlplane.k8s.resolve import in_cluster, resolve_served  # imports mlplane.registry (mlflow)

    if ingest is not None:
        emit_manifests(rag_cli.render_ingest_objects(ingest, platform_file), output)
        return
    if file is None:
        raise fail("give --file (deployments) or --ingest COLLECTION --platform FILE")
    docs = _load(file)
    platforms = [d for d in (_load(platform_file) if platform_file else docs) if isinstance(d, Platform)]
    if len(platforms) > 1:
        raise fail("more than one Platform document given; keep one")
    platform = platforms[0] if platforms else Platform.default()
    deployments = [d for d in docs if isinstance(d, ModelDeployment)]
    if not deployments:
        raise fail(f"{file}: no ModelDeployment document in it")
    objects: list[dict[str, Any]] = []
    state = control.read_state(_paths(state_dir)) or {}
    for dep in deployments:
        uri = tracking_uri
        if dep.model_ref.kind != "uri" and not uri:
            uri = state.get("trackingUri")
            if uri:  # the platform's MLflow: its credentials when auth is on
                use_platform_credentials(state_dir)
            if not uri:
                raise fail(f"{dep.metadata.name}: {dep.spec.model} needs an MLflow registry: pass --tracking-uri, "
                            "set MLFLOW_TRACKING_URI, or run `mlplane up`", EXIT_RUNTIME)
        registry.bound_requests(registry_timeout)
        client = registry.MlflowRegistry(uri) if uri else None
        cluster_platform = in_cluster(platform, uri)  # the pods reach MLflow where render resolved (the operator's)
        try:
            resolution = resolve_served(dep, cluster_platform, client, write=False)
        except (registry.UnfetchableArtifact, TritonRepoError) as exc:
            raise fail(f"{dep.metadata.name}: {exc}") from None
        except registry.RegistryUnavailable as exc:
            raise fail(f"MLflow at {uri} did not answer within {registry_timeout:g}s: {exc}; check that the URI is "
                        "right and MLflow runs (or raise --registry-timeout)", EXIT_RUNTIME) from None
        except registry.RegistryError as exc:
            raise fail(str(exc), EXIT_RUNTIME) from None
        if resolution.note:
            err.print(f"note: {dep.metadata.name}: {resolution.note}", highlight=False, soft_wrap=True)
        measured = (state.get("deployments", {}).get(dep.metadata.name) or {}).get("coldStartSeconds")
        try:
            objects += render_objects(dep, cluster_platform, resolution.artifact, gpu_headroom=gpu_headroom,
                                      measured_cold_start_seconds=measured)
        except ValueError as exc:  # e.g. spec.features on a platform whose feature store cannot serve them
            raise fail(str(exc)) from None
    emit_manifests(objects, output)


@app.command("env")
def env_command(state_dir: Path | None = StateDirOpt) -> None:
    """Print shell exports for the platform's MLflow: `eval "$(mlplane env)"` before logging models.

    MLFLOW_TRACKING_URI and MLFLOW_REGISTRY_URI, and with spec.auth.enabled the platform's MLflow user
    (MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD, from <state-dir>/auth/mlflow.env). On a
    terminal the password is masked: it is meant for `eval`, not for the screen.
    """
    paths = _paths(state_dir)
    state = control.read_state(paths) or {}
    values: dict[str, str] = {}
    if state.get("trackingUri"):
        values.update(MLFLOW_TRACKING_URI=state["trackingUri"], MLFLOW_REGISTRY_URI=state["trackingUri"])
    creds = read_credentials(paths.root)
    if creds is not None:
        values.update(creds.env())
    if not values:
        raise fail(f"no platform in {paths.root}: run `mlplane up` first", EXIT_RUNTIME)
    if sys.stdout.isatty() and PASSWORD_ENV in values:
        values[PASSWORD_ENV] = "********"
        err.print('note: the password is masked on a terminal; run `eval "$(mlplane env)"`', highlight=False)
    sys.stdout.write(shell_exports(values))


@app.command()
def logs(
    component: str = typer.Argument("supervisor", help="mlflow, supervisor, or a deployment name."),
    lines: int = typer.Option(50, "--tail", "-n", help="Lines to show from the end."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new lines."),
    state_dir: Path | None = StateDirOpt,
) -> None:
    """Show a component's log."""
    paths = _paths(state_dir)
    path = paths.log_file(component)
    if not path.exists():
        known = sorted(p.stem for p in paths.logs.glob("*.log")) if paths.logs.exists() else []
        raise fail(f"no log for '{component}' in {paths.logs} (known: {', '.join(known) or 'none'})", EXIT_RUNTIME)
    with path.open("r", errors="replace") as f:
        for line in f.readlines()[-lines:]:
            sys.stdout.write(line)
        sys.stdout.flush()
        while follow:
            line = f.readline()
            if line:
                sys.stdout.write(line)
                sys.stdout.flush()
            else:
                time.sleep(0.3)


app.command("ingest")(rag_cli.ingest)
app.command("eval")(rag_cli.rag_eval)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
