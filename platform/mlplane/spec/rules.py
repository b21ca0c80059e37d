"""Cross-field rules of the spec, defined once: a CEL expression for the API server, a Python predicate for
`mlplane validate` (and the loader), and the same rules re-checked by the cluster render.

Each spec model lists its rules in ``RULES``; :class:`mlplane.spec.common.SpecModel` evaluates them after
field validation, and ``python -m mlplane.k8s.crds`` writes them into the CRDs as
``x-kubernetes-validations`` on the object they sit on. ``self`` in the CEL text is that object as the API
server sees it: camelCase keys, unset fields absent (``has()``), pydantic defaults applied where the CRD
has them. Tests evaluate every rule's CEL on a bad and a good example with ``celpy`` and hold it equal to
the Python predicate.

Rules on the runtime only fire when ``spec.runtime`` is given: a deployment that names none gets the
Platform's ``serving.defaultRuntime``, which neither `validate` nor the API server knows. The render
checks the same rules again with the effective runtime (:func:`check_effective`).

Only the CEL that both ``celpy`` and kube-apiserver implement is used (``has``, ``size``, ``in``, the
macros ``all``/``exists``/``exists_one``, ``startsWith``/``endsWith``/``matches``; no ``split``,
``substring`` or ``lowerAscii``, which celpy lacks), so the operator's API-server emulator evaluates the
same text. A rule whose CEL is ``None`` is Python-only: `validate`, the loader and the operator refuse
it; the CRD does not carry it, because the API server cannot express it (``python_only`` says why).
Iterated lists and maps are bounded (maxItems/maxProperties) and strings compared inside a macro have a
maxLength, so the API server's static cost estimate accepts the CRDs.

Python-only checks outside this rule set, for the same reason: the store ``options`` of the Platform's
feature store (``type``, duplicates of ``secrets``, credential-looking keys) are a free-form object
(``x-kubernetes-preserve-unknown-fields``), whose keys kube-apiserver's CEL cannot see.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mlplane.spec.capabilities import runtimes_with


@dataclass(frozen=True)
class Rule:
    """One cross-field rule of one spec model."""

    name: str
    cel: str | None  # true when the object is valid; None: Python-only (see `python_only`)
    message: str  # what the API server says (static); `explain` adds the values for `validate`
    holds: Callable[[Any], bool]  # the same rule over the pydantic object
    field_path: str = ""  # the field the rule is about, relative to the object (CRD fieldPath), e.g. ".batching"
    explain: Callable[[Any], str] | None = None
    python_only: str = ""  # why the API server cannot check it (set exactly when `cel` is None)

    def describe(self, obj: Any) -> str:
        return self.explain(obj) if self.explain else self.message

    def validation(self) -> dict[str, str] | None:
        """The CRD `x-kubernetes-validations` entry; None for a Python-only rule."""
        if self.cel is None:
            return None
        out = {"rule": self.cel, "message": self.message}
        if self.field_path:
            out["fieldPath"] = self.field_path
        return out


def violations(obj: Any) -> list[str]:
    """Messages of every rule of ``obj``'s model that ``obj`` breaks."""
    return [rule.describe(obj) for rule in getattr(type(obj), "RULES", ()) if not rule.holds(obj)]


def given_runtime(spec: Any) -> str | None:
    """``spec.runtime`` when the deployment names one, else None (the Platform decides)."""
    return spec.runtime if "runtime" in spec.model_fields_set else None


def check_effective(spec: Any, runtime: str) -> list[str]:
    """The ModelDeploymentSpec rules with ``runtime`` as the effective runtime (what the render serves)."""
    pinned = spec.model_copy(update={"runtime": runtime})
    pinned.model_fields_set.add("runtime")
    return violations(pinned)


def _duplicates(names: list[str]) -> list[str]:
    return sorted({n for n in names if names.count(n) > 1})


def _runtime_is(cel_runtime: str) -> str:
    return f"(has(self.runtime) && self.runtime == '{cel_runtime}')"


def _cel_runtime_in(capability: str) -> str:
    """CEL: ``self.runtime`` is one of the runtimes with ``capability`` (mlplane.spec.capabilities)."""
    names = runtimes_with(capability)
    if len(names) == 1:
        return f"self.runtime == '{names[0]}'"
    return "self.runtime in [" + ", ".join(f"'{n}'" for n in names) + "]"


