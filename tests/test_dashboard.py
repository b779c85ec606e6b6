"""The dashboard at ``/``, in a real headless Chromium (Debian's ``chromium`` and
``chromium-driver``, driven by Selenium) against a real 3-region cluster: the page loads with
no console errors, draws every region with this node's links live (a cut shows, a heal
clears), and an edit made in one node's page appears in another node's page; against a
cluster with placement (each document on 2 of the 3 regions), an opened document's placement
(home, regions, holders marked on the picture, pin) and which node served the page's reads
(forwarded by a node that does not hold it), and each node's documents and hints; plus the
files it is served from and ``GET /v1/docs/{id}/replicas`` over plain HTTP.

``scripts/test.sh`` installs the browser when it is missing (as root, with apt).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select

from app.http.cluster import _view_of

from .cluster import SECRET, Cluster
from .support import TIMEOUT_FACTOR, ThreadedNode, wait_for
from .test_auth import _requiring_tokens, _token

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
LAYOUT = {"us-east": 1, "eu-west": 1, "ap-south": 1}
#: Each document on 2 of the 3 regions, one node in each.
PLACEMENT = {"replicas": 2, "nodes_per_region": 1}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path_factory.mktemp("dashboard"), LAYOUT, latency_ms=5).start()
    try:
        cluster.wait_links_up()
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(scope="module")
def placed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The same regions, with placement: a document lives on 2 of them."""
    root = tmp_path_factory.mktemp("dashboard-placed")
    cluster = Cluster(root, LAYOUT, latency_ms=5, placement=PLACEMENT).start()
    try:
        cluster.wait_links_up()
        yield cluster
    finally:
        cluster.close()


class Browser:
    """One headless Chromium showing one node's dashboard."""

    def __init__(self, profile: Path) -> None:
        for program in (CHROMIUM, CHROMEDRIVER):
            if shutil.which(program) is None:
                pytest.fail(
                    f"{program} is missing: install Debian's chromium and chromium-driver "
                    "(scripts/test.sh does, as root)"
                )
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        # Headless, no sandbox (root in CI), and none of Chromium's own network traffic: this
        # machine's network is closed, and the test must reach loopback only.
        for flag in (
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--window-size=1400,1300",
            f"--user-data-dir={profile}",
        ):
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
        self.driver.set_page_load_timeout(30 * TIMEOUT_FACTOR)

    def open(self, url: str) -> None:
        self.driver.get(url)

    def find(self, selector: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, selector)

    def all(self, selector: str) -> list[WebElement]:
        return self.driver.find_elements(By.CSS_SELECTOR, selector)

    # Reads go through one script each: the page redraws its map every second, so elements
    # found in one call may be gone in the next (a stale reference).

    def attributes(self, selector: str, name: str) -> list[str | None]:
        """``name`` of every element matching ``selector``, read at one instant."""
        values: list[str | None] = self.driver.execute_script(
            "return [...document.querySelectorAll(arguments[0])]"
            ".map((element) => element.getAttribute(arguments[1]));",
            selector,
            name,
        )
        return values

    def attribute(self, selector: str, name: str) -> str | None:
        """``name`` of the first match; None while there is none."""
        values = self.attributes(selector, name)
        return values[0] if values else None

    def text(self, selector: str) -> str:
        """The rendered text of the first match; "" while there is none."""
        text: str = self.driver.execute_script(
            "const element = document.querySelector(arguments[0]);"
            "return element ? element.innerText : '';",
            selector,
        )
        return text

    def links(self) -> dict[str, str]:
        """The map's links (``a|b`` -> state), read at one instant."""
        links: dict[str, str] = self.driver.execute_script(
            "return Object.fromEntries([...document.querySelectorAll('#map .link')]"
            ".map((link) => [link.dataset.link, link.dataset.state]));"
        )
        return links

    def dataset(self, selector: str) -> dict[str, str] | None:
        """The ``data-*`` attributes of the first match; None while there is none."""
        values: dict[str, str] | None = self.driver.execute_script(
            "const element = document.querySelector(arguments[0]);"
            "return element ? {...element.dataset} : null;",
            selector,
        )
        return values

    def console_errors(self) -> list[dict[str, Any]]:
        return [entry for entry in self.driver.get_log("browser") if entry["level"] == "SEVERE"]

    def close(self) -> None:
        self.driver.quit()


