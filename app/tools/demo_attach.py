"""A cluster that is already running (the Docker Compose one, or any other) as the
:class:`~app.tools.demo_cluster.DemoCluster` of ``meridian demo --attach``.

Its nodes are those ``regions.toml`` lists, reached at ``http://<listed address>`` or at the URL
given for them (``--node NODE_ID=URL``); each must answer ``GET /v1/health`` as the node and
region the file lists. The partition step cuts a region off through the control listener of
the WAN emulator service (``python -m app.tools.wan_service --control``,
:mod:`app.tools.wan_service`), whose proxies are labelled with their region pairs. Nothing is
started or stopped here; a region the demo isolated is rejoined when the cluster closes,
however the demo ends.

Errors: :class:`~app.tools.demo_cluster.DemoError`, as for the local cluster.
"""

from __future__ import annotations

import contextlib
import json
import sys
import urllib.parse
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from ..config import ClusterConfig, ConfigError, parse_listen
from .demo_cluster import DemoError, DemoNode, Observer, Response
from .wan_service import ControlError, send_command

__all__ = ["AttachedCluster", "RemoteNode", "open_attached", "parse_node_url"]


@dataclass(frozen=True, slots=True)
class RemoteNode:
    node_id: str
    region: str
    url: str


def parse_node_url(value: str) -> tuple[str, str]:
    """``NODE_ID=http://HOST:PORT`` -> (node id, URL without a trailing slash); raises
    ValueError when malformed (only plain ``http://`` is spoken)."""
    node_id, sep, url = value.partition("=")
    url = url.rstrip("/")
    parsed = urllib.parse.urlsplit(url)
    if not sep or not node_id or parsed.scheme != "http" or parsed.path or parsed.query:
        raise ValueError(f"{value!r} must be NODE_ID=http://HOST:PORT")
    try:
        parse_listen(parsed.netloc)
    except ConfigError:
        raise ValueError(f"{value!r} must be NODE_ID=http://HOST:PORT (with a port)") from None
    return node_id, url


class AttachedCluster:
    """The nodes of ``config`` at their URLs (``urls`` overrides some: node id -> URL), and
    the WAN control at ``wan_control``. Use :func:`open_attached`.

    Raises DemoError for a node id in ``urls`` that ``config`` does not list.
    """

    def __init__(
        self,
        config: ClusterConfig,
        *,
        urls: dict[str, str],
        wan_control: tuple[str, int],
        say: Callable[[str], None] | None = None,
    ) -> None:
        self.config, self.wan_control = config, wan_control
        members = config.members()
        if not members:
            raise DemoError(f"{config.source} lists no nodes under [regions]")
        listed = [m.node_id for m in members]
        if unknown := sorted(set(urls) - set(listed)):
            raise DemoError(
                f"--node {unknown[0]}: {config.source} lists no such node "
                f"(it lists {', '.join(listed)})"
            )
        self.nodes = {
            m.node_id: RemoteNode(m.node_id, m.region, urls.get(m.node_id, f"http://{m.address}"))
            for m in members
        }
        self.observer = Observer(self.nodes.values(), say)
        # Regions isolate() cut off and rejoin() has not restored yet: rejoined by aclose().
        self._isolated: set[str] = set()

    def _control_address(self) -> str:
        return f"{self.wan_control[0]}:{self.wan_control[1]}"

    async def control(self, command: str) -> str:
        """One WAN control command; DemoError when it is refused or the control is unreachable."""
        try:
            return await send_command(self.wan_control, command)
        except (ControlError, OSError) as exc:
            raise DemoError(f"WAN control at {self._control_address()}: {command}: {exc}") from exc

    async def check_control(self) -> None:
        """DemoError unless the WAN control answers and labels links with every region."""
        status = json.loads(await self.control("status"))
        labelled = {r for link in status["links"] for r in link["regions"] or ()}
        missing = sorted(set(self.config.regions) - labelled)
        if len(self.config.regions) > 1 and missing:
            raise DemoError(
                f"the WAN control at {self._control_address()} has no link labelled with "
                f"{', '.join(missing)}: start python -m app.tools.wan_service with "
                "--listen FROM:TO@HOST:PORT=TARGET:PORT:LATENCY_MS"
            )
        if status["isolated"] or status["cut"]:
            cut = [*status["isolated"], *(f"{a}->{b}" for a, b in status["cut"])]
            print(
                f"meridian demo: warning: the WAN is already cut ({', '.join(cut)})",
                file=sys.stderr,
                flush=True,
            )

    async def wait_ready(self, timeout: float) -> tuple[float, float]:
        return await self.observer.wait_ready(timeout, check=self._check_identity)

    def _check_identity(self, node: DemoNode, answer: Response) -> None:
        try:
            health = answer.json()
            found = (health["node"], health["region"])
        except (ValueError, KeyError, TypeError):
            raise DemoError(f"{node.url} is not a Meridian node (GET /v1/health)") from None
        if found != (node.node_id, node.region):
            raise DemoError(
                f"{node.url} is node {found[0]} of region {found[1]}, but "
                f"{self.config.source} lists {node.node_id} of region {node.region} there: "
                f"pass --node {node.node_id}=URL"
            )

    async def isolate(self, region: str) -> None:
        self._isolated.add(region)
        await self.control(f"isolate {region}")

    async def rejoin(self, region: str) -> None:
        await self.control(f"rejoin {region}")
        self._isolated.discard(region)

    async def aclose(self) -> None:
        """Rejoins the regions still isolated; a failure is reported, not raised."""
        for region in sorted(self._isolated):
            try:
                await self.rejoin(region)
            except DemoError as exc:
                print(f"meridian demo: warning: {exc}", file=sys.stderr, flush=True)


@contextlib.asynccontextmanager
async def open_attached(
    config: ClusterConfig,
    *,
    urls: dict[str, str],
    wan_control: tuple[str, int],
    say: Callable[[str], None] | None = None,
) -> AsyncIterator[AttachedCluster]:
    """An :class:`AttachedCluster` whose WAN control was checked; on exit, what it isolated
    is rejoined. Raises DemoError."""
    cluster = AttachedCluster(config, urls=urls, wan_control=wan_control, say=say)
    try:
        await cluster.check_control()
        yield cluster
    finally:
        await cluster.aclose()
