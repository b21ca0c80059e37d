"""``mlplane keys``: create, list and revoke the API keys of model endpoints (``spec.auth``)."""

from __future__ import annotations

import math
from pathlib import Path

import typer
from rich.table import Table

from mlplane.auth import KeyStore, KeyStoreError, RateLimit
from mlplane.auth.k8s import keys_secret
from mlplane.cli.toolkit import EXIT_RUNTIME, Output, StateDirOpt, emit, emit_manifests, err, fail, out, output_option
from mlplane.core.statedir import resolve_state_dir
from mlplane.runtime.local.paths import StatePaths

keys_app = typer.Typer(
    name="keys",
    help="Create, list and revoke API keys for model endpoints (used when the platform's spec.auth.enabled "
    "is true). The key file keeps hashes only; running servers pick up changes on their next request.",
    no_args_is_help=True,
)


def _store(state_dir: Path | None) -> KeyStore:
    return KeyStore(StatePaths(resolve_state_dir(state_dir)).auth_keys_file)


def _limit_text(limit: dict | None) -> str:
    return "platform default" if limit is None else f"{limit['requestsPerSecond']:g}/s, burst {limit['burst']}"


@keys_app.command()
def create(
    name: str = typer.Argument(..., help="A name for the key (who or what uses it), unique among active keys."),
    rps: float | None = typer.Option(None, "--rps", help="Requests per second for this key "
                                     "(default: the platform's spec.auth.rateLimit)."),
    burst: int | None = typer.Option(None, "--burst", help="Burst for this key (default: --rps rounded up, "
                                     "or the platform's)."),
    state_dir: Path | None = StateDirOpt,
) -> None:
    """Create a key and print it once: store it now, it cannot be shown again."""
    limit = None
    if rps is not None or burst is not None:
        if rps is None:
            raise fail("--burst needs --rps (a key's limit is both)")
        if not rps > 0:
            raise fail(f"--rps: got {rps:g}; expected a number > 0")
        burst = burst if burst is not None else max(1, math.ceil(rps))
        if burst < 1:
            raise fail(f"--burst: got {burst}; expected an integer >= 1")
        limit = RateLimit(rps, burst)
    try:
        record, key = _store(state_dir).create(name, limit)
    except KeyStoreError as exc:
        raise fail(str(exc)) from None
    err.print(f"Created key [bold]{record.name}[/] (id {record.id}, rate limit "
              f"{_limit_text(record.public()['rateLimit'])}). Store it now; it is not shown again:", highlight=False)
    print(key)


@keys_app.command("list")
def list_keys(
    state_dir: Path | None = StateDirOpt,
    output: Output = output_option(),
) -> None:
    """List keys: id, name, created, revoked, rate limit (never the keys or their hashes)."""
    try:
        records = [r.public() for r in _store(state_dir).list()]
    except KeyStoreError as exc:
        raise fail(str(exc), EXIT_RUNTIME) from None
    if output is not Output.table:
        emit(records, output)
        return
    if not records:
        out.print("No API keys yet: [bold]mlplane keys create NAME[/]")
        return
    t = Table(title="API keys", title_justify="left")
    for col in ("ID", "NAME", "CREATED", "REVOKED", "RATE LIMIT"):
        t.add_column(col, overflow="fold")
    for r in records:
        limit = "none (supervisor)" if r["system"] else _limit_text(r["rateLimit"])
        t.add_row(r["id"], r["name"], r["created"], r["revoked"] or "-", limit)
    out.print(t)


@keys_app.command()
def revoke(
    key: str = typer.Argument(..., help="The key's id or name."),
    state_dir: Path | None = StateDirOpt,
) -> None:
    """Revoke a key: servers refuse it (401) from their next request on."""
    try:
        record, changed = _store(state_dir).revoke(key)
    except KeyStoreError as exc:
        raise fail(str(exc)) from None
    state = "revoked" if changed else f"was already revoked at {record.revoked}"
    out.print(f"Key {record.id} ({record.name}) {state}.", highlight=False)


@keys_app.command()
def secret(
    name: str = typer.Option("mlplane-api-keys", help="Secret name."),
    namespace: str | None = typer.Option(None, "--namespace", "-n", help="Secret namespace."),
    state_dir: Path | None = StateDirOpt,
    output: Output = output_option(Output.yaml),
) -> None:
    """Print the keys as a Kubernetes Secret (hashes only) for model servers in a cluster: pipe it to
    `kubectl apply -f -`; servers mount it at /etc/mlplane/auth and re-read it when it changes.
    """
    try:
        obj = keys_secret(_store(state_dir).list(), name, namespace)
    except KeyStoreError as exc:
        raise fail(str(exc), EXIT_RUNTIME) from None
    emit_manifests(obj, output)
