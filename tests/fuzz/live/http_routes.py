"""Generators of HTTP requests, one per route of the node: the document routes and the
membership changes here, the rest in :mod:`.other_routes` (whose class this one extends).

Each returns an :class:`~.actions.HttpRequest` whose ``expect`` the oracle set: reads go
anywhere, writes to a seeded document only when the node must refuse them or they cannot
change it (:meth:`~.base.Base.seal`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Callable

from app.cluster.membership import MemberEntry, MembershipError
from app.http.forward import sign_forwarded

from .actions import HttpRequest
from .content import big_update, random_ops, random_update, seed_updates
from .other_routes import OtherRoutes

__all__ = ["HttpRoutes"]

OCTET = b"application/octet-stream"
JSON = b"application/json"
#: Largest PUT placement body (app.http.placement.MAX_BODY) and membership body.
PLACEMENT_BODY = 4096


class HttpRoutes(OtherRoutes):
    """The HTTP generators; :attr:`routes` maps each route (``METHOD /path``) to one."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.updates = seed_updates()
        self.routes: dict[str, Callable[[], HttpRequest]] = {
            "GET /v1/health": self.health,
            "GET /v1/docs": self.list_documents,
            "GET /v1/docs/{doc_id}": self.get_document,
            "GET /v1/docs/{doc_id}/replicas": self.get_replicas,
            "GET /v1/docs/{doc_id}/update": self.get_update,
            "POST /v1/docs/{doc_id}/update": self.post_update,
            "PATCH /v1/docs/{doc_id}": self.patch,
            "DELETE /v1/docs/{doc_id}": self.delete,
            "GET /v1/docs/{doc_id}/placement": self.get_placement,
            "PUT /v1/docs/{doc_id}/placement": self.put_placement,
            "GET /v1/cluster": lambda: self.simple("GET /v1/cluster", b"/v1/cluster"),
            "GET /v1/cluster/overview": lambda: self.simple(
                "GET /v1/cluster/overview", b"/v1/cluster/overview"
            ),
            "GET /v1/cluster/members": lambda: self.simple(
                "GET /v1/cluster/members", b"/v1/cluster/members"
            ),
            "POST /v1/cluster/join": self.join,
            "POST /v1/cluster/leave": self.leave,
            "POST /v1/cluster/members/{member}/remove": self.remove,
            "GET /metrics": lambda: self.simple("GET /metrics", b"/metrics"),
            "GET /": lambda: self.simple("GET /", b"/"),
            "GET /dashboard/{name}": self.dashboard,
            "GET /openapi.json": lambda: self.simple("GET /openapi.json", b"/openapi.json"),
            "HEAD /openapi.json": lambda: self.simple(
                "HEAD /openapi.json", b"/openapi.json", method=b"HEAD"
            ),
            "GET /docs": lambda: self.simple("GET /docs", b"/docs"),
            "GET /docs/oauth2-redirect": lambda: self.simple(
                "GET /docs/oauth2-redirect", b"/docs/oauth2-redirect"
            ),
            "GET /redoc": lambda: self.simple("GET /redoc", b"/redoc"),
            "MOUNT /docs/static": self.static,
            "wrong method": self.wrong_method,
            "no route": self.no_route,
        }

    # -- helpers ----------------------------------------------------------------------------

    def _read_headers(
        self, method: str, target: bytes, doc: str | None
    ) -> list[tuple[bytes, bytes]]:
        """Headers of a read: a token, and now and then a forwarded header (a valid one on
        a node with a secret: the read is then served here, as a holder would)."""
        headers, _ = self.authorization()
        if self.m.chance(0.1):
            valid = self.m.chance(0.5)
            headers.append((b"X-Meridian-Forwarded", self.forwarded(method, target, valid=valid)))
            if valid and self.m.chance(0.5):
                headers.append((b"X-Meridian-Placement", self._placement_record(doc)))
        return headers

    def _placement_record(self, doc: str | None) -> bytes:
        record = {
            "id": doc or "x",
            "home": self.m.pick(("eu-west", "mars", "")),
            "born": [self.m.integer(), "eu-west-9"],
        }
        raw = json.dumps(record).encode()
        return raw if self.m.chance(0.5) else _header_value(self.m.bytes_(raw))

    def _vector_b64(self) -> bytes:
        """A state vector as a query value: base64 in one of its spellings, or not base64."""
        from .content import state_vector

        vector = state_vector(self.m, self.setting.vectors)
        text = base64.b64encode(vector)
        roll = self.m.rng.randrange(8)
        if roll == 0:
            return base64.urlsafe_b64encode(vector).rstrip(b"=")
        if roll == 1:
            return text.replace(b"+", b" ")
        if roll == 2:
            return self.m.pick((b"!!", b"====", b"A", b"\xff", b"%", b"A" * 70000))
        if roll == 3:
            return b" " + text + b" "
        return text

    # -- document reads ---------------------------------------------------------------------

    def health(self) -> HttpRequest:
        query = self.query([("x", b"1")] if self.m.chance(0.2) else [])
        request = self._request("GET /v1/health", b"GET", b"/v1/health", query)
        if self.m.chance(0.1):
            health = b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n"
            last = b"GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            request.pipelined = [health] * self.m.rng.randrange(3) + [last]
        return request

    def list_documents(self) -> HttpRequest:
        params: list[tuple[str, bytes]] = []
        m = self.m
        if m.chance(0.5):
            params.append(("prefix", m.encode(m.pick(("fz", "seed", "", "fz-1", m.text())))))
        if m.chance(0.5):
            params.append(("limit", str(m.integer()).encode() if m.chance(0.8) else b"ten"))
        if m.chance(0.4):
            cursor = base64.b64encode(m.encode(m.pick(("fz-1", "seed-map", m.text()))))
            params.append(("cursor", cursor if m.chance(0.6) else m.bytes_(cursor)))
        headers, _ = self.authorization()
        return self._request("GET /v1/docs", b"GET", b"/v1/docs", self.query(params), headers)

    def _doc_read(self, route: str, suffix: bytes, options: list[str]) -> HttpRequest:
        doc = self.pick_doc(seeded=0.4, bad=0.15)
        path = b"/v1/docs/" + self.segment(doc) + suffix
        params: list[tuple[str, bytes]] = []
        m = self.m
        after = False
        for name in options:
            if not m.chance(0.3):
                continue
            if name in ("after", "since"):
                params.append((name, self._vector_b64()))
                after = after or name == "after"
            else:
                params.append((name, self.bool_param()))
        query = self.query(params)
        headers = self._read_headers("GET", path + query, doc)
        request = self._request(route, b"GET", path, query, headers, doc=doc)
        request.after = after
        return request

    def get_document(self) -> HttpRequest:
        request = self._doc_read("GET /v1/docs/{doc_id}", b"", ["after", "digest", "local"])
        if request.doc in self.setting.contents:
            request.content = self.setting.contents[request.doc]  # a 200 shows it
        return request

    def get_replicas(self) -> HttpRequest:
        return self._doc_read("GET /v1/docs/{doc_id}/replicas", b"/replicas", ["local"])

    def get_update(self) -> HttpRequest:
        request = self._doc_read(
            "GET /v1/docs/{doc_id}/update", b"/update", ["since", "after", "local"]
        )
        if request.doc in self.setting.digests and b"since=" not in request.target:
            request.digest = self.setting.digests[request.doc]  # a 200 is its whole state
        return request

    def get_placement(self) -> HttpRequest:
        return self._doc_read("GET /v1/docs/{doc_id}/placement", b"/placement", [])

    # -- document writes --------------------------------------------------------------------

    def _update_body(self, doc: str | None) -> bytes:
        m = self.m
        roll = m.rng.randrange(20)
        whole, later = random_update(m.rng)
        if roll < 6:
            return big_update(m.rng) if m.chance(0.04) else whole
        if roll < 8:
            return later  # depends on changes nobody sent: it waits
        if roll < 10:
            state = self.oracle.states.get(doc or "") or m.pick(self.updates)
            return state  # a duplicate (of the seeded state when it is one)
        if roll < 11:
            return b"\x00\x00"
        if roll < 18:
            return m.bytes_(m.pick((whole, later, *self.updates)), self.updates)
        if roll < 19:
            return m.random_bytes()
        return self._oversize(whole)

    def _oversize(self, sample: bytes) -> bytes:
        size = self.setting.max_body + self.m.pick((1, 100, 70000))
        return (sample * (size // max(1, len(sample)) + 1))[:size]

    def _durability(self) -> tuple[list[tuple[str, bytes]], bool]:
        """Durability and timeout parameters, and whether FastAPI refuses them (400)."""
        m = self.m
        params: list[tuple[str, bytes]] = []
        refused = False
        if m.chance(0.1):
            value = m.pick((b"local", b"region", b"quorum", b"all", b"LOCAL", b"none", b""))
            params.append(("durability", value))
            refused = value not in (b"local", b"region", b"quorum", b"all")
        if m.chance(0.06):
            value = m.pick((b"0.1", b"0", b"-1", b"61", b"abc", b"nan", b"inf", b"1e-9"))
            params.append(("timeout", value))
            refused = refused or value in (b"0", b"-1", b"61", b"abc", b"nan", b"inf")
        return params, refused

    def _write(
        self,
        route: str,
        method: bytes,
        suffix: bytes,
        *,
        content_type: bytes | None,
        body_for: Callable[[str | None], bytes],
        changes: Callable[[str, bytes], bool],
        limit: int,
        durability: bool = True,
        dispatches: bool = True,
        reads_body: bool = True,
    ) -> HttpRequest:
        """A write: its document, body, framing, headers, token and parameters, sealed by
        the oracle (see :meth:`Base.seal`)."""
        m = self.m
        doc = self.pick_doc(seeded=0.3, bad=0.1)
        body = body_for(doc)
        framing, received = self.framing(body)
        params, bad_params = self._durability() if durability else ([], False)
        query = self.query(params)
        auth_headers, authorization = self.authorization()
        if content_type is not None:
            type_headers, type_ok = self.content_type(content_type)
        else:
            type_headers, type_ok = [], True
        forged = dispatches and m.chance(0.1)
        valid_forward = forged and self.setting.secret is not None and m.chance(0.3)
        spelling = m.rng.random()

        def build(target_doc: str | None) -> HttpRequest:
            # The same spelling of the id whatever the document (see seal).
            path = b"/v1/docs/" + self.segment(target_doc, spelling) + suffix
            headers = [*auth_headers, *type_headers]
            if forged:
                signature = self.forwarded(method.decode(), path + query, valid=valid_forward)
                headers.append((b"X-Meridian-Forwarded", signature))
            request = self._request(route, method, path, query, headers, body, doc=target_doc)
            request.framing = framing
            return request

        request = build(doc)
        if not reads_body:
            received = b""  # the route never reads it: whatever came, the write happens
        refused = (
            bad_params
            or not type_ok
            or (forged and not valid_forward)
            or received is None
            or len(received) > limit
            or not self.token_allows(authorization, doc, "write")
        )
        if valid_forward:
            # A validly forwarded write is served as a holder serves it: never to a seeded
            # document (seal sends it to a fuzz document).
            refused = False
        would_change = (
            self.is_seeded(doc)
            and doc is not None
            and received is not None
            and changes(doc, received)
        )
        return self.seal(
            request, refused=refused, changes=would_change or valid_forward, rebuild=build
        )

    def post_update(self) -> HttpRequest:
        return self._write(
            "POST /v1/docs/{doc_id}/update",
            b"POST",
            b"/update",
            content_type=OCTET,
            body_for=self._update_body,
            changes=self.oracle.update_changes,
            limit=self.setting.max_body,
        )

    def _patch_body(self, doc: str | None) -> bytes:
        m = self.m
        valid = random_ops(m)
        roll = m.rng.randrange(20)
        if roll < 7:
            return m.dumps(valid)
        if roll < 13:
            return m.dumps(m.json_structure(valid))
        if roll < 16:
            return m.bytes_(m.dumps(valid))
        if roll < 18:
            return m.dumps(m.json_value())
        if roll < 19:
            return m.pick((b"", b"\xff\xfe", b"{", b"[" * 100000, b'{"ops": []}', b"NaN"))
        return self._oversize(m.dumps(valid))

    def patch(self) -> HttpRequest:
        return self._write(
            "PATCH /v1/docs/{doc_id}",
            b"PATCH",
            b"",
            content_type=JSON,
            body_for=self._patch_body,
            changes=self.oracle.ops_change,
            limit=self.setting.max_body,
        )

    def delete(self) -> HttpRequest:
        tombstone = self.setting.tombstone
        return self._write(
            "DELETE /v1/docs/{doc_id}",
            b"DELETE",
            b"",
            content_type=None,
            body_for=lambda _: self.m.random_bytes(self.m.pick((0, 0, 0, 10))),
            changes=lambda doc, _: doc != tombstone,
            limit=1 << 62,
            durability=False,
            reads_body=False,
        )

    def _placement_body(self, doc: str | None) -> bytes:
        m = self.m
        valid = m.pick(
            (
                {"replicas": 1},
                {"regions": ["eu-west"]},
                {"regions": ["eu-west"], "pinned": True},
                {"replicas": 1, "pinned": False},
            )
        )
        roll = m.rng.randrange(10)
        if roll < 3:
            return m.dumps(valid)
        if roll < 7:
            return m.dumps(m.json_structure(valid))
        if roll < 9:
            return m.bytes_(m.dumps(valid))
        return m.dumps({"regions": ["eu-west"] * 2000})

    def put_placement(self) -> HttpRequest:
        return self._write(
            "PUT /v1/docs/{doc_id}/placement",
            b"PUT",
            b"/placement",
            content_type=None,
            body_for=self._placement_body,
            changes=lambda _, body: self.oracle.placement_changes(body),
            limit=PLACEMENT_BODY,
            durability=False,
            dispatches=False,
        )

    # -- membership: always refused (signed with the secret or not at all) ------------------

    def _signature(self, method: str, target: bytes, signer: str) -> bytes | None:
        m = self.m
        roll = m.rng.randrange(4)
        if roll == 0:
            return None
        if roll == 1 or self.setting.secret is None:
            return self.forwarded(method, target, valid=False)
        return sign_forwarded(
            self.setting.secret, signer, method, _signed(target), time.time()
        ).encode()

    def join(self) -> HttpRequest:
        m = self.m
        entry = {
            "node": m.pick(("eu-west-5", "eu-west-7", self.setting.node_id)),
            "region": m.pick(("eu-west", "mars")),
            "address": m.pick(("127.0.0.1:1", "localhost:99999", "")),
            "state": m.pick(("joining", "active", "gone")),
            "incarnation": m.integer(),
            "weight": m.pick((1.0, 0, -1, 1e308)),
            "stamp": {"millis": m.integer(), "node": "eu-west-7"},
        }
        body = m.dumps(m.json_structure(entry)) if m.chance(0.7) else m.bytes_(m.dumps(entry))
        signer = "eu-west-7"
        try:
            parsed = MemberEntry.from_json(json.loads(body))
            if parsed.node == signer:
                signer = "eu-west-8"  # never a join the node could accept
        except (ValueError, RecursionError, MembershipError, TypeError):
            pass
        digest = hashlib.sha256(body).hexdigest().encode()
        if m.chance(0.2):
            digest = hashlib.sha256(body + b"x").hexdigest().encode()
        query = b"?sha256=" + digest if m.chance(0.9) else b""
        return self._signed_post("POST /v1/cluster/join", b"/v1/cluster/join", query, body, signer)

    def leave(self) -> HttpRequest:
        # Never validly signed: a node that leaves hands off its documents and stops.
        m = self.m
        body = m.random_bytes(m.pick((0, 10)))
        query = b"?sha256=" + hashlib.sha256(body).hexdigest().encode()
        headers = []
        if m.chance(0.7):
            target = b"/v1/cluster/leave" + query
            headers.append((b"X-Meridian-Signature", self.forwarded("POST", target, valid=False)))
        request = self._request(
            "POST /v1/cluster/leave", b"POST", b"/v1/cluster/leave", query, headers, body
        )
        request.expect = "refuse"
        return request

    def remove(self) -> HttpRequest:
        m = self.m
        member = m.pick((self.setting.node_id, "eu-west-5", "nobody", "%FF", "a" * 300))
        path = b"/v1/cluster/members/" + member.encode() + b"/remove"
        query = b"?sha256=" + hashlib.sha256(b"").hexdigest().encode()
        return self._signed_post(
            "POST /v1/cluster/members/{member}/remove", path, query, b"", "eu-west-7"
        )

    def _signed_post(
        self, route: str, path: bytes, query: bytes, body: bytes, signer: str
    ) -> HttpRequest:
        headers = []
        signature = self._signature("POST", path + query, signer)
        if signature is not None:
            headers.append((b"X-Meridian-Signature", signature))
        if self.m.chance(0.5):
            headers.append((b"Content-Type", JSON))
        request = self._request(route, b"POST", path, query, headers, body)
        request.expect = "refuse"
        return request


def _header_value(value: bytes) -> bytes:
    return value.replace(b"\r", b"").replace(b"\n", b"").replace(b"\x00", b"")


def _signed(target: bytes) -> str:
    from .base import _signed_target

    return _signed_target(target)
