"""`mlplane.spec.capabilities`: one table says what each runtime can do; the spec rules (Python and the CRDs'
CEL), the resolution and the local runtimes read it, so a deployment is refused alike everywhere."""

from __future__ import annotations

from typing import Any, get_args

import celpy
import pytest

from mlplane.resolution import NEEDS_SIGNATURE
from mlplane.runtime.local.runtimes import RUNTIMES
from mlplane.spec import SpecError, load_dict
from mlplane.spec.capabilities import CAPABILITIES, runtimes_with
from mlplane.spec.common import Runtime
from mlplane.spec.rules import DEPLOYMENT_SPEC

# A field of the spec that needs a capability, and a value for it.
NEEDS: dict[str, tuple[str, Any]] = {
    "features": ("features", {"entityKey": "flower_id", "features": ["iris:sepal_length"]}),
    "batching": ("batching", {"maxBatchSize": 8, "maxLatencyMs": 2}),
    "instances": ("instances", 2),
    "rag": ("retrieval", {"collection": "docs"}),
    "rollout": ("rollout", {"allowOutage": True}),
}


def test_every_runtime_of_the_spec_declares_its_capabilities() -> None:
    assert set(CAPABILITIES) == set(get_args(Runtime)) == set(RUNTIMES)
    for name, runtime in RUNTIMES.items():
        assert runtime.capabilities is CAPABILITIES[name]
    assert set(runtimes_with("needs_signature")) == NEEDS_SIGNATURE


def _deployment(runtime: str, field: str, value: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"model": "models:/iris/1", "runtime": runtime, field: value}
    if runtime == "ray":
        spec["model"] = "models:/generator/1"
    return {"apiVersion": "mlplane.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "m"}, "spec": spec}


@pytest.mark.parametrize("capability", sorted(NEEDS))
@pytest.mark.parametrize("runtime", sorted(CAPABILITIES))
def test_a_field_is_accepted_exactly_by_the_runtimes_that_have_its_capability(runtime: str, capability: str) -> None:
    field, value = NEEDS[capability]
    doc = _deployment(runtime, field, value)
    if getattr(CAPABILITIES[runtime], capability):
        load_dict(doc, source="m.yaml")
    else:
        with pytest.raises(SpecError) as refused:
            load_dict(doc, source="m.yaml")
        assert f"`{field}`" in str(refused.value) or f"spec.{field}" in str(refused.value), refused.value
        assert "runtime" in str(refused.value), refused.value  # says which runtime serves it


@pytest.mark.parametrize("runtime", sorted(CAPABILITIES))
def test_the_crd_rule_says_what_the_table_says(runtime: str) -> None:
    """The CEL the API server evaluates is generated from the table: the same answer for every runtime."""
    rule = next(r for r in DEPLOYMENT_SPEC if r.name == "features-need-kserve")
    assert rule.cel is not None
    program = celpy.Environment().program(celpy.Environment().compile(rule.cel))
    spec = {"runtime": runtime, "features": {"entityKey": "id"}}
    assert bool(program.evaluate({"self": celpy.json_to_cel(spec)})) is CAPABILITIES[runtime].features
