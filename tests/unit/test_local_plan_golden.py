"""`mlplane.runtime.local.local_plan.plan_deployment`: spec → the local plan (process, files, version switch),
pinned by golden files as `mlplane.k8s.render` is (tests/golden/render). The cases are the examples a user
runs (examples/*), plus Triton and auth variants; the resolution is the one every consumer uses.

Update after a reviewed change: `MLPLANE_UPDATE_GOLDEN=1 pytest tests/unit/test_local_plan_golden.py`.
"""

from __future__ import annotations

import difflib
import os
import re
import site
import sys
import sysconfig
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlplane.core.signature import TensorMeta
from mlplane.resolution import ResolvedModel, Signature, resolve_model
from mlplane.runtime.local.local_plan import LocalPlan, PlanError, plan_deployment, port_keys
from mlplane.runtime.local.paths import StatePaths
from mlplane.runtime.local.runtimes import ServingContext, find_triton
from mlplane.spec import ModelDeployment, Platform, load_file
from mlplane.spec.modelref import ModelRef

REPO_ROOT = Path(__file__).resolve().parents[2]
GOLDEN_DIR = REPO_ROOT / "tests" / "golden" / "local"
UPDATE_GOLDEN = os.environ.get("MLPLANE_UPDATE_GOLDEN") == "1"
STATE = StatePaths(Path("/var/lib/mlplane/state"))  # planning touches no file: any path does
TRACKING = "http://127.0.0.1:5000"


def example(name: str) -> tuple[Platform, ModelDeployment]:
    (platform,) = load_file(REPO_ROOT / "examples" / name / "platform.yaml")
    (dep,) = load_file(REPO_ROOT / "examples" / name / "deployment.yaml")
    assert isinstance(platform, Platform) and isinstance(dep, ModelDeployment)
    return platform, dep


def variant(platform: Platform, dep: ModelDeployment, platform_spec: dict[str, Any] | None = None,
            spec: dict[str, Any] | None = None, drop: tuple[str, ...] = ()) -> tuple[Platform, ModelDeployment]:
    """The example with some of its fields replaced, validated as a user's file would be."""
    p = platform.to_dict()
    for key, value in (platform_spec or {}).items():
        p["spec"][key] = {**p["spec"].get(key, {}), **value}
    d = dep.model_dump(mode="json", by_alias=True, exclude_unset=True)
    d["spec"].update(spec or {})
    for field in drop:
        d["spec"].pop(field, None)
    return Platform.model_validate(p), ModelDeployment.model_validate(d)


CASES: dict[str, tuple[Platform, ModelDeployment]] = {
    "kserve-iris": example("iris"),
    "kserve-features": example("features"),
    "kserve-auth": variant(*example("iris"), platform_spec={"auth": {"enabled": True}}),
    "triton-batching": variant(*example("iris"), spec={"runtime": "triton", "instances": 2,
                                                       "batching": {"maxBatchSize": 16, "maxLatencyMs": 2}}),
    # No spec.runtime: the Platform's serving.defaultRuntime decides, as in the cluster.
    "default-runtime-triton": variant(*example("iris"), platform_spec={"serving": {"defaultRuntime": "triton"}},
                                      drop=("runtime",)),
    "ray-rag": example("rag"),
}


class RegistryState:
    """A registry as data: every reference points at version 3; an iris-shaped signature."""

    tracking_uri = TRACKING

    def resolve(self, ref: ModelRef) -> tuple[str, str]:
        return "3", f"file:///var/lib/mlplane/state/mlflow/artifacts/1/models/m-{ref.name}/artifacts"

    def signature(self, model_uri: str, location: str = "") -> Signature:
        inputs = [TensorMeta(n, "FP64", (-1,)) for n in ("sepal_length", "sepal_width", "petal_length",
                                                           "petal_width")]
        return Signature(inputs, [TensorMeta("output-0", "INT64", (-1,))])


def planned(case: str) -> LocalPlan:
    platform, dep = CASES[case]
    resolved = resolve_model(dep, platform, RegistryState())
    ports = {key: 41000 + i for i, key in enumerate(port_keys(dep, platform))}
    ctx = ServingContext(STATE, TRACKING, platform, vector_store_uri="http://127.0.0.1:19530",
                         control_key="control-key-for-the-golden-files", cpus=2)
    return plan_deployment(dep, platform, resolved, ports, ctx)