def _given_has(spec: Any, capability: str) -> bool:
    """No runtime given (the Platform decides; the render re-checks), or the given one has ``capability``."""
    given = given_runtime(spec)
    return given is None or given in runtimes_with(capability)


# --------------------------------------------------------------------------- ModelDeploymentSpec
def _canary(spec: Any) -> bool:
    return spec.rollout is not None and spec.rollout.canary_traffic_percent is not None


_RAY_METRICS = ("concurrency",)

DEPLOYMENT_SPEC: tuple[Rule, ...] = (
    Rule(
        name="canary-without-autoscaling",
        cel="!(has(self.rollout) && has(self.rollout.canaryTrafficPercent) && has(self.autoscaling))",
        message="rollout.canaryTrafficPercent runs KServe in Serverless mode, which scales with Knative's "
                "autoscaler, not KEDA; remove `autoscaling` or the canary",
        holds=lambda s: not (_canary(s) and s.autoscaling is not None),
        field_path=".rollout.canaryTrafficPercent",
    ),
    Rule(
        name="rollout-not-ray",
        cel=f"!has(self.rollout) || !has(self.runtime) || {_cel_runtime_in('rollout')}",
        message="spec.rollout (canaryTrafficPercent, allowOutage) applies to runtimes kserve and triton; "
                "runtime ray updates the Generator in place: remove `rollout`",
        holds=lambda s: s.rollout is None or _given_has(s, "rollout"),
        field_path=".rollout",
    ),
    Rule(
        # KServe's canary needs its Serverless (Knative) mode, where a pod serves exactly one port. Triton's
        # protected layout (docs/triton-limits.md, "In the cluster") needs three: gRPC for clients, HTTP for
        # the probes (inference closed), metrics. A Knative Service with one of them would either drop the
        # health checks or serve clients the HTTP front end one request can crash.
        name="canary-not-triton",
        cel="!(has(self.rollout) && has(self.rollout.canaryTrafficPercent)) || !has(self.runtime) || "
            f"{_cel_runtime_in('canary')}",
        message="rollout.canaryTrafficPercent runs KServe in Serverless (Knative) mode, where a pod serves one "
                "port, and runtime triton serves clients on gRPC with health checks and metrics on HTTP "
                "(docs/triton-limits.md): remove the canary (triton rolls out a new version pod by pod) or "
                "use runtime kserve",
        holds=lambda s: not _canary(s) or _given_has(s, "canary"),
        field_path=".rollout.canaryTrafficPercent",
    ),
    Rule(
        name="rag-needs-ray",
        cel=f"!has(self.rag) || !has(self.runtime) || {_cel_runtime_in('rag')}",
        message="`rag` is served by runtime 'ray' only; set runtime: ray or remove `rag`",
        holds=lambda s: s.rag is None or _given_has(s, "rag"),
        field_path=".rag",
        explain=lambda s: f"`rag` is served by runtime 'ray' only (runtime is '{s.runtime}'); "
                          "set runtime: ray or remove `rag`",
    ),
    Rule(
        name="retrieval-needs-ray",
        cel=f"!has(self.retrieval) || !has(self.runtime) || {_cel_runtime_in('rag')}",
        message="`retrieval` is used by runtime 'ray' (the RAG service's default collection) only; "
                "set runtime: ray or remove `retrieval`",
        holds=lambda s: s.retrieval is None or _given_has(s, "rag"),
        field_path=".retrieval",
    ),
    Rule(
        name="features-need-kserve",
        cel=f"!has(self.features) || !has(self.runtime) || {_cel_runtime_in('features')}",
        message="`features` (online Feast lookup) is served by runtime 'kserve' only; set runtime: kserve "
                "or remove `features`",
        holds=lambda s: s.features is None or _given_has(s, "features"),
        field_path=".features",
    ),
    Rule(
        name="batching-not-kserve",
        cel=f"!has(self.batching) || !has(self.runtime) || {_cel_runtime_in('batching')}",
        message="`batching` applies to runtimes triton (config.pbtxt dynamic_batching) and ray (the Embedder's "
                "batches); runtime kserve serves each request on its own: remove `batching` or use triton",
        holds=lambda s: s.batching is None or _given_has(s, "batching"),
        field_path=".batching",
    ),
    Rule(
        name="instances-need-triton",
        cel=f"!has(self.instances) || self.instances == 1 || !has(self.runtime) || {_cel_runtime_in('instances')}",
        message="`instances` (model instances per replica: Triton's instance_group count) applies to runtime "
                "triton only; remove it or use runtime: triton",
        holds=lambda s: s.instances == 1 or _given_has(s, "instances"),
        field_path=".instances",
    ),
    Rule(
        name="ray-scales-on-requests-in-flight",
        cel=f"!{_runtime_is('ray')} || !has(self.autoscaling) || !has(self.autoscaling.target) || "
            "!has(self.autoscaling.target.metric) || self.autoscaling.target.metric in "
            f"[{', '.join(repr(m) for m in _RAY_METRICS)}]",
        message="autoscaling.target.metric: runtime 'ray' scales on requests in flight per replica; use "
                "'concurrency'",
        holds=lambda s: not (given_runtime(s) == "ray" and s.autoscaling is not None
                             and s.autoscaling.target is not None
                             and s.autoscaling.target.metric not in _RAY_METRICS),
        field_path=".autoscaling.target.metric",
        explain=lambda s: f"autoscaling.target.metric: '{s.autoscaling.target.metric}' is not available with "
                          "runtime 'ray', which scales on requests in flight per replica; use 'concurrency'",
    ),
    Rule(
        name="preferred-batch-sizes-need-triton",
        cel=f"!({_runtime_is('ray')} && has(self.batching) && has(self.batching.preferredBatchSizes))",
        message="batching.preferredBatchSizes is Triton's dynamic_batching setting; runtime ray batches the "
                "Embedder up to maxBatchSize only: remove preferredBatchSizes",
        holds=lambda s: not (given_runtime(s) == "ray" and s.batching is not None
                             and s.batching.preferred_batch_sizes is not None),
        field_path=".batching.preferredBatchSizes",
    ),
    Rule(
        name="remote-generator-without-gpus",
        cel="!(has(self.rag) && has(self.rag.generator) && has(self.rag.generator.type) && "
            "self.rag.generator.type != 'local') || !has(self.resources) || !has(self.resources.gpus) || "
            "self.resources.gpus == 0",
        message="resources.gpus: `spec.resources` sizes the RAG Generator, and a generator of type extractive, "
                "openai or kserve-v2 runs no model here; set gpus to 0 (put GPUs on the remote server)",
        holds=lambda s: s.rag is None or s.rag.generator.type == "local" or s.resources.gpus == 0,
        field_path=".resources.gpus",
    ),
)