@pytest.fixture
def browsers(tmp_path: Path) -> Iterator[list[Browser]]:
    opened: list[Browser] = []
    try:
        opened += [Browser(tmp_path / "profile-1"), Browser(tmp_path / "profile-2")]
        yield opened
    finally:
        for browser in opened:
            browser.close()


def _content(browser: Browser) -> Any:
    text = browser.text("#doc-content")
    try:
        return json.loads(text)
    except ValueError:
        return None


def test_page_shows_the_cluster_and_edits_travel_between_nodes(
    cluster: Cluster, browsers: list[Browser]
) -> None:
    us, eu = cluster["us-east-1"], cluster["eu-west-1"]
    with eu.client() as client:
        answer = client.patch(
            "/v1/docs/board",
            json={"ops": [{"op": "set", "path": ["meta", "title"], "value": "Plan"}]},
        )
        assert answer.status_code == 200, answer.text
    left, right = browsers
    left.open(us.url + "/")
    right.open(eu.url + "/")

    # Every region, every node, and this node's link to each peer, up.
    for browser, node in ((left, us), (right, eu)):
        wait_for(
            lambda browser=browser: len(browser.all("#map .region")) == 3,
            timeout=20,
            what="three regions drawn",
        )
        assert set(browser.attributes("#map .region", "data-region")) == set(LAYOUT)
        nodes = set(browser.attributes("#map .node", "data-node"))
        assert nodes == {"us-east-1", "eu-west-1", "ap-south-1"}
        assert browser.attribute("#map .node.self", "data-node") == node.node_id
        # The whole mesh: this node's two links and the one between the other two nodes.
        wait_for(
            lambda browser=browser: (
                browser.links()
                == {
                    "ap-south-1|eu-west-1": "up",
                    "ap-south-1|us-east-1": "up",
                    "eu-west-1|us-east-1": "up",
                }
            ),
            timeout=20,
            what="every link drawn up",
        )
        assert node.node_id in browser.text("#identity")
        assert len(browser.all("#peers tbody tr")) == 2

    # The document list, and the document opened in both pages.
    for browser in browsers:
        wait_for(
            lambda browser=browser: browser.all('#doc-list li[data-id="board"]'),
            timeout=20,
            what="board listed",
        )
        browser.find('#doc-list li[data-id="board"]').click()
        wait_for(
            lambda browser=browser: _content(browser) == {"meta": {"title": "Plan"}},
            timeout=20,
            what="board's JSON shown",
        )
        wait_for(
            lambda browser=browser: (
                set(browser.attributes("#replicas .replica", "data-region")) == set(LAYOUT)
            ),
            timeout=20,
            what="the regions holding board",
        )

    # An edit in us-east's page (the form) appears in eu-west's page, live.
    Select(left.find("#edit-op")).select_by_value("append")
    left.find("#edit-path").send_keys("items")
    left.find("#edit-values").send_keys('["milk", {"qty": 2}]')
    left.find("#edit-apply").click()
    wait_for(lambda: "applied" in left.text("#edit-result"), timeout=20, what="edit applied")
    expected = {"meta": {"title": "Plan"}, "items": ["milk", {"qty": 2}]}
    wait_for(lambda: _content(right) == expected, timeout=20, what="edit seen in eu-west's page")
    assert "us-east-1" in right.text("#doc-meta")

    # And back: several operations at once from eu-west's page.
    right.find("#edit-ops-apply").find_element(By.XPATH, "..").click()  # open <details>
    right.find("#edit-ops").send_keys(
        '[{"op": "insert_text", "path": ["notes"], "index": 0, "text": "héllo"},'
        ' {"op": "delete", "path": ["meta", "title"]}]'
    )
    right.find("#edit-ops-apply").click()
    expected = {"meta": {}, "items": ["milk", {"qty": 2}], "notes": "héllo"}
    wait_for(lambda: _content(left) == expected, timeout=20, what="edit seen in us-east's page")

    # A bad operation: a clear error on the page, nothing changed.
    Select(right.find("#edit-op")).select_by_value("delete_text")
    right.find("#edit-path").send_keys("items")
    right.find("#edit-apply").click()
    wait_for(lambda: "422" in right.text("#edit-result"), timeout=20, what="422 shown")
    with us.client() as client:
        assert client.get("/v1/docs/board").json()["content"] == expected

    # A new document, created from the page.
    left.find("#doc-filter").send_keys("fresh-doc\n")
    wait_for(lambda: left.text("#doc-id") == "fresh-doc", timeout=20, what="fresh-doc opened")
    Select(left.find("#edit-op")).select_by_value("set")
    left.find("#edit-path").clear()
    left.find("#edit-path").send_keys("a/b")
    left.find("#edit-value").send_keys("plain words")
    left.find("#edit-apply").click()
    wait_for(
        lambda: _content(left) == {"a": {"b": "plain words"}}, timeout=20, what="fresh-doc shown"
    )
    wait_for(
        lambda: right.all('#doc-list li[data-id="fresh-doc"]'),
        timeout=20,
        what="fresh-doc listed on eu-west's page",
    )

    # The 422 above is the page's own error answer; anything else in the console is a bug.
    for browser in browsers:
        errors = [e for e in browser.console_errors() if "status of 422" not in e["message"]]
        assert errors == [], errors


