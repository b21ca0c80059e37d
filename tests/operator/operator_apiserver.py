"""kmock's Kubernetes emulator with the API-server behaviour the operator relies on.

kmock stores, lists, watches, merge-patches and deletes objects (finalizers included), for the core
group (``/api/v1/namespaces/NS/configmaps``, ...) as for custom resources. This adds what
kube-apiserver does on top:

- server-set metadata: uid, resourceVersion, creationTimestamp, names from generateName, and a
  generation that moves only when `spec` changes (as for custom resources with a status subresource);
- server-side apply (`PATCH` with `application/apply-patch+yaml`, `fieldManager` required): creates a
  missing object, and for an existing one replaces what the applier sets (spec or data, labels,
  annotations, owner references) while keeping server-set metadata and status. With one field manager
  per object, that is what the real API server does; `managedFields` records the manager;
- the status subresource: a write to the object leaves its status alone, a write to `/status` changes
  only the status; `PUT` replaces the object (or its status);
- garbage collection (background propagation): once an object is gone, every object whose
  ownerReferences name only owners that are gone is deleted too (finalizers honoured), transitively;
- admission by the CRD schema (:class:`Schemas`): for every custom resource whose CRD is loaded, the
  body is defaulted, pruned of unknown fields and validated against the version's `openAPIV3Schema`
  and its `x-kubernetes-validations` CEL rules (``oldSelf`` on updates); core kinds are validated with
  `kubernetes-validate` (ConfigMaps, Secrets, Services, ServiceAccounts). An invalid body is refused
  with 422 and a Status naming the field, in kube-apiserver's words;
- a record of every call made by anything but the test itself (kopf and the operator's client), as
  (apiGroup, resource[/subresource], verb) for the RBAC check.

No admission webhooks, no field-level managed fields.
"""

from __future__ import annotations

import copy
import datetime
import functools
import itertools
import json
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import aiohttp.web
import attrs
import celpy
import jsonpatch
import jsonschema
import kmock
import kubernetes_validate
import yaml

APPLY = "application/apply-patch+yaml"
_VERBS = {kmock.action.LIST: "list", kmock.action.WATCH: "watch", kmock.action.FETCH: "get",
          kmock.action.CREATE: "create", kmock.action.DELETE: "delete"}
KUBERNETES_VERSION = "1.33"  # the core-kind schemas kubernetes-validate checks against
# The core kinds validated on write (what the operator applies); others (events, ...) are taken as they come.
CORE_KINDS = {"configmaps": "ConfigMap", "secrets": "Secret", "services": "Service",
              "serviceaccounts": "ServiceAccount"}

Obj = dict[str, Any]
Path_ = tuple[str | int, ...]


# --------------------------------------------------------------------------- CRD schemas
def field_path(path: Iterable[str | int]) -> str:
    """``("spec", "ports", 0, "port")`` -> ``spec.ports[0].port`` (kube-apiserver's notation)."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


@attrs.define(frozen=True)
class Cause:
    """One reason an object is invalid: the field, kube's reason and the message."""

    field: str
    message: str
    reason: str = "FieldValueInvalid"