def machine_paths() -> list[tuple[str, str]]:
    """This machine's paths in a plan (the interpreter, Triton's wheel), as placeholders: longest first."""
    subs = [(sys.executable, "$PYTHON"), (str(sysconfig.get_config_var("LIBDIR")), "$LIBDIR")]
    subs += [(p, "$SITE_PACKAGES") for p in site.getsitepackages()]
    triton = find_triton()
    subs.append((str(triton.binary.parents[1]), "$TRITON"))
    subs.append((str(triton.library_path[-1]), "$TRITON_LIBS"))
    return sorted(subs, key=lambda s: -len(s[0]))


class _Dumper(yaml.SafeDumper):
    """Generated files as literal blocks, readable in a review."""


_Dumper.add_representer(str, lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s,
                                                             style="|" if "\n" in s else None))


def golden_text(plan: LocalPlan) -> str:
    text = yaml.dump(plan.to_dict(), Dumper=_Dumper, sort_keys=False, width=120)
    for path, placeholder in machine_paths():
        text = text.replace(path, placeholder)
    return text


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case: str) -> None:
    path = GOLDEN_DIR / f"{case}.yaml"
    text = golden_text(planned(case))
    if UPDATE_GOLDEN:
        GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    if not path.exists():
        pytest.fail(f"{path} missing: run `MLPLANE_UPDATE_GOLDEN=1 pytest {Path(__file__).name}` and review it")
    if path.read_text() != text:
        diff = "".join(difflib.unified_diff(path.read_text().splitlines(True), text.splitlines(True),
                                            f"golden/local/{path.name}", "planned"))
        pytest.fail(f"the plan of {case} changed; if intended, run `MLPLANE_UPDATE_GOLDEN=1 pytest "
                    f"{Path(__file__).name}` and review the diff:\n{diff}")


def test_no_stray_golden_files() -> None:
    assert sorted(p.stem for p in GOLDEN_DIR.glob("*.yaml")) == sorted(CASES)


def test_plans_hold_no_secret_values() -> None:
    """What a plan shows (goldens, debugging) names the control headers, never their values."""
    for case in CASES:
        shown = yaml.safe_dump(planned(case).to_dict()["load"])
        assert "control-key-for-the-golden-files" not in shown, case


def test_the_platforms_default_runtime_is_planned_like_a_named_one() -> None:
    named, default = planned("triton-batching").to_dict(), planned("default-runtime-triton").to_dict()
    assert named["runtime"] == default["runtime"] == "triton"
    assert named["process"]["argv"] == default["process"]["argv"]


@pytest.mark.parametrize(("case", "platform_spec", "spec", "drop", "message"), [
    # Valid as a file (no runtime named), refused once the Platform's default runtime is known.
    ("kserve-features", {"serving": {"defaultRuntime": "triton"}}, {}, ("runtime",),
     "`features` (online Feast lookup) is served by runtime 'kserve' only"),
    ("kserve-auth", {}, {"runtime": "triton"}, (), "cannot check mlplane API keys"),
    ("kserve-iris", {"serving": {"grpc": False}}, {"runtime": "triton"}, (), "serves inference over gRPC only"),
])
def test_what_cannot_run_here_is_refused_by_the_plan(case: str, platform_spec: dict[str, Any], spec: dict[str, Any],
                                                     drop: tuple[str, ...], message: str) -> None:
    platform, dep = variant(*CASES[case], platform_spec=platform_spec, spec=spec, drop=drop)
    ports = {key: 41000 + i for i, key in enumerate(port_keys(dep, platform))}
    with pytest.raises(PlanError, match=re.escape(message)):
        plan_deployment(dep, platform, ResolvedModel("models:/iris/3", "3"), ports,
                        ServingContext(STATE, TRACKING, platform))


def test_reserved_names_are_refused() -> None:
    platform, dep = CASES["kserve-iris"]
    dep = dep.model_copy(update={"metadata": dep.metadata.model_copy(update={"name": "mlflow"})})
    with pytest.raises(PlanError, match="metadata.name: 'mlflow' is reserved"):
        plan_deployment(dep, platform, ResolvedModel("models:/iris/3", "3"), {"mlflow/http": 1},
                        ServingContext(STATE, TRACKING, platform))
