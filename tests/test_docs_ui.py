"""The API docs pages, ``/docs`` (Swagger UI) and ``/redoc``, work offline: every script,
style sheet and icon they load is served by the node itself (from the ``fastapi-offline``
package under ``/docs/static``), none from a CDN; ``/openapi.json`` and the dashboard at
``/`` are unchanged."""

from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from .support import ThreadedNode

#: What each kind of asset must be served as, and its smallest plausible size in bytes (the
#: real bundles are hundreds of kilobytes; an error page or an empty file is far smaller).
EXPECTED = {
    "script": (("text/javascript", "application/javascript"), 100_000),
    "stylesheet": (("text/css",), 10_000),
    "icon": (("image/",), 100),
}


class _Assets(HTMLParser):
    """Collects the (kind, URL) of every ``<script src>`` and ``<link href>`` of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "script" and values.get("src"):
            self.found.append(("script", str(values["src"])))
        elif tag == "link" and values.get("href"):
            rel = (values.get("rel") or "").split()
            kind = "stylesheet" if "stylesheet" in rel else "icon" if "icon" in rel else "link"
            self.found.append((kind, str(values["href"])))


def _assets(page: httpx.Response) -> list[tuple[str, str]]:
    parser = _Assets()
    parser.feed(page.text)
    parser.close()
    return parser.found


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_docs_page_loads_only_local_assets(node: ThreadedNode, path: str) -> None:
    with node.client() as client:
        page = client.get(path)
        assert page.status_code == 200, page.text
        assert page.headers["content-type"].startswith("text/html")
        assets = _assets(page)
        assert any(kind == "script" for kind, _ in assets), page.text
        if path == "/docs":
            assert {kind for kind, _ in assets} >= {"script", "stylesheet", "icon"}, assets
        for kind, url in assets:
            # Only this node: a relative URL, or an absolute one naming this node.
            absolute = urlsplit(urljoin(node.url + path, url))
            assert (absolute.scheme, absolute.netloc) == ("http", urlsplit(node.url).netloc), url
            assert absolute.path.startswith("/docs/static/"), url
            answer = client.get(absolute.path)
            assert answer.status_code == 200, (url, answer.status_code)
            media_types, smallest = EXPECTED.get(kind, (("",), 1))
            assert answer.headers["content-type"].startswith(media_types), (url, answer.headers)
            assert len(answer.content) >= smallest, (url, len(answer.content))


def test_docs_page_points_at_this_nodes_openapi(node: ThreadedNode) -> None:
    with node.client() as client:
        assert "'/openapi.json'" in client.get("/docs").text
        spec = client.get("/openapi.json")
        assert spec.status_code == 200
        assert spec.json()["openapi"].startswith("3.")  # Swagger UI 5 reads OpenAPI 3.1
        # The docs pages and their files are not API routes.
        assert not any(p.startswith(("/docs", "/redoc")) for p in spec.json()["paths"])
        assert client.get("/docs/static/no-such-file.js").status_code == 404
        # The dashboard keeps `/`.
        dashboard = client.get("/")
        assert dashboard.status_code == 200
        assert dashboard.headers["content-type"].startswith("text/html")
        assert "/dashboard/" in dashboard.text
