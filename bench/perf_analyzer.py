"""Triton's ``perf_analyzer`` (a C++ load generator) for the benchmarks: find it, install it, and run one
fixed-window measurement that returns throughput and p50 latency.

    .venv/bin/python bench/perf_analyzer.py            # say where it is, or what is missing
    .venv/bin/python bench/perf_analyzer.py --install  # fetch it into the cache (below)

A Python load generator (tritonclient, one thread per client) saturates a small machine's CPUs before a
fast server does; ``perf_analyzer`` drives the same concurrency from C++ threads. It is not a dependency
of mlplane: the tritonclient 2.51.0 wheel (the release of the tritonserver that nvidia-pytriton 0.7.0
ships) carries it as ``bin/perf_analyzer``, while the tritonclient in the virtualenv is newer and does
not. Where it is looked for, first found wins:

* ``$PERF_ANALYZER``: a path to the binary;
* ``perf_analyzer`` in the virtualenv's ``bin`` or on ``PATH`` (where an installed tritonclient <= 2.51 puts it);
* the cache, ``$XDG_CACHE_HOME/mlplane-bench`` (default ``~/.cache/mlplane-bench``), which ``--install``
  fills with ``pip download tritonclient==2.51.0`` (the binary out of the wheel, nothing installed).

It links two libraries it finds in ``$PERF_ANALYZER_LIBS`` (directories, ``:``-separated), the cache's
``lib``, ``LD_LIBRARY_PATH`` or the system: ``libb64.so.0d`` (``apt-get install -y libb64-0d``) and
``libcudart.so.12`` (loaded, never used: no GPU needed; the ``lib`` directory of the
``nvidia-cuda-runtime-cu12`` wheel has it). ``--install`` copies both from the nvidia-pytriton wheel,
which bundles them, when the system lacks them.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import io
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Measurement", "PerfAnalyzer", "PerfAnalyzerMissing", "cache_dir", "find_perf_analyzer",
           "install", "measure_argv", "parse_csv"]

VERSION = "2.51.0"
WHEEL = f"tritonclient=={VERSION}"
LIBRARIES = {  # soname: (what provides it, file name in the nvidia-pytriton wheel's .libs, without hash)
    "libb64.so.0d": ("apt-get install -y libb64-0d", ("libb64-", ".so.0d")),
    "libcudart.so.12": ("the lib directory of the nvidia-cuda-runtime-cu12 wheel in $PERF_ANALYZER_LIBS",
                        ("libcudart-", ".so.12")),
}


class PerfAnalyzerMissing(RuntimeError):
    """perf_analyzer, or a library it needs, is not here; the message says what to install."""


@dataclass(frozen=True)
class Measurement:
    throughput: float  #: requests per second over the measured windows
    p50_ms: float  #: client-side p50 latency
    #: the server's own time per request (its statistics: compute input + infer + output, µs), 0 when not reported
    compute_us: float = 0.0


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mlplane-bench" / f"perf_analyzer-{VERSION}"


def _candidates() -> list[Path]:
    found = [Path(sys.prefix) / "bin" / "perf_analyzer"]
    on_path = shutil.which("perf_analyzer")
    if on_path:
        found.append(Path(on_path))
    return [*found, cache_dir() / "bin" / "perf_analyzer"]


def _library_dirs() -> list[Path]:
    dirs = [Path(d) for d in os.environ.get("PERF_ANALYZER_LIBS", "").split(os.pathsep) if d]
    return [*dirs, cache_dir() / "lib"]


def _missing_libraries(binary: Path, env: Mapping[str, str]) -> list[str]:
    """The sonames the dynamic loader cannot find for ``binary`` under ``env`` (``ldd``)."""
    ldd = shutil.which("ldd")
    if ldd is None:
        return []  # the --version check below still fails with the loader's own message
    out = subprocess.run([ldd, str(binary)], env=dict(env), capture_output=True, text=True, timeout=60).stdout
    return [line.split("=>")[0].strip() for line in out.splitlines() if "not found" in line]


def _how_to_install(missing: Sequence[str]) -> str:
    fixes = [f"{name}: {LIBRARIES[name][0]}" if name in LIBRARIES else name for name in missing]
    return (f"perf_analyzer cannot load {', '.join(missing)} ({'; '.join(fixes)}), or run "
            "`.venv/bin/python bench/perf_analyzer.py --install`, which copies them from the nvidia-pytriton wheel")


@dataclass(frozen=True)
class PerfAnalyzer:
    binary: Path
    env: Mapping[str, str]  #: the environment it runs in (LD_LIBRARY_PATH with its libraries)

    def run(self, argv: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.binary), *argv], env=dict(self.env), capture_output=True, text=True,
                              timeout=timeout)

    def measure(self, model: str, address: str, protocol: str, concurrency: int, seconds: float, *,
                input_data: Path, shape: str | None = None, headers: Mapping[str, str] | None = None,
                timeout: float = 300) -> Measurement:
        """One measurement of ``model`` at ``address`` (``host:port``) over ``protocol`` (``http`` or ``grpc``)
        at ``concurrency`` synchronous clients: three windows of ``seconds / 3`` each, merged."""
        with tempfile.TemporaryDirectory(prefix="mlplane-perf-analyzer-") as tmp:
            out = Path(tmp) / "out.csv"
            argv = measure_argv(model, address, protocol, concurrency, seconds, input_data=input_data,
                                shape=shape, headers=headers, csv_file=out)
            proc = self.run(argv, timeout)
            if proc.returncode != 0 or not out.exists():
                tail = (proc.stdout + proc.stderr).strip()[-2000:]
                raise RuntimeError(f"perf_analyzer on {model} ({protocol}, {address}, concurrency {concurrency}) "
                                   f"exited {proc.returncode}:\n{tail}")
            return parse_csv(out.read_text())


def measure_argv(model: str, address: str, protocol: str, concurrency: int, seconds: float, *, input_data: Path,
                 csv_file: Path, shape: str | None = None, headers: Mapping[str, str] | None = None) -> list[str]:
    """perf_analyzer's arguments for one fixed measurement. Fixed windows instead of its stabilisation
    search (which took minutes under load here): ``time_windows`` of ``seconds / 3``, the three windows its
    stability check needs, a stability threshold it always meets, so it reports those three merged."""
    if protocol not in ("http", "grpc"):
        raise ValueError(f"protocol must be 'http' or 'grpc', not {protocol!r}")
    if concurrency < 1 or seconds <= 0:
        raise ValueError(f"concurrency must be >= 1 and seconds > 0 (got {concurrency}, {seconds})")
    window_ms = max(100, round(seconds * 1000 / 3))
    argv = ["-m", model, "-u", address, "-i", protocol, "--sync", f"--concurrency-range={concurrency}:{concurrency}",
            "--measurement-mode=time_windows", f"--measurement-interval={window_ms}", "--max-trials=3",
            "--stability-percentage=10000", f"--input-data={input_data}", "-f", str(csv_file)]
    if shape:
        argv += ["--shape", shape]
    for name, value in (headers or {}).items():
        argv += ["-H", f"{name}:{value}"]
    return argv


def parse_csv(text: str) -> Measurement:
    """Throughput (``Inferences/Second``), ``p50 latency`` (µs → ms) and the server's compute time per request
    (``Server Compute Input/Infer/Output``, µs) of perf_analyzer's ``-f`` CSV: the first row (one concurrency
    level per run)."""
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows:
        raise ValueError(f"perf_analyzer's CSV has no measurement row:\n{text[:500]}")
    row = rows[0]
    for column in ("Inferences/Second", "p50 latency"):
        if column not in row:
            raise ValueError(f"perf_analyzer's CSV has no {column!r} column (columns: {', '.join(row)})")
    compute = sum(float(row.get(f"Server Compute {part}") or 0) for part in ("Input", "Infer", "Output"))
    return Measurement(throughput=float(row["Inferences/Second"]), p50_ms=float(row["p50 latency"]) / 1000.0,
                       compute_us=compute)


def find_perf_analyzer() -> PerfAnalyzer:
    """The binary and the environment it loads in; :class:`PerfAnalyzerMissing` says what to install."""
    explicit = os.environ.get("PERF_ANALYZER")
    if explicit:
        binary = Path(explicit)
        if not (binary.is_file() and os.access(binary, os.X_OK)):
            raise PerfAnalyzerMissing(f"PERF_ANALYZER={explicit} is not an executable file")
    else:
        found = [p for p in _candidates() if p.is_file() and os.access(p, os.X_OK)]
        if not found:
            raise PerfAnalyzerMissing(
                "perf_analyzer not found (looked in $PERF_ANALYZER, the virtualenv, PATH and "
                f"{cache_dir() / 'bin'}): run `.venv/bin/python bench/perf_analyzer.py --install` "
                f"(pip-downloads the {WHEEL} wheel, which ships it) or set PERF_ANALYZER")
        binary = found[0]
    path = [str(d) for d in _library_dirs() if d.is_dir()]
    path += [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    env = {**os.environ, "LD_LIBRARY_PATH": os.pathsep.join(path)}
    missing = _missing_libraries(binary, env)
    if missing:
        raise PerfAnalyzerMissing(_how_to_install(missing))
    proc = subprocess.run([str(binary), "--version"], env=env, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise PerfAnalyzerMissing(f"{binary} --version exited {proc.returncode}: {(proc.stdout + proc.stderr).strip()}")
    return PerfAnalyzer(binary=binary, env=env)


def _pytriton_libs() -> Path | None:
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        return None
    libs = Path(next(iter(spec.submodule_search_locations))).parent / "nvidia_pytriton.libs"
    return libs if libs.is_dir() else None


def install(log=print) -> PerfAnalyzer:
    """Fill :func:`cache_dir`: the binary out of the pip-downloaded tritonclient wheel, and the libraries
    the system lacks copied from nvidia-pytriton's bundled ones. Returns :func:`find_perf_analyzer`."""
    target = cache_dir()
    binary = target / "bin" / "perf_analyzer"
    if not binary.exists():
        with tempfile.TemporaryDirectory(prefix="mlplane-perf-analyzer-") as tmp:
            log(f"pip download {WHEEL} (the wheel only, nothing is installed)")
            proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                                   "--disable-pip-version-check", "-q", "-d", tmp, WHEEL],
                                  capture_output=True, text=True, timeout=600)
            wheels = list(Path(tmp).glob("tritonclient-*.whl"))
            if proc.returncode != 0 or not wheels:
                raise PerfAnalyzerMissing(f"pip download {WHEEL} failed (exit {proc.returncode}): "
                                          f"{(proc.stdout + proc.stderr).strip()[-1500:]}\nDownload that wheel "
                                          "yourself and set PERF_ANALYZER to its .data/data/bin/perf_analyzer")
            with zipfile.ZipFile(wheels[0]) as wheel:
                member = next((n for n in wheel.namelist() if n.endswith(".data/data/bin/perf_analyzer")), None)
                if member is None:
                    raise PerfAnalyzerMissing(f"{wheels[0].name} has no bin/perf_analyzer")
                binary.parent.mkdir(parents=True, exist_ok=True)
                partial = binary.with_suffix(".partial")
                with wheel.open(member) as src, open(partial, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                partial.chmod(0o755)
                partial.replace(binary)
        log(f"perf_analyzer {VERSION} -> {binary}")
    env = {**os.environ, "LD_LIBRARY_PATH": os.pathsep.join(
        [str(d) for d in _library_dirs() if d.is_dir()] + [os.environ.get("LD_LIBRARY_PATH", "")])}
    missing = _missing_libraries(binary, env)
    if missing:
        libs = _pytriton_libs()
        lib_dir = target / "lib"
        lib_dir.mkdir(parents=True, exist_ok=True)
        for name in missing:
            if name not in LIBRARIES or libs is None:
                continue  # find_perf_analyzer names what is still missing
            prefix, suffix = LIBRARIES[name][1]
            bundled = sorted(libs.glob(f"{prefix}*{suffix}*"))
            if not bundled:
                continue
            shutil.copy2(bundled[0], lib_dir / name)
            log(f"{name} <- {bundled[0]}")
    return find_perf_analyzer()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--install", action="store_true", help=f"fetch perf_analyzer into {cache_dir()}")
    args = parser.parse_args()
    try:
        pa = install() if args.install else find_perf_analyzer()
    except PerfAnalyzerMissing as exc:
        sys.exit(str(exc))
    print(f"perf_analyzer: {pa.binary} (LD_LIBRARY_PATH={pa.env['LD_LIBRARY_PATH']})")


if __name__ == "__main__":
    main()
