"""An in-test Kubernetes API endpoint: real HTTPS, bearer-token auth, ConfigMaps and Nodes with the
API server's optimistic concurrency, for the clients under test to talk to over real sockets.

What it keeps as the real one does (k8s.io/apiserver, apimachinery; shapes checked against
``staging/src/k8s.io/apimachinery/pkg/api/errors/errors.go`` and the generic registry):

* one revision counter for the whole store, as etcd's: every write bumps it and stamps the object's
  ``metadata.resourceVersion``; a list carries the counter in its own ``metadata.resourceVersion``;
* PUT with a ``metadata.resourceVersion`` other than the stored one -> 409, ``reason: Conflict``,
  ``Operation cannot be fulfilled on configmaps "x": the object has been modified; please apply
  your changes to the latest version and try again`` (``NewConflict`` + ``OptimisticLockErrorMsg``);
  PUT without one is unconditional (configmaps and nodes allow it); PUT of an absent object -> 404
  (neither resource allows create-on-update);
* POST of an existing name -> 409 ``AlreadyExists`` (``configmaps "x" already exists``);
* absent -> 404 ``NotFound`` (``configmaps "x" not found``), details ``{name, kind: <resource>}``;
* PATCH ``application/merge-patch+json`` and ``strategic-merge-patch+json`` (applied as RFC 7386
  merge: lists are replaced, which is what strategic merge does for the fields tests touch);
  ``nodes/<n>/status`` PUT/PATCH change only ``status``;
* ``?watch=1|true`` streams ``{"type":"ADDED|MODIFIED|DELETED","object":...}`` lines after the given
  resourceVersion (none or "0": ADDED for what exists first), ``fieldSelector=metadata.name=``,
  ``timeoutSeconds``; a resourceVersion older than the kept history -> an ``ERROR`` event with a
  410 ``Expired`` Status.

Test controls (not API behaviour): ``rendezvous(n)`` makes the next ``n`` reads of ConfigMaps
wait for each other, so racing writers surely read the same resourceVersion; ``writes`` and
``conflicts`` count what happened.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import secrets
import ssl
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from streamcerts import create_ca, issue_server_cert, write_pem

__all__ = ["KubeApi", "status_body"]

OPTIMISTIC_LOCK = "the object has been modified; please apply your changes to the latest version and try again"
HISTORY = 1000
"""Watch events kept; an older resourceVersion gets 410 Expired."""
MERGE_TYPES = ("application/merge-patch+json", "application/strategic-merge-patch+json")

_CM = re.compile(r"^/api/v1/namespaces/(?P<ns>[a-z0-9-]+)/configmaps(?:/(?P<name>[^/]+))?$")
_NODE = re.compile(r"^/api/v1/nodes(?:/(?P<name>[^/]+)(?P<status>/status)?)?$")


def status_body(code: int, reason: str, message: str, name: str | None = None, kind: str | None = None) -> dict[str, Any]:
    """A ``metav1.Status`` failure as the API server writes it (``details`` only when it has one)."""
    body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                            "message": message, "reason": reason}
    if name is not None or kind is not None:
        body["details"] = {k: v for k, v in (("name", name), ("kind", kind)) if v is not None}
    body["code"] = code
    return body


class ApiError(Exception):
    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__(body["message"])
        self.body = body


def _not_found(resource: str, name: str) -> ApiError:
    return ApiError(status_body(404, "NotFound", f'{resource} "{name}" not found', name, resource))


def _conflict(resource: str, name: str) -> ApiError:
    return ApiError(status_body(409, "Conflict", f'Operation cannot be fulfilled on {resource} "{name}": {OPTIMISTIC_LOCK}',
                                name, resource))


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


@dataclass(slots=True)
class _Event:
    rv: int
    kind: str
    resource: str
    key: tuple[str, str]
    obj: dict[str, Any]


@dataclass(slots=True)
class KubeApi:
    """Start with ``await api.start(tmp_path)``; ``api.kubeconfig`` is a kubeconfig file for clients."""

    host: str = "127.0.0.1"
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    store: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    """(resource, namespace, name) -> object."""
    revision: int = 1
    history: list[_Event] = field(default_factory=list)
    writes: int = 0
    conflicts: int = 0
    requests: int = 0
    kubeconfig: Path | None = None
    url: str = ""
    _runner: web.AppRunner | None = None
    _changed: asyncio.Event | None = None
    _rendezvous: list[Any] = field(default_factory=list)
    _watchers: int = 0

    # -- lifecycle --------------------------------------------------------------------------------
    async def start(self, directory: Path) -> KubeApi:
        ca_cert, ca_key = create_ca("kube-test-ca")
        write_pem(directory / "ca.crt", ca_cert)
        write_pem(directory / "apiserver.crt", *issue_server_cert(ca_cert, ca_key, "kube-apiserver", [self.host, "localhost"]))
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(directory / "apiserver.crt", directory / "apiserver.key")
        self._changed = asyncio.Event()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5, handler_cancellation=True)  # a watcher gone ends its watch
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0, ssl_context=ctx)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"https://{self.host}:{port}"
        self.kubeconfig = directory / "kubeconfig"
        self.kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "test", "cluster": {"server": self.url, "certificate-authority": str(directory / "ca.crt")}}],
            "users": [{"name": "test", "user": {"token": self.token}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
        }))
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- test controls ----------------------------------------------------------------------------
    def rendezvous(self, n: int) -> None:
        """The next ``n`` ConfigMap reads wait for each other (5 s at most), then all answer."""
        self._rendezvous = [n, asyncio.Event(), 0]

    def get(self, resource: str, name: str, namespace: str = "") -> dict[str, Any] | None:
        obj = self.store.get((resource, namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def put_object(self, resource: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Create or replace, as an admin would (no resourceVersion check)."""
        meta = obj.setdefault("metadata", {})
        return self._store_write(resource, meta.get("namespace", ""), meta["name"], obj, create=True)

    def add_node(self, name: str, ip: str, port: int = 10350) -> dict[str, Any]:
        return self.put_object("nodes", {
            "kind": "Node", "apiVersion": "v1", "metadata": {"name": name, "labels": {"node-role.kubernetes.io/edge": ""}},
            "spec": {}, "status": {"addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
                                   "daemonEndpoints": {"kubeletEndpoint": {"Port": port}}},
        })

    def delete_object(self, resource: str, name: str, namespace: str = "") -> None:
        obj = self.store.pop((resource, namespace, name), None)
        if obj is not None:
            self.revision += 1
            self.writes += 1
            self._emit("DELETED", resource, (namespace, name), {**obj, "metadata": {**obj["metadata"],
                                                                                   "resourceVersion": str(self.revision)}})

    # -- the store ---------------------------------------------------------------------------------
    def _emit(self, kind: str, resource: str, key: tuple[str, str], obj: dict[str, Any]) -> None:
        self.history.append(_Event(self.revision, kind, resource, key, copy.deepcopy(obj)))
        del self.history[:-HISTORY]
        if self._changed is not None:  # wake every watcher; the next ones wait on a fresh event
            self._changed.set()
        self._changed = asyncio.Event()

    def _store_write(self, resource: str, namespace: str, name: str, obj: dict[str, Any], create: bool = False,
                     expect_rv: str | None = None) -> dict[str, Any]:
        key = (resource, namespace, name)
        old = self.store.get(key)
        if old is None and not create:
            raise _not_found(resource, name)
        if old is not None and expect_rv and expect_rv != old["metadata"]["resourceVersion"]:
            self.conflicts += 1
            raise _conflict(resource, name)
        self.revision += 1
        self.writes += 1
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        meta["name"] = name
        if namespace:
            meta["namespace"] = namespace
        if old is not None:
            meta["uid"] = old["metadata"]["uid"]
            meta["creationTimestamp"] = old["metadata"]["creationTimestamp"]
        else:
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        meta["resourceVersion"] = str(self.revision)
        obj["kind"], obj["apiVersion"] = {"configmaps": "ConfigMap", "nodes": "Node"}[resource], "v1"
        self.store[key] = obj
        self._emit("ADDED" if old is None else "MODIFIED", resource, (namespace, name), obj)
        return copy.deepcopy(obj)

    # -- HTTP ---------------------------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return _json(401, status_body(401, "Unauthorized", "Unauthorized"))
        try:
            m = _CM.match(request.path)
            if m:
                return await self._configmaps(request, m["ns"], m["name"])
            m = _NODE.match(request.path)
            if m:
                return await self._nodes(request, m["name"], bool(m["status"]))
            raise ApiError(status_body(404, "NotFound", "the server could not find the requested resource"))
        except ApiError as exc:
            return _json(exc.body["code"], exc.body)

    async def _read_body(self, request: web.Request) -> Any:
        try:
            return json.loads(await request.read())
        except ValueError as exc:
            raise ApiError(status_body(400, "BadRequest", f"the body of the request was in an unknown format: {exc}")) from None

    async def _configmaps(self, request: web.Request, ns: str, name: str | None) -> web.StreamResponse:
        if name is None:
            if request.method == "GET":
                return await self._list_or_watch(request, "configmaps", ns)
            if request.method == "POST":
                body = await self._read_body(request)
                new_name = (body.get("metadata") or {}).get("name", "")
                if ("configmaps", ns, new_name) in self.store:
                    raise ApiError(status_body(409, "AlreadyExists", f'configmaps "{new_name}" already exists', new_name, "configmaps"))
                return _json(201, self._store_write("configmaps", ns, new_name, body, create=True))
            raise ApiError(status_body(405, "MethodNotAllowed", "the server does not allow this method on the requested resource"))
        if request.method == "GET":
            await self._maybe_rendezvous()
            obj = self.get("configmaps", name, ns)
            if obj is None:
                raise _not_found("configmaps", name)
            return _json(200, obj)
        if request.method == "PUT":
            body = await self._read_body(request)
            self._check_name(body, name)
            return _json(200, self._store_write("configmaps", ns, name, body, expect_rv=body["metadata"].get("resourceVersion")))
        if request.method == "PATCH":
            return _json(200, await self._patch(request, "configmaps", ns, name, status_only=False))
        if request.method == "DELETE":
            if ("configmaps", ns, name) not in self.store:
                raise _not_found("configmaps", name)
            uid = self.store[("configmaps", ns, name)]["metadata"]["uid"]
            self.delete_object("configmaps", name, ns)
            return _json(200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                               "details": {"name": name, "kind": "configmaps", "uid": uid}})
        raise ApiError(status_body(405, "MethodNotAllowed", "the server does not allow this method on the requested resource"))

    async def _nodes(self, request: web.Request, name: str | None, status: bool) -> web.StreamResponse:
        if name is None:
            if request.method == "GET":
                return await self._list_or_watch(request, "nodes", "")
            raise ApiError(status_body(405, "MethodNotAllowed", "the server does not allow this method on the requested resource"))
        if request.method == "GET":
            obj = self.get("nodes", name)
            if obj is None:
                raise _not_found("nodes", name)
            return _json(200, obj)
        if request.method == "PUT":
            body = await self._read_body(request)
            self._check_name(body, name)
            old = self.store.get(("nodes", "", name))
            if old is None:
                raise _not_found("nodes", name)
            if status:  # the status subresource writes status only
                body = {**copy.deepcopy(old), "status": body.get("status", {}),
                        "metadata": {**old["metadata"], "resourceVersion": body["metadata"].get("resourceVersion")}}
            return _json(200, self._store_write("nodes", "", name, body, expect_rv=body["metadata"].get("resourceVersion")))
        if request.method == "PATCH":
            return _json(200, await self._patch(request, "nodes", "", name, status_only=status))
        raise ApiError(status_body(405, "MethodNotAllowed", "the server does not allow this method on the requested resource"))

    @staticmethod
    def _check_name(body: Any, name: str) -> None:
        if not isinstance(body, dict) or not isinstance(body.get("metadata"), dict):
            raise ApiError(status_body(400, "BadRequest", "the body of the request has no metadata"))
        if body["metadata"].get("name", name) != name:
            raise ApiError(status_body(400, "BadRequest", f"the name of the object ({body['metadata'].get('name')}) does "
                                                          f"not match the name on the URL ({name})"))

    async def _patch(self, request: web.Request, resource: str, ns: str, name: str, status_only: bool) -> dict[str, Any]:
        ctype = request.content_type
        if ctype not in MERGE_TYPES:
            raise ApiError(status_body(415, "UnsupportedMediaType", f"the body of the request was in an unknown format - "
                                                                     f"accepted media types include: {', '.join(MERGE_TYPES)}"))
        patch = await self._read_body(request)
        old = self.store.get((resource, ns, name))
        if old is None:
            raise _not_found(resource, name)
        if status_only:
            patch = {"status": patch.get("status")} if "status" in patch else {}
        rv = (patch.get("metadata") or {}).get("resourceVersion")  # a patch may carry a precondition
        merged = merge_patch(old, patch)
        merged["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
        return self._store_write(resource, ns, name, merged, expect_rv=rv)

    async def _maybe_rendezvous(self) -> None:
        if not self._rendezvous:
            return
        state = self._rendezvous
        state[2] += 1
        if state[2] >= state[0]:
            self._rendezvous = []
            state[1].set()
        try:
            async with asyncio.timeout(5):
                await state[1].wait()
        except TimeoutError:
            self._rendezvous = []

    def _selected(self, request: web.Request, resource: str, ns: str) -> list[tuple[tuple[str, str], dict[str, Any]]]:
        wanted = None
        for term in filter(None, request.query.get("fieldSelector", "").split(",")):
            key, _, value = term.partition("=")
            if key == "metadata.name":
                wanted = value.lstrip("=")
            elif key != "metadata.namespace":
                raise ApiError(status_body(400, "BadRequest", f'"{key}" is not a known field selector: only '
                                                              '"metadata.name", "metadata.namespace"'))
        return [((n_ns, name), obj) for (res, n_ns, name), obj in sorted(self.store.items())
                if res == resource and n_ns == ns and (wanted is None or name == wanted)]

    async def _list_or_watch(self, request: web.Request, resource: str, ns: str) -> web.StreamResponse:
        selected = self._selected(request, resource, ns)
        if request.query.get("watch", "").lower() not in ("1", "true"):
            kind = {"configmaps": "ConfigMapList", "nodes": "NodeList"}[resource]
            items = [{k: v for k, v in obj.items() if k not in ("kind", "apiVersion")} for _, obj in selected]
            return _json(200, {"kind": kind, "apiVersion": "v1", "metadata": {"resourceVersion": str(self.revision)},
                               "items": items})
        since = int(request.query.get("resourceVersion") or 0)
        timeout = float(request.query.get("timeoutSeconds") or 1800)
        resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        self._watchers += 1
        try:
            async with asyncio.timeout(timeout):
                if since == 0:
                    for _, obj in selected:
                        await resp.write(json.dumps({"type": "ADDED", "object": obj}).encode() + b"\n")
                    since = self.revision
                elif self.history and since < self.history[0].rv - 1:
                    gone = status_body(410, "Expired", f"too old resource version: {since} ({self.history[0].rv})")
                    await resp.write(json.dumps({"type": "ERROR", "object": gone}).encode() + b"\n")
                    return resp
                field_name = _field_name(request)
                while True:  # bounded by timeoutSeconds
                    changed = self._changed
                    for ev in [e for e in self.history if e.rv > since]:
                        since = ev.rv
                        if ev.resource == resource and ev.key[0] == ns and (field_name is None or ev.key[1] == field_name):
                            await resp.write(json.dumps({"type": ev.kind, "object": ev.obj}).encode() + b"\n")
                    if changed is not None and not [e for e in self.history if e.rv > since]:
                        await changed.wait()
        except (TimeoutError, ConnectionResetError):
            pass
        finally:
            self._watchers -= 1
        return resp


def _field_name(request: web.Request) -> str | None:
    for term in request.query.get("fieldSelector", "").split(","):
        key, _, value = term.partition("=")
        if key == "metadata.name":
            return value.lstrip("=")
    return None


def _json(code: int, body: dict[str, Any]) -> web.Response:
    return web.Response(status=code, body=json.dumps(body).encode(), content_type="application/json")
