"""The install phases work on an empty cluster, checked offline over what every release really contains.

Each release of `mlplane cluster install`'s plan is represented by the objects it installs: the
upstream charts' objects from ../shared/upstream-charts/rendered-kinds.json (rendered there with
default values), the CRDs of their `crds/` folders, and mlplane's own charts rendered here with the
real Helm engine. Helm maps every object of a release to an API before it installs any, so:

- every custom resource a release installs needs its CRD established by an earlier release, or by
  the release's own `crds/` folder (Helm installs those first);
- every `cert-manager.io/inject-ca-from` on a webhook configuration names a Certificate created by
  the same or an earlier release, with cert-manager's CA injector installed before; a custom
  resource that passes through such a webhook must come after the webhook's release (its CA is
  injected and its controller ready by then: each release waits);
- a CRD that names a Certificate for its conversion webhook's CA must not need that webhook (no
  `spec.conversion.strategy: Webhook`), since its Certificate comes with the controller, later.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import helm_python
import pytest
import yaml
from stack_helpers import RENDERED_NAMESPACE, crd_documents, crds_folder_kinds, rendered_kinds, upstream

from mlplane._generated import REPO_ROOT
from mlplane.k8s import helm_plan, versions

BUILTIN_GROUPS = {"", "apps", "batch", "policy", "autoscaling", "rbac.authorization.k8s.io",
                  "admissionregistration.k8s.io", "apiextensions.k8s.io", "apiregistration.k8s.io",
                  "networking.k8s.io", "coordination.k8s.io", "scheduling.k8s.io", "storage.k8s.io"}
# cert-manager's default render has no CRDs; with `crds.enabled: true` (the stack's values) its
# templates add these (cert-manager's deploy/charts/cert-manager/templates/crd-*.yaml).
CERT_MANAGER_CRDS = ["Certificate.cert-manager.io", "CertificateRequest.cert-manager.io", "Issuer.cert-manager.io",
                     "ClusterIssuer.cert-manager.io", "Order.acme.cert-manager.io", "Challenge.acme.cert-manager.io"]
GOLDEN = REPO_ROOT / "tests" / "golden" / "render"


@dataclass
class Release:
    name: str
    namespace: str
    objects: list[dict[str, Any]]
    crds_folder: frozenset[str] = field(default_factory=frozenset)


def group_of(api_version: str) -> str:
    return api_version.rpartition("/")[0]


def rendered_object(entry: dict[str, Any]) -> dict[str, Any]:
    """A rendered-kinds.json entry as the object it stands for."""
    obj: dict[str, Any] = {"apiVersion": entry["apiVersion"], "kind": entry["kind"],
                           "metadata": {"name": entry["name"]}}
    if "injectCaFrom" in entry:
        obj["metadata"]["annotations"] = {"cert-manager.io/inject-ca-from": entry["injectCaFrom"]}
    if "crdGroupKind" in entry:
        kind, _, group = entry["crdGroupKind"].partition(".")
        obj["spec"] = {"group": group, "names": {"kind": kind}}
    return obj


def third_party_release(step: helm_plan.ReleaseStep) -> Release:
    objects = [rendered_object(e) for e in rendered_kinds()[step.release]["renderedWithDefaults"]]
    if step.release == "cert-manager":
        assert step.values["crds"]["enabled"] is True
        for gk in CERT_MANAGER_CRDS:
            kind, _, group = gk.partition(".")
            crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                   "name": f"{kind.lower()}s.{group}", "crdGroupKind": gk}
            objects.insert(0, rendered_object(crd))
    if step.release == "kserve-crd":  # the CRDs' own annotations and conversion settings, from the files
        by_name = {c["metadata"]["name"]: c for p in upstream("kserve-crd", "templates").glob("*.yaml")
                   for c in crd_documents(p)}
        objects = [by_name.get(o["metadata"]["name"], o) for o in objects]
    return Release(step.release, step.namespace, objects, crds_folder_kinds(step.release))


def local_release(step: helm_plan.ReleaseStep) -> Release:
    assert isinstance(step.chart, Path)
    with helm_python.Chart.load(str(step.chart)) as chart:
        manifests = chart.render(copy.deepcopy(dict(step.values)), name=step.release, namespace=step.namespace,
                                 is_install=True)
    objects = [d for p, t in manifests.items() if p.endswith(".yaml") for d in yaml.safe_load_all(t) if d]
    return Release(step.release, step.namespace, objects)


def releases(plan: list[helm_plan.ReleaseStep]) -> list[Release]:
    return [local_release(s) if s.local else third_party_release(s) for s in plan]


def operator_objects() -> Release:
    """What the operator applies after the last phase: the goldens of `mlplane render`."""
    objects = [d for p in sorted(GOLDEN.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text(encoding="utf-8")) if d]
    assert {o["kind"] for o in objects} >= {"InferenceService", "ScaledObject", "ServiceMonitor", "RayService"}
    return Release("objects the mlplane operator applies", "ml", objects)


def problems(sequence: list[Release]) -> list[str]:
    """Everything that would fail installing `sequence` in order on an empty cluster."""
    found: list[str] = []
    established: set[str] = set()
    certificates: set[str] = set()
    injector = False
    for index, release in enumerate(sequence):
        available = established | release.crds_folder
        own_webhooks = {o["metadata"]["name"] for o in release.objects if o["kind"].endswith("WebhookConfiguration")}
        for obj in release.objects:
            kind, group = obj["kind"], group_of(obj["apiVersion"])
            if group not in BUILTIN_GROUPS and f"{kind}.{group}" not in available:
                found.append(f"{release.name}: {kind} {obj['metadata']['name']} needs the CRD {kind}.{group}, "
                             "which no earlier release establishes")
            hook = f"{kind.lower()}.{group}"
            if group not in BUILTIN_GROUPS and hook in own_webhooks:
                found.append(f"{release.name}: {kind} {obj['metadata']['name']} goes through the webhook {hook} "
                             "of the same release, before its CA is injected")
        for obj in release.objects:
            if obj["kind"] == "Certificate":
                certificates.add(f"{release.namespace}/{obj['metadata']['name']}")
        for obj in release.objects:
            ca_from = obj["metadata"].get("annotations", {}).get("cert-manager.io/inject-ca-from")
            if ca_from is None:
                continue
            namespace, _, name = ca_from.partition("/")
            if namespace == RENDERED_NAMESPACE:  # templated from the release namespace
                ca_from = f"{release.namespace}/{name}"
            if obj["kind"] == "CustomResourceDefinition":
                later = any(f"{r.namespace}/{o['metadata']['name']}" == ca_from for r in sequence[index:]
                            for o in r.objects if o["kind"] == "Certificate")
                if not (later or ca_from in certificates):
                    found.append(f"{release.name}: CRD {obj['metadata']['name']} takes its CA from {ca_from}, "
                                 "which no release creates")
                if obj.get("spec", {}).get("conversion", {}).get("strategy") == "Webhook":
                    found.append(f"{release.name}: CRD {obj['metadata']['name']} needs a conversion webhook")
                continue
            if ca_from not in certificates:
                found.append(f"{release.name}: {obj['kind']} {obj['metadata']['name']} takes its CA from {ca_from}, "
                             "which neither this nor an earlier release creates")
            if not injector:
                found.append(f"{release.name}: {obj['kind']} {obj['metadata']['name']} needs cert-manager's CA "
                             "injector from an earlier release")
        for obj in release.objects:
            if obj["kind"] == "CustomResourceDefinition":
                established.add(f"{obj['spec']['names']['kind']}.{obj['spec']['group']}")
            if obj["kind"] == "Deployment" and obj["metadata"]["name"] == "cert-manager-cainjector":
                injector = True
        established |= release.crds_folder
    return found


@pytest.fixture(scope="module")
def full_plan() -> list[helm_plan.ReleaseStep]:
    return helm_plan.install_plan({}, include=["milvus"])


def test_the_phases_install_cleanly_on_an_empty_cluster(full_plan: list[helm_plan.ReleaseStep]) -> None:
    sequence = [*releases(full_plan), operator_objects()]
    assert problems(sequence) == []
    assert [p for p, _ in helm_plan.phases(full_plan)] == list(versions.PHASES)


def test_what_the_check_sees(full_plan: list[helm_plan.ReleaseStep]) -> None:
    """The check is only as good as its inputs: the objects that made the old stack fail are in them."""
    by_name = {r.name: r for r in releases(full_plan)}
    kserve = {(o["kind"], o["metadata"]["name"]) for o in by_name["kserve-resources"].objects}
    assert {("Certificate", "serving-cert"), ("Issuer", "selfsigned-issuer"),
            ("ClusterStorageContainer", "default")} <= kserve
    assert by_name["kserve-resources"].namespace == "kserve"  # kserve-crd's CRD names kserve/serving-cert
    assert {o["kind"] for o in by_name["mlplane"].objects} >= {"ClusterServingRuntime", "Deployment"}
    assert "ServiceMonitor.monitoring.coreos.com" in by_name["kube-prometheus-stack"].crds_folder
    assert "RayService.ray.io" in by_name["kuberay-operator"].crds_folder


def test_one_umbrella_release_fails_the_check(full_plan: list[helm_plan.ReleaseStep]) -> None:
    """The old way — everything in one `helm install charts/mlplane-stack` — is what the check rejects."""
    parts = releases(full_plan)
    umbrella = Release("mlplane-stack", "monitoring", [o for r in parts for o in r.objects],
                       frozenset().union(*(r.crds_folder for r in parts)))
    found = "\n".join(problems([umbrella]))
    assert "Certificate serving-cert needs the CRD Certificate.cert-manager.io" in found
    assert "ClusterServingRuntime mlplane-mlflow needs the CRD ClusterServingRuntime.serving.kserve.io" in found


@pytest.mark.parametrize(("moved", "before", "message"), [
    ("kserve-resources", "cert-manager", "Certificate serving-cert needs the CRD Certificate.cert-manager.io"),
    ("mlplane", "kserve-crd", "ClusterServingRuntime mlplane-mlflow needs the CRD"),
    ("kserve-resources", "kserve-crd", "ClusterStorageContainer default needs the CRD"),
])
def test_a_wrong_order_is_named(full_plan: list[helm_plan.ReleaseStep], moved: str, before: str, message: str) -> None:
    parts = releases(full_plan)
    mover = next(r for r in parts if r.name == moved)
    parts.remove(mover)
    parts.insert(next(i for i, r in enumerate(parts) if r.name == before), mover)
    assert any(message in p for p in problems(parts)), problems(parts)


def test_mlplane_runtimes_in_the_kserve_release_would_miss_the_webhook_ca(
        full_plan: list[helm_plan.ReleaseStep]) -> None:
    parts = releases(full_plan)
    merged = next(r for r in parts if r.name == "kserve-resources")
    merged.objects += [o for o in next(r for r in parts if r.name == "mlplane").objects
                       if o["kind"] == "ClusterServingRuntime"]
    assert any("goes through the webhook clusterservingruntime.serving.kserve.io of the same release" in p
               for p in problems(parts))