# --------------------------------------------------------------------------- nested deployment objects
AUTOSCALING: tuple[Rule, ...] = (
    Rule(
        name="max-replicas-at-least-min",
        cel="(has(self.maxReplicas) ? self.maxReplicas : 1) >= (has(self.minReplicas) ? self.minReplicas : 1)",
        message="maxReplicas must be greater than or equal to minReplicas",
        holds=lambda a: a.max_replicas >= a.min_replicas,
        field_path=".maxReplicas",
        explain=lambda a: f"maxReplicas ({a.max_replicas}) must be greater than or equal to "
                          f"minReplicas ({a.min_replicas})",
    ),
)

RESOURCES: tuple[Rule, ...] = (
    Rule(
        name="gpu-type-needs-gpus",
        cel="!has(self.gpuType) || (has(self.gpus) && self.gpus > 0)",
        message="gpuType selects the GPU product of the replica's GPUs; set `gpus` (1 or more) or remove gpuType",
        holds=lambda r: r.gpu_type is None or r.gpus > 0,
        field_path=".gpuType",
    ),
)

BATCHING: tuple[Rule, ...] = (
    Rule(
        name="preferred-batch-sizes-fit",
        cel="!has(self.preferredBatchSizes) || self.preferredBatchSizes.all(n, n <= self.maxBatchSize)",
        message="preferredBatchSizes must not exceed maxBatchSize",
        holds=lambda b: all(n <= b.max_batch_size for n in b.preferred_batch_sizes or []),
        field_path=".preferredBatchSizes",
        explain=lambda b: (f"preferredBatchSizes {[n for n in b.preferred_batch_sizes if n > b.max_batch_size]} "
                           f"must not exceed maxBatchSize ({b.max_batch_size})"),
    ),
)

def _feature_names(f: Any) -> list[str]:
    return [name.split(":", 1)[1] for name in f.features]