def _jsonschema(node: Any) -> Any:
    """An OpenAPI v3 structural schema as draft-4 JSON Schema (nullable, int-or-string; CEL handled apart)."""
    if isinstance(node, list):
        return [_jsonschema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out: Obj = {}
    for key, value in node.items():
        if key in ("properties", "patternProperties"):
            out[key] = {k: _jsonschema(v) for k, v in value.items()}
        elif key in ("items", "additionalProperties", "not", "anyOf", "allOf", "oneOf"):
            out[key] = _jsonschema(value)
        elif key in ("description", "default", "example", "externalDocs", "format") or key.startswith("x-"):
            continue
        else:
            out[key] = value
    if node.get("x-kubernetes-int-or-string") and "anyOf" not in out:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    out.pop("nullable", None)
    return out


def _default(node: Obj, value: Any) -> None:
    """Fill in the schema's defaults, in place, as the API server does before validation."""
    if isinstance(value, dict):
        props = node.get("properties", {})
        for key, sub in props.items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
        for key, item in value.items():
            sub = props.get(key)
            if sub is None and isinstance(node.get("additionalProperties"), dict):
                sub = node["additionalProperties"]
            if sub is not None:
                _default(sub, item)
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        for item in value:
            _default(node["items"], item)


def _prune(node: Obj, value: Any, root: bool = False) -> None:
    """Drop the fields the schema does not know, in place (structural pruning), unless it preserves them."""
    if isinstance(value, dict):
        props = node.get("properties", {})
        extra = node.get("additionalProperties")
        keep = node.get("x-kubernetes-preserve-unknown-fields") or extra is True
        embedded = node.get("x-kubernetes-embedded-resource") or root
        for key in list(value):
            if key in props:
                if not (root and key == "metadata"):
                    _prune(props[key], value[key])
            elif isinstance(extra, dict):
                _prune(extra, value[key])
            elif not keep and not (embedded and key in ("apiVersion", "kind", "metadata")) \
                    and not node.get("x-kubernetes-int-or-string"):
                del value[key]
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        for item in value:
            _prune(node["items"], item)


def _rules(node: Obj, value: Any, old: Any, path: Path_) -> Iterator[tuple[Obj, Any, Any, Path_]]:
    """Every CEL rule of the schema that applies to ``value``: (rule, self, oldSelf or None, path)."""
    for rule in node.get("x-kubernetes-validations", []):
        yield rule, value, old, path
    if isinstance(value, dict):
        props = node.get("properties", {})
        extra = node.get("additionalProperties")
        for key, item in value.items():
            sub = props.get(key, extra if isinstance(extra, dict) else None)
            if sub is not None:
                yield from _rules(sub, item, old.get(key) if isinstance(old, dict) else None, (*path, key))
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        for i, item in enumerate(value):  # list items are not correlated with the old object's
            yield from _rules(node["items"], item, None, (*path, i))


_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the upstream CRDs are megabytes of YAML
_CEL = celpy.Environment()
_PROGRAMS: dict[str, Any] = {}


def _program(expression: str) -> Any:
    if expression not in _PROGRAMS:
        _PROGRAMS[expression] = _CEL.program(_CEL.compile(expression))
    return _PROGRAMS[expression]


def _cel(rule: Obj, value: Any, old: Any, path: Path_) -> Cause | None:
    """Evaluate one `x-kubernetes-validations` rule; ``None`` when it holds."""
    expression = rule["rule"]
    transition = "oldSelf" in expression
    if transition and old is None:
        return None  # a transition rule only runs on an update with an old value to compare
    activation = {"self": celpy.json_to_cel(value)}
    if transition:
        activation["oldSelf"] = celpy.json_to_cel(old)
    where = field_path(path)
    if rule.get("fieldPath"):
        where += rule["fieldPath"] if rule["fieldPath"].startswith((".", "[")) else "." + rule["fieldPath"]
    try:
        result = _program(expression).evaluate(activation)
    except celpy.CELEvalError as exc:
        result = exc
    if isinstance(result, celpy.CELEvalError) or not isinstance(result, bool | celpy.celtypes.BoolType):
        return Cause(where, f"Internal error: {result} evaluating rule: {expression}", "InternalError")
    if result:
        return None
    message = rule.get("message") or f"failed rule: {expression}"
    if rule.get("messageExpression"):
        try:
            message = str(_program(rule["messageExpression"]).evaluate(activation))
        except celpy.CELEvalError:
            pass
    reason = {"FieldValueForbidden": "FieldValueForbidden", "FieldValueRequired": "FieldValueRequired",
              "FieldValueDuplicate": "FieldValueDuplicate"}.get(rule.get("reason", ""), "FieldValueInvalid")
    return Cause(where, message, reason)


def _shown(value: Any) -> str:
    if isinstance(value, dict):
        return '"object"'
    if isinstance(value, list):
        return '"array"'
    return json.dumps(value)


@attrs.define
class Schemas:
    """The `openAPIV3Schema` of each served custom resource version: (group, version, plural) -> schema."""

    by_resource: dict[tuple[str, str, str], Obj] = attrs.field(factory=dict)
    kinds: dict[tuple[str, str, str], str] = attrs.field(factory=dict)
    with_status: set[tuple[str, str, str]] = attrs.field(factory=set)  # versions with a status subresource
    _validators: dict[tuple[str, str, str], Any] = attrs.field(factory=dict, init=False)

    def load(self, *paths: Path) -> Schemas:
        """Read every CustomResourceDefinition in the YAML files (or folders of them) at ``paths``."""
        for path in paths:
            files = sorted(path.glob("*.yaml")) if path.is_dir() else [path]
            for file in files:
                for doc in yaml.load_all(file.read_text(), Loader=_LOADER):
                    if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                        self.add(doc)
        return self

    def add(self, crd: Obj) -> None:
        spec = crd["spec"]
        for version in spec["versions"]:
            if version.get("served", True) and "schema" in version:
                key = (spec["group"], version["name"], spec["names"]["plural"])
                self.by_resource[key] = version["schema"]["openAPIV3Schema"]
                self.kinds[key] = spec["names"]["kind"]
                self._validators.pop(key, None)
                if "status" in version.get("subresources", {}):
                    self.with_status.add(key)

    def admit(self, resource: Any, obj: Obj, old: Obj | None) -> list[Cause]:
        """Default and prune ``obj`` in place, then its schema and CEL violations (empty: admitted)."""
        key = (resource.group or "", resource.version or "", resource.plural or "")
        if not resource.group:
            kind = CORE_KINDS.get(resource.plural or "")
            return _core_causes({"apiVersion": "v1", "kind": kind, **obj}) if kind else []
        schema = self.by_resource.get(key)
        if schema is None:
            return []
        _default(schema, obj)
        _prune(schema, obj, root=True)
        causes: list[Cause] = []
        if key not in self._validators:
            self._validators[key] = jsonschema.Draft4Validator(_jsonschema(schema))
        for error in self._validators[key].iter_errors(obj):
            where = field_path(error.absolute_path)
            value = error.instance
            if error.validator == "required":
                missing = error.message.split("'")[1]
                causes.append(Cause(field_path((*error.absolute_path, missing)), "Required value",
                                    "FieldValueRequired"))
            else:
                causes.append(Cause(where, f"Invalid value: {_shown(value)}: {where} in body {error.message}"))
        if causes:  # as kube-apiserver: CEL rules run only on a body that passes the schema
            return causes
        for rule, value, old_value, path in _rules(schema, obj, old, ()):
            cause = _cel(rule, value, old_value, path)
            if cause is not None:
                causes.append(attrs.evolve(cause, message=f"Invalid value: {_shown(value)}: {cause.message}"))
        return causes


def _core_causes(obj: Obj) -> list[Cause]:
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        error = exc.__context__ if isinstance(exc.__context__, jsonschema.ValidationError) else exc
        where = field_path(error.absolute_path)
        return [Cause(where, f"Invalid value: {_shown(error.instance)}: {error.message}")]
    except kubernetes_validate.SchemaNotFoundError:
        return []
    return []


def invalid(kind: str, group: str, name: str, causes: list[Cause]) -> aiohttp.web.Response:
    """kube-apiserver's 422 for an object that fails validation."""
    what = f"{kind}.{group}" if group else kind
    details = ", ".join(f"{c.field}: {c.message}" for c in causes)
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": f'{what} "{name}" is invalid: {details}', "reason": "Invalid", "code": 422,
            "details": {"name": name, "group": group, "kind": kind,
                        "causes": [{"reason": c.reason, "message": c.message, "field": c.field} for c in causes]}}
    return aiohttp.web.json_response(body, status=422)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (what kmock applies to a stored object)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