def test_page_shows_a_cut_link_live(cluster: Cluster, browsers: list[Browser]) -> None:
    us = cluster["us-east-1"]
    left = browsers[0]
    left.open(us.url + "/#doc=board")
    link = '#map .link[data-peer="ap-south-1"]'
    wait_for(lambda: left.attribute(link, "data-state") == "up", timeout=20, what="link up")
    wait_for(
        lambda: (
            left.attribute('#replicas .replica[data-node="ap-south-1"]', "class")
            == "replica in_sync"
        ),
        timeout=20,
        what="ap-south's copy in sync",
    )
    cluster.wan.do(lambda: cluster.wan.wan.isolate("ap-south"))
    try:
        wait_for(
            lambda: left.attribute(link, "data-state") not in (None, "up"),
            timeout=30,
            what="the cut link drawn down",
        )
        # The link between the two other nodes too, as they report it.
        wait_for(
            lambda: left.links().get("ap-south-1|eu-west-1") not in (None, "up"),
            timeout=30,
            what="eu-west-1's link to ap-south-1 drawn down",
        )
        assert left.links()["eu-west-1|us-east-1"] == "up"
        with us.client() as client:
            ops = [{"op": "set", "path": ["meta", "during"], "value": "cut"}]
            assert client.patch("/v1/docs/board", json={"ops": ops}).status_code == 200
        wait_for(
            lambda: (
                "unreachable"
                in (left.attribute('#replicas .replica[data-node="ap-south-1"]', "class") or "")
            ),
            timeout=20,
            what="ap-south's copy unreachable",
        )
        lag = '#peers tr[data-peer="ap-south-1"] td:nth-child(5)'
        wait_for(lambda: left.text(lag) not in ("", "0 ms"), timeout=20, what="lag shown")
    finally:
        cluster.wan.do(cluster.wan.wan.heal)
    wait_for(lambda: left.attribute(link, "data-state") == "up", timeout=30, what="link up again")
    assert left.console_errors() == []


# -- placement: where a document lives, which node served it -------------------------------


def _placement(cluster: Cluster, node_id: str, doc_id: str) -> dict[str, Any] | None:
    """``GET /v1/docs/{id}/placement`` at ``node_id`` (its own records); None on a 404."""
    with cluster[node_id].client() as client:
        answer = client.get(f"/v1/docs/{doc_id}/placement")
    if answer.status_code == 404:
        return None
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def _known_everywhere(cluster: Cluster, doc_id: str) -> dict[str, Any]:
    """The document's placement once every node's records agree on it."""

    def agreed() -> dict[str, Any] | None:
        views = [_placement(cluster, node, doc_id) for node in cluster.members]
        first = views[0]
        return first if first is not None and all(view == first for view in views) else None

    return wait_for(agreed, timeout=20, what=f"{doc_id}'s placement known on every node")


def _write(cluster: Cluster, node_id: str, doc_id: str, value: Any) -> str:
    """Sets ``meta.note`` in ``doc_id`` through ``node_id``; returns the node that served
    it."""
    with cluster[node_id].client() as client:
        ops = [{"op": "set", "path": ["meta", "note"], "value": value}]
        answer = client.patch(f"/v1/docs/{doc_id}", json={"ops": ops})
    assert answer.status_code == 200, answer.text
    return answer.headers["x-meridian-served-by"]


def _forwarded_reads(cluster: Cluster, node_id: str) -> float:
    """The reads of a document ``node_id`` forwarded to a holder so far (its /metrics)."""
    with cluster[node_id].client() as client:
        metrics = client.get("/metrics").text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("meridian_forwarded_requests_total{")
        and 'method="GET"' in line
        and "/v1/docs/{doc_id}" in line
    )


