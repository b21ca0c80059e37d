"""`make demo`: a real platform on this machine, a model trained, registered, deployed and called.

1. `mlplane up`                 MLflow tracking server + registry as a supervised process
2. train + register             scikit-learn on the iris data set, alias `champion`
3. `mlplane deploy -f ...`      a KServe V2 model server (HTTP + gRPC) for models:/iris@champion
4. V2 requests                  tritonclient over HTTP and gRPC
The platform keeps running afterwards; `mlplane down` stops it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
MLPLANE = [sys.executable, "-m", "mlplane"]

sys.path.insert(0, str(HERE))
from client import SAMPLES, SPECIES, infer_grpc, infer_http  # noqa: E402


def mlplane(*args: str, capture: bool = False) -> str:
    proc = subprocess.run([*MLPLANE, *args], cwd=ROOT, text=True,
                          stdout=subprocess.PIPE if capture else None)
    if proc.returncode != 0:
        sys.exit(f"`mlplane {' '.join(args)}` failed with exit code {proc.returncode}")
    return proc.stdout or ""


def step(title: str) -> None:
    print(f"\n\033[1m==> {title}\033[0m", flush=True)


def main() -> None:
    step("mlplane up")
    already = subprocess.run([*MLPLANE, "status", "-o", "json"], cwd=ROOT, capture_output=True, text=True)
    if already.returncode == 0:
        print("A platform is already running here; reusing it.")
    else:
        mlplane("up", "-f", str(HERE / "platform.yaml"))
    state = json.loads(mlplane("status", "-o", "json", capture=True))
    tracking_uri = state["trackingUri"]
    # With spec.auth.enabled, MLflow needs the platform's credentials (what `eval "$(mlplane env)"` sets).
    from mlplane.auth.mlflow import use_platform_credentials

    use_platform_credentials(Path(state["stateDir"]))

    step("Train a scikit-learn classifier, log it to MLflow and register it as iris@champion")
    from mlplane_pipelines.iris import train_and_register

    reg = train_and_register(tracking_uri, name="iris", C=1.0, alias="champion")
    print(f"registered iris version {reg.version} (test accuracy {reg.accuracy:.3f}); alias champion -> {reg.version}")

    step("mlplane deploy -f examples/iris/deployment.yaml")
    mlplane("deploy", "-f", str(HERE / "deployment.yaml"))
    dep = json.loads(mlplane("status", "-o", "json", capture=True))["deployments"]["iris"]
    http_url = dep["url"].removeprefix("http://")

    step("KServe V2 requests with tritonclient")
    print(f"features: {SAMPLES.tolist()}")
    for proto, fn, url in (("HTTP", infer_http, http_url), ("gRPC", infer_grpc, dep["grpc"])):
        classes, version = fn(url, "iris", SAMPLES)
        print(f"  {proto:4} {url}: served version {version} -> {[SPECIES[int(c)] for c in classes]}")

    step("Done")
    print(f"MLflow UI:          {tracking_uri}")
    print(f"V2 HTTP endpoint:   {dep['url']}/v2/models/iris/infer")
    print(f"V2 gRPC endpoint:   {dep['grpc']}")
    print(f"Served version:     {dep['servedVersion']} ({dep['model']})")
    print("The platform keeps running. Try `.venv/bin/mlplane status`, then stop it with `.venv/bin/mlplane down`.")


if __name__ == "__main__":
    main()
