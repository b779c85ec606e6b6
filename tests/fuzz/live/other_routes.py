"""Generators for the routes around the documents (the dashboard, the API pages, the static
files, the cluster views) and for no route at all: wrong methods, targets nothing serves,
request lines that are not HTTP/1.1, bytes that are not HTTP."""

from __future__ import annotations

from pathlib import Path

import fastapi_offline

from .actions import HttpRequest
from .base import Base
from .content import random_ops, random_update

__all__ = ["OtherRoutes"]

OCTET = b"application/octet-stream"
JSON = b"application/json"
#: The Swagger UI and ReDoc files /docs/static serves.
STATIC_FILES = sorted(p.name for p in (Path(fastapi_offline.__file__).parent / "static").iterdir())
DASHBOARD_FILES = ("dashboard.js", "dashboard.css", "favicon.svg")
#: Every method a request line may carry here (the route's own and the others).
METHODS = (b"GET", b"POST", b"PUT", b"PATCH", b"DELETE", b"HEAD", b"OPTIONS", b"TRACE")
ODD_METHODS = (b"CONNECT", b"FOO", b"get", b"G\xc3\x89T", b"PROPFIND", b"M" * 300)


class OtherRoutes(Base):
    """The generators of everything but the document and membership routes."""

    def _request(
        self,
        route: str,
        method: bytes,
        path: bytes,
        query: bytes = b"",
        headers: list[tuple[bytes, bytes]] | None = None,
        body: bytes = b"",
        *,
        doc: str | None = None,
    ) -> HttpRequest:
        headers = list(headers or [])
        if self.m.chance(0.2):
            # Anywhere among the others, which keep their order (the node reads the first
            # Authorization and Content-Type headers).
            for junk in self.junk_headers():
                headers.insert(self.m.rng.randrange(len(headers) + 1), junk)
        return HttpRequest(route, method, path + query, headers, body, doc=doc)

    def simple(self, route: str, path: bytes, *, method: bytes = b"GET") -> HttpRequest:
        headers, _ = self.authorization()
        query = self.query([("x", self.m.encode(self.m.text()))] if self.m.chance(0.2) else [])
        return self._request(route, method, path, query, headers)

    def dashboard(self) -> HttpRequest:
        m = self.m
        name = m.pick(
            (
                *(n.encode() for n in DASHBOARD_FILES),
                b"index.html",
                b"..%2F__init__.py",
                b"..%2F..%2F..%2Fauth.py",
                b"%2e%2e%2f%2e%2e%2fregions.toml",
                b"dashboard.js%00.png",
                b"x" * 2000,
            )
        )
        request = self._request("GET /dashboard/{name}", b"GET", b"/dashboard/" + name)
        request.expect = "read" if name.decode() in DASHBOARD_FILES else "refuse"
        return request

    def static(self) -> HttpRequest:
        m = self.m
        escape = m.chance(0.3)
        if escape:
            name = m.pick(
                (
                    b"../../../../../../etc/passwd",
                    b"..%2F..%2F..%2F..%2Fetc%2Fpasswd",
                    b"%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
                    b"..\\..\\..\\etc\\passwd",
                    b"../core.py",
                    b"%2e%2e%2fcore.py",
                )
            )
        else:
            name = m.pick(STATIC_FILES).encode()
        method = m.pick((b"GET", b"GET", b"HEAD"))
        request = self._request("MOUNT /docs/static", method, b"/docs/static/" + name)
        if m.chance(0.2):
            request.headers.append((b"Range", m.pick((b"bytes=0-10", b"bytes=-5", b"bytes=99-1"))))
        request.expect = "refuse" if escape else "read"
        return request

    def wrong_method(self) -> HttpRequest:
        """A method the path does not take (405), or one that is no method at all (400)."""
        m = self.m
        doc = self.pick_doc(seeded=0.5, bad=0.1)
        segment = self.segment(doc)
        path, allowed = m.pick(
            (
                (b"/v1/docs/" + segment, {b"GET", b"PATCH", b"DELETE"}),
                (b"/v1/docs/" + segment + b"/update", {b"GET", b"POST"}),
                (b"/v1/docs/" + segment + b"/placement", {b"GET", b"PUT"}),
                (b"/v1/docs/" + segment + b"/replicas", {b"GET"}),
                (b"/v1/docs", {b"GET"}),
                (b"/v1/health", {b"GET"}),
                (b"/v1/cluster", {b"GET"}),
                (b"/v1/cluster/join", {b"POST"}),
                (b"/metrics", {b"GET"}),
            )
        )
        method = m.pick([x for x in METHODS if x not in allowed] + list(ODD_METHODS))
        body = random_update(m.rng)[0] if m.chance(0.5) else m.dumps(random_ops(m))
        headers = [(b"Content-Type", m.pick((OCTET, JSON)))]
        auth, _ = self.authorization()
        request = self._request("wrong method", method, path, b"", [*headers, *auth], body, doc=doc)
        request.expect = "refuse"
        return request

    def no_route(self) -> HttpRequest:
        """Targets no route matches, request lines that are not HTTP/1.1, bytes that are
        not HTTP at all."""
        m = self.m
        roll = m.rng.randrange(10)
        if roll < 5:
            target = m.pick(
                (
                    b"/v2/docs",
                    b"/v1/docs/fz-1/extra/segments",
                    b"//v1//health",
                    b"/v1/health/",
                    b"/v1/docs/",
                    b"/v1/sync/fz-1",
                    b"/v1/peer",
                    b"/%2e%2e/%2e%2e/etc/passwd",
                    b"/v1/%00",
                    b"/v1/docs/%zz",
                    b"*",
                    b"http://evil.example/v1/health",
                    b"/" + b"a" * m.pick((100, 10000, 70000)),
                    b"/\xff\xfe",
                    b"/v1/docs?" + b"&".join([b"a=1"] * 2000),
                    b"v1/health",
                )
            )
            method = m.pick((b"GET", b"POST", b"OPTIONS"))
            return self._request("no route", method, target)
        if roll < 8:
            request = self._request("no route", b"GET", b"/v1/health")
            request.version = m.pick(
                (
                    b"HTTP/1.0",
                    b"HTTP/2.0",
                    b"HTTP/0.9",
                    b"HTTP/1.1x",
                    b"HTTP/9.9",
                    b"",
                    b"HTTPS/1.1",
                )
            )
            return request
        request = self._request("no route", b"GET", b"/")
        request.raw = m.pick(
            (
                b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + m.random_bytes(40),
                b"GET / HTTP/1.1\r\nHost: x\r\n" + m.random_bytes(50) + b"\r\n\r\n",
                b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\n12345",
                b"POST /v1/docs/fz-1/update HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
                b"POST /v1/docs/fz-1/update HTTP/1.1\r\nHost: x\r\nContent-Length: 1e3\r\n\r\n",
                b"POST /v1/docs/fz-1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                b"Content-Length: 3\r\n\r\n0\r\n\r\n",
                b"GET /v1/health HTTP/1.1\r\n" + b"X: y\r\n" * 5000 + b"\r\n",
                b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\tfolded\r\n\r\n",
                b"GET /v1/health HTTP/1.1\nHost: x\n\n",
                m.random_bytes(200),
                b"\r\n" * 100,
            )
        )
        return request