def _served(page: Browser) -> dict[str, str] | None:
    """``#served-by``'s node and whether this node forwarded the read, once both are known
    (forwarded: once the page knows which node it is on)."""
    served = page.dataset("#served-by")
    return served if served and "forwarded" in served else None


def test_page_shows_where_a_document_lives_and_which_node_served_it(
    placed: Cluster, browsers: list[Browser]
) -> None:
    _write(placed, "us-east-1", "atlas", "first")
    placement = _known_everywhere(placed, "atlas")
    holders = placement["holders"]
    assert placement["home"] == "us-east" and len(holders) == 2, placement
    assert placement["pinned"] is False and placement["followers"] == []
    # The page of the node that does not hold it: its reads are forwarded to a holder.
    (outside,) = set(placed.members) - set(holders)
    page, holder_page = browsers
    reads_before = _forwarded_reads(placed, outside)
    opened = time.monotonic()
    page.open(f"{placed[outside].url}/#doc=atlas")
    wait_for(
        lambda: page.attributes("#placement-holders [data-node]", "data-node") == holders,
        timeout=20,
        what="the holders shown",
    )
    assert page.attributes("#placement-home [data-region]", "data-region") == ["us-east"]
    regions = page.attributes("#placement-regions [data-region]", "data-region")
    assert regions == placement["regions"]
    assert page.dataset("#placement") == {"pinned": "false"}
    assert page.text("#placement-pinned") == "not pinned"
    assert page.text("#placement-followers") == "none"
    assert page.text("#placement-policy").startswith("default")
    assert not page.find("#doc-pinned").is_displayed()

    # Which node served the page's read of it: a holder, forwarded by this node.
    served = wait_for(
        lambda: _served(page), timeout=20, what="served by shown, and whether forwarded"
    )
    assert served["node"] in holders and served["forwarded"] == "true", served
    text = page.text("#served-by")
    assert f"served by {served['node']}" in text and "forwarded" in text, text
    assert f"by {outside} (this node)" in text, text
    # The copies, as the holder that answered sees them.
    wait_for(
        lambda: set(page.attributes("#replicas .replica", "data-node")) == set(holders),
        timeout=20,
        what="the holders' copies listed",
    )
    assert f"as {served['node']} sees them" in page.text("#replicas")

    # On the picture: the holders' boxes marked, the regions holding it, its home, and the
    # node that served the read.
    def marked() -> bool:
        return sorted(page.attributes("#map .node.holder", "data-node")) == sorted(holders)

    wait_for(marked, timeout=20, what="the holders marked on the picture")
    assert page.attribute("#map .node.self", "data-node") == outside
    assert page.attribute(f'#map .node[data-node="{outside}"]', "data-role") == ""
    assert sorted(page.attributes("#map .region.placed", "data-region")) == sorted(regions)
    assert page.attributes("#map .region.home", "data-region") == ["us-east"]
    assert page.attributes("#map .node.served", "data-node") == [served["node"]]

    # An edit from this page is served by a holder too, and said so.
    page.find("#edit-path").send_keys("meta/note")
    page.find("#edit-value").send_keys("second")
    page.find("#edit-apply").click()
    wait_for(lambda: "applied" in page.text("#edit-result"), timeout=20, what="edit applied")
    result = page.text("#edit-result")
    assert "(forwarded)" in result and any(f"served by {h}" in result for h in holders), result

    # A holder's page serves it from its own copy.
    holder = holders[0]
    holder_page.open(f"{placed[holder].url}/#doc=atlas")
    wait_for(
        lambda: holder_page.dataset("#served-by") == {"node": holder, "forwarded": "false"},
        timeout=20,
        what="served by the holder itself",
    )
    assert "(this node), from its own copy" in holder_page.text("#served-by")
    assert holder_page.attribute("#map .node.self", "class") == "node self holder served"
    wait_for(
        lambda: _content(holder_page) == {"meta": {"note": "second"}},
        timeout=20,
        what="the edit shown on the holder's page",
    )

    # Every node's documents on the picture: what each answers in /v1/cluster.
    def counts() -> bool:
        drawn = dict(
            zip(
                page.attributes("#map .node", "data-node"),
                page.attributes("#map .node", "data-documents"),
                strict=True,
            )
        )
        held = {
            node: str(placed.cluster_view(node)["documents"]["live"]) for node in placed.members
        }
        return drawn == held

    wait_for(counts, timeout=20, what="each node's documents drawn")
    assert page.attribute("#map .node.self", "data-hints") == "0"
    for browser in browsers:
        assert browser.console_errors() == []

    # Watching it forwarded few reads (on opening the document and its copies, then one every
    # 6 s at most), so the page alone never gains a follower copy where it is watched from.
    reads = _forwarded_reads(placed, outside) - reads_before
    elapsed = time.monotonic() - opened
    assert 1 <= reads <= 2 + elapsed / 6 + 1, (reads, elapsed)
    assert _placement(placed, outside, "atlas")["followers"] == []  # type: ignore[index]