FEATURES: tuple[Rule, ...] = (
    Rule(
        name="defaults-name-features",
        cel=None,
        message="defaults: every key must be one of `features`",
        holds=lambda f: set(f.defaults) <= set(f.features),
        field_path=".defaults",
        explain=lambda f: f"defaults: {sorted(set(f.defaults) - set(f.features))} are not in `features`",
        python_only="`defaults` holds values of any scalar type, so its CRD schema is a free-form object "
                    "(x-kubernetes-preserve-unknown-fields), whose keys the API server's CEL cannot see",
    ),
    Rule(
        # Every feature is '<view>:<name>' (exactly one ':') and entityKey has no ':', so "ends with
        # ':' + entityKey" is "its name is entityKey".
        name="entity-key-not-a-feature",
        cel="!self.features.exists(f, f.endsWith(':' + self.entityKey))",
        message="entityKey must not also be a feature name: the request input holding the entity ids and the "
                "joined feature columns would share the name",
        holds=lambda f: f.entity_key not in _feature_names(f),
        field_path=".entityKey",
        explain=lambda f: f"entityKey '{f.entity_key}' is also a feature name",
    ),
    Rule(
        name="unique-feature-names",
        cel=None,
        message="features: a feature name (after ':') appears in more than one feature view; the model's "
                "inputs are the feature names, so each must be unique",
        holds=lambda f: not _duplicates(_feature_names(f)),
        field_path=".features",
        explain=lambda f: f"features: {_duplicates(_feature_names(f))} appear in more than one feature view; the "
                          "model's inputs are the feature names, so each must be unique",
        python_only="comparing the names after ':' needs split or substring (kube-apiserver's strings "
                    "library, not celpy's), and RE2 has no backreferences to compare them with matches()",
    ),
)

GENERATOR: tuple[Rule, ...] = (
    Rule(
        name="remote-generator-needs-url",
        cel="!has(self.type) || !(self.type in ['openai', 'kserve-v2']) || (has(self.url) && size(self.url) > 0)",
        message="types 'openai' and 'kserve-v2' need `url` (the server's base URL, e.g. 'http://llm:8080')",
        holds=lambda g: g.type not in ("openai", "kserve-v2") or bool(g.url),
        field_path=".url",
        explain=lambda g: f"type '{g.type}' needs `url` (the server's base URL, e.g. 'http://llm:8080')",
    ),
    Rule(
        name="kserve-v2-needs-model-name",
        cel="!has(self.type) || self.type != 'kserve-v2' || (has(self.modelName) && size(self.modelName) > 0)",
        message="type 'kserve-v2' needs `modelName` (the model's name in /v2/models/NAME/generate)",
        holds=lambda g: g.type != "kserve-v2" or bool(g.model_name),
        field_path=".modelName",
    ),
)

# --------------------------------------------------------------------------- Platform objects
TRACKING: tuple[Rule, ...] = (
    Rule(
        name="external-tracking-needs-uri",
        cel="!has(self.mode) || self.mode != 'external' || (has(self.uri) && size(self.uri) > 0)",
        message="mode 'external' needs `uri` (e.g. 'http://mlflow.example:5000'); or use mode 'embedded'",
        holds=lambda t: t.mode != "external" or bool(t.uri),
        field_path=".uri",
    ),
)

VECTOR_STORE: tuple[Rule, ...] = (
    Rule(
        name="milvus-needs-uri",
        cel="!(has(self.enabled) && self.enabled && has(self.backend) && self.backend == 'milvus') || "
            "(has(self.uri) && size(self.uri) > 0)",
        message="backend 'milvus' needs `uri` (e.g. 'http://milvus.mlplane.svc:19530'); or use backend 'milvus-lite'",
        holds=lambda v: not (v.enabled and v.backend == "milvus") or bool(v.uri),
        field_path=".uri",
    ),
    Rule(
        name="unique-collection-names",
        cel="!has(self.collections) || self.collections.all(c, self.collections.exists_one(d, d.name == c.name))",
        message="collections: names must be unique",
        holds=lambda v: len({c.name for c in v.collections}) == len(v.collections),
        field_path=".collections",
        explain=lambda v: f"collections: duplicate names {_duplicates([c.name for c in v.collections])}",
    ),
)

VECTOR_COLLECTION: tuple[Rule, ...] = (
    Rule(
        name="chunk-overlap-below-size",
        cel="(has(self.chunkOverlap) ? self.chunkOverlap : 64) < (has(self.chunkSize) ? self.chunkSize : 512)",
        message="chunkOverlap must be less than chunkSize",
        holds=lambda c: c.chunk_overlap < c.chunk_size,
        field_path=".chunkOverlap",
        explain=lambda c: f"chunkOverlap ({c.chunk_overlap}) must be less than chunkSize ({c.chunk_size})",
    ),
)