# --------------------------------------------------------------------------- the server
@attrs.define(kw_only=True)
class ApiServer(kmock.KubernetesEmulator):
    schemas: Schemas = attrs.field(factory=lambda: known_crds())  # mlplane's and the upstream CRDs
    calls: set[tuple[str, str, str]] = attrs.field(factory=set, init=False)
    _versions: itertools.count[int] = attrs.field(factory=lambda: itertools.count(1), init=False)

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        res = request.resource
        if res is None or res.plural is None:  # discovery: every client may read it
            return await super()._handle(request)
        self._observe(request)
        content_type = request.headers.get("Content-Type", "")
        if request.method == kmock.method.PATCH and content_type.startswith(APPLY):
            return await self._apply(request)
        if request.method == kmock.method.PUT and request.name is not None and isinstance(request.data, dict):
            return await self._replace(request)
        key = (res, request.namespace, request.name)
        stored = self._objects[key] if key in self._objects and not self._objects[key].deleted else None
        if request.action == kmock.action.CREATE and isinstance(request.data, dict):
            self._stamp(request.data.setdefault("metadata", {}))
            if (refused := self._admit(request, request.data, None)) is not None:
                return refused
        elif request.action == kmock.action.UPDATE and isinstance(request.data, dict) and stored is not None:
            old = stored.raw
            meta = request.data.setdefault("metadata", {})
            meta["resourceVersion"] = str(next(self._versions))
            if request.subresource is None and "spec" in request.data and old.get("spec") != request.data["spec"]:
                meta["generation"] = old.get("metadata", {}).get("generation", 1) + 1
            if (res.group or "", res.version or "", res.plural or "") in self.schemas.with_status:
                if request.subresource is None:  # the status subresource owns status ...
                    request.data.pop("status", None)
                elif request.subresource == "status":  # ... and writes nothing else
                    for field in list(request.data):
                        if field not in ("status", "metadata"):
                            del request.data[field]
            if request.subresource in (None, "status"):
                result = merge_patch(old, request.data)
                if (refused := self._admit(request, result, old)) is not None:
                    return refused
                if result != merge_patch(old, request.data):  # defaulted or pruned: store that
                    request.data.clear()
                    request.data.update(_diff(old, result))
        response = await super()._handle(request)
        if request.action in (kmock.action.DELETE, kmock.action.UPDATE):
            await self.collect_garbage()
        return response

    async def _render_error(self, exc: Exception) -> aiohttp.web.StreamResponse:
        """A JSON patch whose ``test`` op fails (kopf tests resourceVersion when it edits finalizers) is
        kube-apiserver's 422, which kopf takes as "newer changes pending, try again next cycle"."""
        if isinstance(exc, jsonpatch.JsonPatchTestFailed):
            return aiohttp.web.json_response({"kind": "Status", "apiVersion": "v1", "metadata": {},
                                              "status": "Failure", "reason": "Invalid", "code": 422,
                                              "message": f"the server rejected our request: {exc}"}, status=422)
        return await super()._render_error(exc)

    async def _replace(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        """``PUT``: the body replaces the object (its status, or all but its status); 404 when it is missing."""
        key = (request.resource, request.namespace, request.name)
        async with self._lock:
            if key not in self._objects or self._objects[key].deleted:
                return aiohttp.web.json_response({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                                  "reason": "NotFound", "code": 404,
                                                  "message": f'"{request.name}" not found'}, status=404)
            old = self._objects[key].raw
            new = copy.deepcopy(request.data)
            if request.subresource == "status":
                new = {**copy.deepcopy(old), "status": new.get("status")}
            elif "status" in old:
                new["status"] = copy.deepcopy(old["status"])  # the status subresource owns it
            meta = new.setdefault("metadata", {})
            for field in ("uid", "creationTimestamp", "generation", "managedFields"):
                if field in old["metadata"]:
                    meta[field] = old["metadata"][field]
            if (refused := self._admit(request, new, old)) is not None:
                return refused
            if new.get("spec") != old.get("spec"):
                meta["generation"] = old["metadata"].get("generation", 1) + 1
            meta["resourceVersion"] = str(next(self._versions))
            self._objects[key].create(new)
            raw = self._objects[key].raw
            await self._buses[request.resource].put({"type": "MODIFIED", "object": raw})
            if meta.get("deletionTimestamp") and not meta.get("finalizers"):  # the last finalizer is released
                self._objects[key].delete()
                await self._buses[request.resource].put({"type": "DELETED", "object": raw})
        await self.collect_garbage()  # a PUT may drop finalizers or owner references
        return aiohttp.web.json_response(raw)

    def _admit(self, request: kmock.Request, obj: Obj, old: Obj | None) -> aiohttp.web.Response | None:
        res = request.resource
        assert res is not None
        causes = self.schemas.admit(res, obj, old)
        if not causes:
            return None
        kind = self.schemas.kinds.get((res.group or "", res.version or "", res.plural or ""), obj.get("kind", ""))
        return invalid(kind, res.group or "", obj.get("metadata", {}).get("name", ""), causes)

    def _observe(self, request: kmock.Request) -> None:
        if request.headers.get("User-Agent", "").startswith("kmock/"):
            return  # the test acting as a user or as KServe
        res = request.resource
        assert res is not None
        verb = "patch" if request.method == kmock.method.PATCH else _VERBS.get(request.action, "update")
        resource = f"{res.plural}/{request.subresource}" if request.subresource else str(res.plural)
        self.calls.add((res.group or "", resource, verb))

    def _stamp(self, meta: dict[str, Any]) -> None:
        if not meta.get("name") and meta.get("generateName"):  # kopf names its events this way
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
        meta.setdefault("generation", 1)
        meta["resourceVersion"] = str(next(self._versions))

    async def _apply(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        applied: dict[str, Any] = copy.deepcopy(request.data)
        manager = request.params.get("fieldManager")
        if not manager:
            return aiohttp.web.json_response({"kind": "Status", "code": 422, "status": "Failure",
                                              "message": "fieldManager is required for apply"}, status=422)
        key = (request.resource, request.namespace, request.name)
        async with self._lock:
            existing = self._objects[key] if key in self._objects and not self._objects[key].deleted else None
            if existing is None:
                obj = applied
                self._stamp(obj.setdefault("metadata", {}))
                obj["metadata"]["managedFields"] = [{"manager": manager, "operation": "Apply"}]
                if (refused := self._admit(request, obj, None)) is not None:
                    return refused
                event = "ADDED"
            else:
                old = existing.raw
                obj = {k: v for k, v in applied.items() if k not in ("metadata", "status")}
                meta = copy.deepcopy(old["metadata"])
                for field in ("labels", "annotations", "ownerReferences"):
                    if field in applied.get("metadata", {}):
                        meta[field] = applied["metadata"][field]
                    else:
                        meta.pop(field, None)
                obj["metadata"] = meta
                if "status" in old:
                    obj["status"] = old["status"]
                if (refused := self._admit(request, obj, old)) is not None:
                    return refused
                if obj.get("spec") != old.get("spec"):
                    meta["generation"] = meta.get("generation", 1) + 1
                if obj == old:  # a no-op apply changes nothing, not even the resourceVersion
                    return aiohttp.web.json_response(old)
                meta["resourceVersion"] = str(next(self._versions))
                event = "MODIFIED"
            if key in self._objects:
                self._objects[key].create(obj)
            else:
                self._objects[key] = obj
            raw = self._objects[key].raw
            await self._buses[request.resource].put({"type": event, "object": raw})
        return aiohttp.web.json_response(raw)

    async def collect_garbage(self) -> None:
        """Delete every object all of whose owners are gone (background propagation), until none is left."""
        while True:
            async with self._lock:
                live = {(res, ns, name): obj for (res, ns, name), obj in self._objects.items() if not obj.deleted}
                uids = {obj.raw.get("metadata", {}).get("uid") for obj in live.values()}
                orphans = [(key, obj) for key, obj in live.items()
                           if (refs := obj.raw.get("metadata", {}).get("ownerReferences"))
                           and not obj.raw["metadata"].get("deletionTimestamp")
                           and not any(ref.get("uid") in uids for ref in refs)]
                deleted = 0
                for (res, _, _), obj in orphans:
                    if obj.raw["metadata"].get("finalizers"):
                        obj.patch({"metadata": {"deletionTimestamp": datetime.datetime.now(datetime.UTC).isoformat()}})
                        await self._buses[res].put({"type": "MODIFIED", "object": obj.raw})
                    else:
                        raw = obj.raw
                        obj.delete()
                        deleted += 1
                        await self._buses[res].put({"type": "DELETED", "object": raw})
            if not deleted:
                return


def _diff(old: Obj, new: Obj) -> Obj:
    """The merge patch that turns ``old`` into ``new``."""
    out: Obj = {}
    for key in old.keys() - new.keys():
        out[key] = None
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(old.get(key), dict):
            sub = _diff(old[key], value)
            if sub:
                out[key] = sub
        elif old.get(key) != value or key not in old:
            out[key] = copy.deepcopy(value)
    return out


def known_crds() -> Schemas:
    """mlplane's generated CRDs and the upstream ones the tests have (KServe, KubeRay, KEDA, Feast)."""
    loaded = _known_crds()
    return Schemas(dict(loaded.by_resource), dict(loaded.kinds), set(loaded.with_status))


@functools.cache
def _known_crds() -> Schemas:
    from mlplane._generated import REPO_ROOT

    shared = REPO_ROOT.parent / "shared"
    paths = [REPO_ROOT / "charts" / "mlplane-crds" / "templates", shared / "crds",
             shared / "upstream-charts" / "feast-operator" / "config" / "crd" / "bases"]
    for path in paths:
        assert path.exists(), f"the operator tests need the CRDs at {path}"
    return Schemas().load(*paths)