def test_page_shows_a_pinned_document(placed: Cluster, browsers: list[Browser]) -> None:
    with placed["us-east-1"].client() as client:
        answer = client.put(
            "/v1/docs/vault/placement", json={"regions": ["eu-west"], "pinned": True}
        )
        assert answer.status_code == 200, answer.text
    assert _write(placed, "us-east-1", "vault", "resident") == "eu-west-1"
    placement = _known_everywhere(placed, "vault")
    assert placement["holders"] == ["eu-west-1"] and placement["pinned"], placement
    page = browsers[0]
    page.open(f"{placed['us-east-1'].url}/#doc=vault")
    wait_for(
        lambda: page.dataset("#placement") == {"pinned": "true"},
        timeout=20,
        what="the pin shown",
    )
    assert page.find("#doc-pinned").is_displayed()
    assert page.text("#placement-pinned").startswith("pinned")
    assert "eu-west" in page.text("#placement-pinned")
    assert page.text("#placement-policy").startswith("regions")
    assert page.attributes("#placement-holders [data-node]", "data-node") == ["eu-west-1"]
    wait_for(
        lambda: page.dataset("#served-by") == {"node": "eu-west-1", "forwarded": "true"},
        timeout=20,
        what="served by eu-west-1, forwarded",
    )
    wait_for(
        lambda: page.attributes("#map .node.holder", "data-node") == ["eu-west-1"],
        timeout=20,
        what="eu-west-1 marked as the holder",
    )
    assert page.attributes("#map .region.placed", "data-region") == ["eu-west"]
    assert page.console_errors() == []


def test_page_shows_a_nodes_hints(placed: Cluster, browsers: list[Browser]) -> None:
    """A write whose holders are cut off is kept where it arrived as a hint: that node's page
    counts it until it is handed off."""
    _write(placed, "eu-west-1", "kept", "first")
    placement = _known_everywhere(placed, "kept")
    (outside,) = set(placed.members) - set(placement["holders"])
    region = placed[outside].region
    page = browsers[0]
    page.open(f"{placed[outside].url}/")
    self_hints = f'#map .node[data-node="{outside}"]'
    wait_for(lambda: page.attribute(self_hints, "data-hints") == "0", timeout=20, what="no hints")
    placed.wan.do(lambda: placed.wan.wan.isolate(region))
    try:
        wait_for(
            lambda: all(p["state"] != "up" for p in placed.cluster_view(outside)["peers"]),
            timeout=30,
            what=f"{outside}'s links down",
        )
        assert _write(placed, outside, "kept", "while cut off") == outside
        wait_for(
            lambda: page.attribute(self_hints, "data-hints") == "1",
            timeout=20,
            what="the hint counted on the picture",
        )
        assert "1 hint" in page.text("#node-stats")
        node_text = page.driver.execute_script(
            "return document.querySelector(arguments[0]).textContent;", self_hints
        )
        assert "1 hint" in node_text, node_text
    finally:
        placed.wan.do(placed.wan.wan.heal)
    placed.wait_links_up()
    wait_for(
        lambda: page.attribute(self_hints, "data-hints") == "0",
        timeout=30,
        what="the hint handed off",
    )
    assert page.console_errors() == []


# -- the files and the replicas endpoint, over HTTP -------------------------------------------


def test_files_are_served_with_a_strict_policy(tmp_path: Path) -> None:
    node = ThreadedNode(tmp_path / "eu-west-1").start()
    try:
        _check_files(node)
    finally:
        node.stop()


