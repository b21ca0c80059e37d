"""kmock's Kubernetes emulator with the API-server behaviour the operator relies on.

kmock stores, lists, watches, merge-patches and deletes objects (finalizers included). This adds:

- server-set metadata: uid, resourceVersion, creationTimestamp, names from generateName, and a
  generation that moves only when `spec` changes (as for custom resources with a status subresource);
- server-side apply (`PATCH` with `application/apply-patch+yaml`): creates a missing object, and for
  an existing one replaces what the applier sets (spec, labels, annotations, owner references)
  while keeping server-set metadata and status. With one field manager per child, that is what
  the real API server does; `managedFields` records the manager;
- a record of every call made by anything but the test itself (kopf and the operator's client), as
  (apiGroup, resource[/subresource], verb) for the RBAC check.

No garbage collector (owner references are not followed), no admission, no CRD validation.
"""

from __future__ import annotations

import copy
import datetime
import itertools
import uuid
from typing import Any

import aiohttp.web
import attrs
import kmock

APPLY = "application/apply-patch+yaml"
_VERBS = {kmock.action.LIST: "list", kmock.action.WATCH: "watch", kmock.action.FETCH: "get",
          kmock.action.CREATE: "create", kmock.action.DELETE: "delete"}


@attrs.define(kw_only=True)
class ApiServer(kmock.KubernetesEmulator):
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
        if request.action == kmock.action.CREATE and isinstance(request.data, dict):
            self._stamp(request.data.setdefault("metadata", {}))
        elif request.action == kmock.action.UPDATE and isinstance(request.data, dict):
            meta = request.data.setdefault("metadata", {})
            meta["resourceVersion"] = str(next(self._versions))
            key = (res, request.namespace, request.name)
            if request.subresource is None and "spec" in request.data and key in self._objects \
                    and not self._objects[key].deleted:
                old = self._objects[key].raw
                if old.get("spec") != request.data["spec"]:
                    meta["generation"] = old.get("metadata", {}).get("generation", 1) + 1
        return await super()._handle(request)

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
                if obj.get("spec") != old.get("spec"):
                    meta["generation"] = meta.get("generation", 1) + 1
                obj["metadata"] = meta
                if "status" in old:
                    obj["status"] = old["status"]
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
