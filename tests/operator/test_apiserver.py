"""The API-server emulator behaves as kube-apiserver where the operator relies on it.

CRD admission (schema, defaults, pruning, CEL rules with ``oldSelf``), core-group objects through
server-side apply, PUT, and garbage collection of owned objects, all over HTTP as a client sees them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import kmock
import pytest
import pytest_asyncio
from operator_apiserver import APPLY, ApiServer, Schemas, known_crds

pytestmark = pytest.mark.asyncio(loop_scope="module")

VERBS = {"list", "watch", "get", "create", "patch", "update", "delete"}
NS = "default"
WIDGETS = f"/apis/example.com/v1/namespaces/{NS}/widgets"
CONFIGMAPS = f"/api/v1/namespaces/{NS}/configmaps"
FEATURESTORES = f"/apis/feast.dev/v1/namespaces/{NS}/featurestores"

WIDGET_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.com"},
    "spec": {"group": "example.com", "scope": "Namespaced",
             "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
             "versions": [{"name": "v1", "served": True, "storage": True, "subresources": {"status": {}},
                           "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                               "apiVersion": {"type": "string"}, "kind": {"type": "string"},
                               "metadata": {"type": "object"},
                               "spec": {
                                   "type": "object", "required": ["maxReplicas"],
                                   "x-kubernetes-validations": [
                                       {"rule": "self.maxReplicas >= self.minReplicas",
                                        "message": "maxReplicas must be at least minReplicas"}],
                                   "properties": {
                                       "minReplicas": {"type": "integer", "minimum": 0, "default": 1},
                                       "maxReplicas": {"type": "integer"},
                                       "port": {"x-kubernetes-int-or-string": True},
                                       "storage": {"type": "string",
                                                   "x-kubernetes-validations": [
                                                       {"rule": "self == oldSelf", "message": "storage is immutable"}]},
                                       "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}},
                               "status": {"type": "object", "properties": {"phase": {"type": "string"}}}}}}}]}}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def api() -> AsyncIterator[ApiServer]:
    schemas = known_crds()
    schemas.add(WIDGET_CRD)
    server_api = ApiServer(schemas=schemas)
    async with server_api, kmock.Server(server_api):
        server_api.resources.load_bundled()
        for group, plural, kind in (("example.com/v1", "widgets", "Widget"), ("feast.dev/v1", "featurestores",
                                                                               "FeatureStore")):
            server_api.resources[f"{group}/{plural}"] = kmock.ResourceInfo(
                kind=kind, namespaced=True, verbs=VERBS, subresources={"status"})
        yield server_api


async def send(api: ApiServer, method: str, url: str, body: Any = None,
               content_type: str = "application/json") -> tuple[int, dict[str, Any]]:
    async with api.request(method, url, json=body, headers={"Content-Type": content_type}) as resp:
        return resp.status, await resp.json()


def widget(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": name, "namespace": NS},
            "spec": spec}


async def test_cel_rule_refuses_a_bad_body_with_422_naming_the_field(api):
    status, body = await send(api, "POST", WIDGETS, widget("bad", minReplicas=3, maxReplicas=2))
    assert status == 422, body
    assert body["reason"] == "Invalid"
    assert body["message"] == ('Widget.example.com "bad" is invalid: spec: Invalid value: "object": '
                               "maxReplicas must be at least minReplicas")
    assert body["details"]["causes"] == [{"reason": "FieldValueInvalid", "field": "spec",
                                          "message": 'Invalid value: "object": maxReplicas must be at least '
                                                     "minReplicas"}]
    status, _ = await send(api, "GET", f"{WIDGETS}/bad")
    assert status == 404  # nothing was stored


async def test_schema_defaults_prunes_and_names_the_field_of_a_type_error(api):
    status, body = await send(api, "POST", WIDGETS, widget("typed", maxReplicas="three"))
    assert status == 422
    assert body["details"]["causes"][0]["field"] == "spec.maxReplicas"
    assert "'three' is not of type 'integer'" in body["message"]
    status, body = await send(api, "POST", WIDGETS, widget("missing", minReplicas=0))
    assert status == 422
    assert body["details"]["causes"] == [{"reason": "FieldValueRequired", "field": "spec.maxReplicas",
                                          "message": "Required value"}]

    status, body = await send(api, "POST", WIDGETS, widget("ok", maxReplicas=2, port="http", unknown=1,
                                                            extra={"kept": {"deep": True}}))
    assert status in (200, 201), body
    assert body["spec"] == {"minReplicas": 1, "maxReplicas": 2, "port": "http", "extra": {"kept": {"deep": True}}}
    assert body["metadata"]["uid"] and body["metadata"]["generation"] == 1


async def test_updates_are_validated_against_the_merged_object_and_transition_rules(api):
    status, _ = await send(api, "POST", WIDGETS, widget("upd", maxReplicas=3, storage="ssd"))
    assert status in (200, 201)
    merge = "application/merge-patch+json"
    status, body = await send(api, "PATCH", f"{WIDGETS}/upd", {"spec": {"minReplicas": 5}}, merge)
    assert status == 422 and "maxReplicas must be at least minReplicas" in body["message"]
    status, body = await send(api, "PATCH", f"{WIDGETS}/upd", {"spec": {"storage": "hdd"}}, merge)
    assert status == 422 and body["details"]["causes"][0] == {
        "reason": "FieldValueInvalid", "field": "spec.storage", "message": 'Invalid value: "hdd": storage is immutable'}
    status, body = await send(api, "PATCH", f"{WIDGETS}/upd", {"spec": {"minReplicas": 2}}, merge)
    assert status == 200 and body["spec"]["minReplicas"] == 2 and body["metadata"]["generation"] == 2
    status, body = await send(api, "PATCH", f"{WIDGETS}/upd/status", {"status": {"phase": 7}}, merge)
    assert status == 422 and body["details"]["causes"][0]["field"] == "status.phase"
    # The status subresource: the object's endpoint ignores status, /status ignores the rest.
    status, body = await send(api, "PATCH", f"{WIDGETS}/upd", {"status": {"phase": "Hacked"}}, merge)
    assert status == 200 and "status" not in body
    status, body = await send(api, "PATCH", f"{WIDGETS}/upd/status", {"spec": {"maxReplicas": 9}}, merge)
    assert status == 200 and body["spec"]["maxReplicas"] == 3

    # PUT replaces: what the body leaves out is gone (and defaulted again), status stays with its subresource.
    status, _ = await send(api, "PATCH", f"{WIDGETS}/upd/status", {"status": {"phase": "Ready"}}, merge)
    assert status == 200
    status, body = await send(api, "PUT", f"{WIDGETS}/upd", widget("upd", maxReplicas=4, storage="ssd"))
    assert status == 200, body
    assert body["spec"] == {"minReplicas": 1, "maxReplicas": 4, "storage": "ssd"}
    assert body["status"] == {"phase": "Ready"} and body["metadata"]["generation"] == 3


async def test_core_objects_by_server_side_apply_get_list_delete(api):
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "conf", "namespace": NS},
          "data": {"feature_store.yaml": "project: p\n"}}
    url = f"{CONFIGMAPS}/conf"
    status, body = await send(api, "PATCH", url, cm, APPLY)
    assert status == 422 and "fieldManager" in body["message"]
    status, body = await send(api, "PATCH", f"{url}?fieldManager=me", cm, APPLY)
    assert status == 200 and body["metadata"]["managedFields"][0]["manager"] == "me"
    cm["data"] = {"feature_store.yaml": "project: q\n"}
    status, body = await send(api, "PATCH", f"{url}?fieldManager=me&force=true", cm, APPLY)
    assert status == 200 and body["data"] == {"feature_store.yaml": "project: q\n"}
    status, body = await send(api, "GET", CONFIGMAPS)
    assert [item["metadata"]["name"] for item in body["items"]] == ["conf"]
    bad = {**cm, "metadata": {"name": "bad", "namespace": NS}, "data": {"replicas": 3}}
    status, body = await send(api, "PATCH", f"{CONFIGMAPS}/bad?fieldManager=me", bad, APPLY)
    assert status == 422 and body["details"]["causes"][0]["field"] == "data.replicas"
    status, _ = await send(api, "DELETE", url)
    assert status == 200
    status, _ = await send(api, "GET", url)
    assert status == 404


async def test_deleting_an_owner_collects_what_it_owns_transitively(api):
    _, owner = await send(api, "POST", WIDGETS, widget("owner", maxReplicas=1))
    _, other = await send(api, "POST", WIDGETS, widget("other-owner", maxReplicas=1))

    def ref(obj: dict[str, Any]) -> dict[str, Any]:
        return {"apiVersion": "example.com/v1", "kind": "Widget", "name": obj["metadata"]["name"],
                "uid": obj["metadata"]["uid"], "controller": True}

    child = widget("child", maxReplicas=1)
    child["metadata"]["ownerReferences"] = [ref(owner)]
    _, child = await send(api, "POST", WIDGETS, child)
    for name, refs in (("owned-cm", [ref(owner)]), ("grandchild-cm", [ref(child)]),
                       ("shared-cm", [ref(owner), {**ref(other), "controller": False}])):
        cm = {"apiVersion": "v1", "kind": "ConfigMap",
              "metadata": {"name": name, "namespace": NS, "ownerReferences": refs}, "data": {}}
        status, _ = await send(api, "PATCH", f"{CONFIGMAPS}/{name}?fieldManager=me", cm, APPLY)
        assert status == 200

    status, _ = await send(api, "DELETE", f"{WIDGETS}/owner")
    assert status == 200
    for url in (f"{WIDGETS}/child", f"{CONFIGMAPS}/owned-cm", f"{CONFIGMAPS}/grandchild-cm"):
        assert (await send(api, "GET", url))[0] == 404, url
    assert (await send(api, "GET", f"{CONFIGMAPS}/shared-cm"))[0] == 200  # another owner is still there


def feature_store(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "feast.dev/v1", "kind": "FeatureStore", "metadata": {"name": name, "namespace": NS},
            "spec": {"feastProject": "demo", **spec}}


async def test_upstream_feast_crd_rules_run(api):
    """The feast-operator CRD's own CEL rules (has(), exists_one, startsWith) are evaluated."""
    status, body = await send(api, "POST", FEATURESTORES, feature_store("scaled", replicas=2))
    assert status == 422
    assert "Scaling requires DB-backed persistence for the online store" in body["message"]
    remote = {"services": {"registry": {"remote": {"hostname": "r:80", "feastRef": {"name": "x"}}}}}
    status, body = await send(api, "POST", FEATURESTORES, feature_store("two-registries", **remote))
    assert status == 422
    assert body["details"]["causes"][0]["field"] == "spec.services.registry.remote"
    status, body = await send(api, "POST", FEATURESTORES, feature_store("plain"))
    assert status in (200, 201), body
    assert body["spec"]["replicas"] == 1  # the CRD's default


async def test_every_known_crd_schema_loads():
    schemas: Schemas = known_crds()
    for key in (("mlplane.io", "v1alpha1", "modeldeployments"), ("mlplane.io", "v1alpha1", "platforms"),
                ("serving.kserve.io", "v1beta1", "inferenceservices"), ("ray.io", "v1", "rayservices"),
                ("keda.sh", "v1alpha1", "scaledobjects"), ("feast.dev", "v1", "featurestores")):
        assert key in schemas.by_resource, key