def _check_files(node: ThreadedNode) -> None:
    with node.client() as client:
        page = client.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        policy = page.headers["content-security-policy"]
        assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert "/dashboard/dashboard.js" in page.text
        for name, kind in (("dashboard.js", "text/javascript"), ("dashboard.css", "text/css")):
            asset = client.get(f"/dashboard/{name}")
            assert asset.status_code == 200 and asset.headers["content-type"].startswith(kind)
        # Only the listed files: nothing else on disk can be named.
        for path in (
            "/dashboard/__init__.py",
            "/dashboard/index.html",
            "/dashboard/..%2f..%2fpyproject.toml",
            "/dashboard/%2e%2e",
            "/dashboard/",
        ):
            answer = client.get(path)
            assert answer.status_code == 404, (path, answer.text)


def test_replicas_of_a_document(cluster: Cluster) -> None:
    with cluster["eu-west-1"].client() as client:
        ops = [{"op": "set", "path": ["m", "k"], "value": 1}]
        assert client.patch("/v1/docs/held", json={"ops": ops}).status_code == 200

        def all_in_sync() -> dict[str, Any] | None:
            body: dict[str, Any] = client.get("/v1/docs/held/replicas").json()
            states = {r["node"]: r["state"] for r in body["replicas"]}
            return body if set(states.values()) == {"in_sync"} else None

        body = wait_for(all_in_sync, timeout=20, what="every copy in sync")
        assert body["regions"] == sorted(LAYOUT)
        assert body["incarnation"] == 1
        assert body["replicas"][0]["node"] == "eu-west-1"
        assert {r["node"] for r in body["replicas"]} == {"eu-west-1", "us-east-1", "ap-south-1"}
        view = client.get("/v1/docs/held").json()
        assert sorted(view["placement"]["regions"]) == sorted(LAYOUT)
        assert client.get("/v1/docs/bad%20id/replicas").status_code == 400


def test_page_with_access_tokens(tmp_path: Path, browsers: list[Browser]) -> None:
    admin = _token(prefix="")
    node = _requiring_tokens(ThreadedNode(tmp_path / "eu-west-1")).start()
    try:
        page = browsers[0]
        page.open(node.url + "/")
        wait_for(lambda: "access token" in page.text("#banner"), timeout=20, what="token asked")
        page.find("#token").send_keys(_token(prefix="team-a:"))
        page.find("#token-form button").click()
        wait_for(lambda: "eu-west" in page.text("#identity"), timeout=20, what="cluster shown")
        wait_for(lambda: not page.text("#banner"), timeout=20, what="banner gone")

        # Within the grant: the edit is applied and the live view (WS ?token=) shows it.
        page.find("#doc-filter").send_keys("team-a:notes\n")
        page.find("#edit-path").send_keys("a/b")
        page.find("#edit-value").send_keys("1")
        page.find("#edit-apply").click()
        wait_for(lambda: _content(page) == {"a": {"b": 1}}, timeout=20, what="edit shown live")

        # Outside it: refused, said on the page, nothing written.
        page.find("#doc-filter").clear()
        page.find("#doc-filter").send_keys("other\n")
        wait_for(lambda: "refused" in page.text("#doc-meta"), timeout=20, what="stream refused")
        page.find("#edit-apply").click()
        wait_for(lambda: "does not grant" in page.text("#edit-result"), timeout=20, what="403")
        with node.client() as client:
            answer = client.get("/v1/docs/other", headers={"Authorization": f"Bearer {admin}"})
            assert answer.status_code == 404, answer.text
        # Only the refusals the test provoked reached the console.
        for entry in page.console_errors():
            assert any(f"status of {code}" in entry["message"] for code in (401, 403)) or (
                "4403" in entry["message"]
            ), entry
    finally:
        node.stop()


def test_overview_of_every_node(cluster: Cluster) -> None:
    with cluster["us-east-1"].client() as client:

        def every_link_up() -> dict[str, Any] | None:
            body: dict[str, Any] = client.get("/v1/cluster/overview").json()
            ends = [link for node in body["nodes"] for link in node["links"]]
            measured = all(link["rtt_ms"] is not None for link in ends)
            up = {link["state"] for link in ends} == {"up"}
            return body if len(ends) == 6 and up and measured else None

        body = wait_for(every_link_up, timeout=20, what="six link ends up")
    assert body["node"] == "us-east-1"
    nodes = {entry["node"]: entry for entry in body["nodes"]}
    assert body["nodes"][0]["node"] == "us-east-1"
    assert set(nodes) == {"us-east-1", "eu-west-1", "ap-south-1"}
    for node_id, entry in nodes.items():
        assert entry["reachable"] and entry["error"] is None
        assert entry["region"] == cluster[node_id].region
        assert isinstance(entry["documents"], int)
        assert {link["peer"] for link in entry["links"]} == set(nodes) - {node_id}
        assert all(link["rtt_ms"] is not None for link in entry["links"])
    # No token needed here, so whatever Authorization says is not forwarded (nor a crash).
    with cluster["us-east-1"].client() as client:
        odd = client.get("/v1/cluster/overview", headers={"Authorization": b"Bearer \xc3\xa9"})
        assert odd.status_code == 200
        assert all(entry["reachable"] for entry in odd.json()["nodes"])

    # A node that does not answer is listed as such, with why; the others still are.
    cluster.kill("ap-south-1")
    try:
        with cluster["us-east-1"].client() as client:

            def silent() -> dict[str, Any] | None:
                body: dict[str, Any] = client.get("/v1/cluster/overview").json()
                entry = {e["node"]: e for e in body["nodes"]}["ap-south-1"]
                return entry if not entry["reachable"] else None

            entry = wait_for(silent, timeout=20, what="ap-south-1 listed as not answering")
            assert entry["error"] and entry["links"] == [] and entry["documents"] is None
    finally:
        cluster.start_node("ap-south-1")
        cluster.wait_links_up()


def test_overview_with_access_tokens(tmp_path: Path) -> None:
    """The token the caller sent, verified, is what the node shows its peers."""
    cluster = Cluster(tmp_path, {"us-east": 1, "eu-west": 1}, latency_ms=5, auth=True).start()
    try:
        headers = {"Authorization": f"Bearer {_token(prefix='', secret=SECRET.encode())}"}

        def links_up() -> bool:
            with cluster["eu-west-1"].client() as client:
                body = client.get("/v1/cluster", headers=headers).json()
            return all(peer["state"] == "up" for peer in body["peers"])

        wait_for(links_up, timeout=30, what="the link up")
        with cluster["us-east-1"].client() as client:
            assert client.get("/v1/cluster/overview").status_code == 401
            bad = {"Authorization": "Bearer mrd1.forged.token"}
            assert client.get("/v1/cluster/overview", headers=bad).status_code == 401
            body = client.get("/v1/cluster/overview", headers=headers).json()
        assert [entry["reachable"] for entry in body["nodes"]] == [True, True], body
        assert body["nodes"][1]["links"][0]["peer"] == "us-east-1"
    finally:
        cluster.close()


# -- what a peer answers to the overview, however it answers ----------------------------------


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (httpx.Response(200, text="not json"), "unexpected answer"),
        (httpx.Response(200, json={"node": "someone-else", "peers": []}), "answered as node"),
        (httpx.Response(200, json={"node": "eu-west-1"}), "unexpected answer"),
        (httpx.Response(200, json={"node": "eu-west-1", "documents": {"live": "x"}}), "unexpected"),
        (
            httpx.Response(200, json={"node": "eu-west-1", "documents": {"live": 1}, "peers": [1]}),
            "unexpected answer",
        ),
        (httpx.Response(401, json={"error": {"code": "missing_token"}}), "answered 401"),
        (httpx.Response(500, text="boom"), "answered 500"),
        (httpx.ConnectError("refused"), "cannot reach"),
        (httpx.ReadTimeout("slow"), "no answer within"),
    ],
)
def test_overview_survives_any_answer(answer: httpx.Response | Exception, error: str) -> None:
    """A peer's view is parsed defensively: whatever comes back (or does not), the entry says
    why and the overview is still answered. Logic without I/O: httpx's MockTransport."""

    def respond(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == "Bearer t"
        assert str(request.url) == "http://127.0.0.1:9/v1/cluster"
        if isinstance(answer, Exception):
            raise answer
        return answer

    peer = SimpleNamespace(
        node_id="eu-west-1", member=SimpleNamespace(region="eu-west"), address="127.0.0.1:9"
    )

    async def fetch() -> dict[str, Any]:
        transport = httpx.MockTransport(respond)
        async with httpx.AsyncClient(transport=transport) as client:
            return await _view_of(client, peer, {"Authorization": "Bearer t"})

    entry = asyncio.run(fetch())
    assert entry["reachable"] is False and error in entry["error"], entry
    assert entry["links"] == [] and entry["node"] == "eu-west-1"
