"""The ``meridian`` command.

    meridian serve --region R --listen HOST:PORT --data DIR [--config regions.toml] [--node-id ID]
                   [--join [HOST:PORT,...]] [--advertise HOST:PORT] [--insecure]
                   [--log-format text|json]
    meridian status [--config regions.toml | --url URL ...] [--token T] [--check] [--json]
                    [--progress] [--timeout SECONDS] [--concurrency N]
    meridian demo  [--config regions.toml] [--data DIR] [--exit]
    meridian demo --attach --wan-control HOST:PORT [--config regions.toml] [--node ID=URL ...]
    meridian token create (--prefix P | --doc ID ...) [--read-only] [--ttl SECONDS]
                          [--subject S] [--config regions.toml]
    meridian node leave --url URL [--timeout SECONDS]
    meridian node remove NODE --url URL
    meridian backup --data DIR --out FILE
    meridian restore --from FILE --data DIR

``serve`` runs one node until SIGTERM or SIGINT, then stops accepting connections, lets the
requests in flight finish (their commits included) and closes the store. Errors a user can fix
(bad configuration, a data directory in use, a newer storage format) print one line and exit
with status 2 (usage) or 1 (runtime).

``status`` asks every node for its view of the cluster and prints it; ``--check`` compares
every document's copies on its holders (see app.tools.status for the exit statuses).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import random
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from crdt import CrdtError

from .auth import create_token
from .config import (
    ClusterConfig,
    ConfigError,
    NodeSettings,
    is_loopback,
    load_config,
    parse_listen,
)
from .errors import MeridianError
from .logs import LOG_FORMATS, bind_node, configure_logging
from .node import VERSION, Node
from .replication import PROTOCOL_VERSIONS

__all__ = ["main"]

log = logging.getLogger("meridian.cli")


def _fail(message: str, status: int = 1) -> int:
    print(f"meridian: error: {message}", file=sys.stderr, flush=True)
    return status


#: The file in a data directory that keeps the id of a node that joined (not listed).
NODE_ID_FILE = "node-id"


def _node_id(
    args: argparse.Namespace, cluster: ClusterConfig, data_dir: Path
) -> tuple[str, bool, bool]:
    """(node id, standalone, joins): ``--node-id``; else the listed node whose address is
    ``--listen``; else, for a node that joins (``--join``, or one that joined before), the id
    kept in its data directory or a new ``<region>-j<6 hex digits>`` kept there; else the data
    directory's name, for a standalone node that replicates with nobody."""
    listed = {member.node_id for member in cluster.members()}
    kept = data_dir / NODE_ID_FILE
    joins = args.join is not None or kept.exists()
    if args.node_id:
        node_id = str(args.node_id)
        return node_id, False, joins and node_id not in listed
    for member in cluster.members():
        if member.address == args.listen:
            return member.node_id, False, False
    if joins:
        if kept.exists():
            return kept.read_text(encoding="utf-8").strip(), False, True
        node_id = f"{args.region}-j{os.urandom(3).hex()}"  # j: joined, never a listed id
        data_dir.mkdir(parents=True, exist_ok=True)
        kept.write_text(node_id + "\n", encoding="utf-8")
        return node_id, False, True
    name = data_dir.resolve().name
    return (name if name else f"{args.region}-1"), True, False


def _max_protocol_version(value: int | None) -> int | None:
    """``--max-protocol-version``, checked against the versions this code speaks; raises
    ConfigError."""
    low, high = PROTOCOL_VERSIONS
    if value is not None and not low <= value <= high:
        raise ConfigError(
            f"--max-protocol-version {value}: this version speaks peer protocol {low}..{high}"
        )
    return value


def _peer_addresses(values: list[str]) -> dict[str, str]:
    addresses = {}
    for value in values:
        node, sep, address = value.partition("=")
        if not sep or not node:
            raise ConfigError(f"--peer {value!r} must be NODE=HOST:PORT")
        parse_listen(address)
        addresses[node] = address
    return addresses


def _load_cluster(path: str | None) -> ClusterConfig:
    if path is not None:
        return load_config(Path(path))
    default = Path("regions.toml")
    return load_config(default) if default.exists() else ClusterConfig()


def serve(args: argparse.Namespace) -> int:
    try:
        cluster = _load_cluster(args.config)
        host, port = parse_listen(args.listen)
    except ConfigError as exc:
        return _fail(str(exc), 2)
    if cluster.regions and args.region not in cluster.regions:
        return _fail(
            f"region {args.region!r} is not in {cluster.source} "
            f"(regions: {', '.join(cluster.regions)})",
            2,
        )
    data_dir = Path(args.data)
    secret = os.environ.get(cluster.secret_env)
    try:
        node_id, standalone, joins = _node_id(args, cluster, data_dir)
        seeds = tuple(args.join.split(",")) if args.join else ()
        for seed in seeds:
            parse_listen(seed)
        if args.advertise is not None:
            parse_listen(args.advertise)
        if not 0 < args.weight < 1e6:
            raise ConfigError(f"--weight must be a positive number below 1e6, not {args.weight}")
    except (ConfigError, OSError) as exc:
        return _fail(str(exc), 2)
    try:
        cluster = _auth_from_environment(cluster)
        auth_required = _auth_required(cluster, host, insecure=args.insecure)
        settings = NodeSettings(
            node_id=node_id,
            standalone=standalone,
            region=args.region,
            host=host,
            port=port,
            data_dir=data_dir,
            cluster=cluster,
            secret=secret.encode() if secret else None,
            peer_addresses=_peer_addresses(args.peer),
            max_protocol_version=_max_protocol_version(args.max_protocol_version),
            auth_required=auth_required,
            join=seeds,
            joins=joins,
            advertise=args.advertise,
            weight=args.weight,
        )
    except ConfigError as exc:
        return _fail(str(exc), 2)
    if joins and not settings.secret:
        return _fail(
            f"node {settings.node_id} joins a cluster: set the cluster secret in the "
            f"environment variable {cluster.secret_env}",
            2,
        )
    # From here on every log line names this node, and never shows the secret.
    bind_node(settings.node_id, settings.region, [secret] if secret else [])
    member = settings.member()
    if member is not None and member.region != args.region:
        return _fail(
            f"node {settings.node_id} is listed in region {member.region} of {cluster.source}, "
            f"not {args.region}",
            2,
        )
    if settings.peers() and not settings.secret:
        return _fail(
            f"node {settings.node_id} replicates with {len(settings.peers())} other nodes: set "
            f"the cluster secret in the environment variable {cluster.secret_env}",
            2,
        )
    try:
        sock = _bind(host, port)
    except OSError as exc:
        return _fail(f"cannot listen on {args.listen}: {exc.strerror}")
    bound_port = sock.getsockname()[1]
    settings = dataclasses.replace(settings, port=bound_port)
    return run_server(settings, sock, bound_port, log_level=args.log_level)


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _auth_from_environment(cluster: ClusterConfig) -> ClusterConfig:
    """``cluster`` with ``auth.required`` set by ``MERIDIAN_AUTH_REQUIRED`` when that is set
    (one image, one topology file, tokens on or off per deployment). Raises ConfigError for
    a value that is not a boolean."""
    value = os.environ.get("MERIDIAN_AUTH_REQUIRED", "").strip().lower()
    if not value:
        return cluster
    if value not in _TRUE + _FALSE:
        raise ConfigError(
            f"MERIDIAN_AUTH_REQUIRED must be true or false (or 1/0, yes/no, on/off), not {value!r}"
        )
    return dataclasses.replace(cluster, auth_required=value in _TRUE)


def _auth_required(cluster: ClusterConfig, host: str, *, insecure: bool) -> bool:
    """Whether clients need access tokens: ``--insecure`` says no; else ``auth.required``;
    without an [auth] section, a node listening on loopback runs without them and any other
    one is refused (ConfigError)."""
    if insecure:
        if cluster.auth_required or not is_loopback(host):
            log.warning("--insecure: serving %s without access tokens", host)
        return False
    if cluster.auth_required is not None:
        if not cluster.auth_required and not is_loopback(host):
            log.warning("auth.required = false: serving %s without access tokens", host)
        return cluster.auth_required
    if is_loopback(host):
        return False
    where = cluster.source if cluster.source != "<defaults>" else "regions.toml"
    raise ConfigError(
        f"listening on {host} needs access tokens: add [auth] required = true to {where} "
        f"(tokens are signed with the cluster secret, ${cluster.secret_env}), "
        "or pass --insecure to serve without them"
    )


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted connections only when the
    # listening socket says TCP, and without it every keep-alive response waits ~40 ms for
    # the client's delayed ACK (uvicorn writes head and body separately).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    # Listen now: connections made while the node opens its storage wait in the backlog
    # instead of being refused (the node prints "serving" once the lifespan is done).
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _server_class() -> Any:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, minus re-raising the signal after a graceful shutdown: SIGTERM
        and SIGINT are how a node is asked to stop, and stopping cleanly exits with 0."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            originals = {sig: signal.signal(sig, self.handle_exit) for sig in _SIGNALS}
            try:
                yield
            finally:
                for sig, handler in originals.items():
                    signal.signal(sig, handler)

    return Server


_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _QuietStartupFailure(logging.Filter):
    """Drops uvicorn's traceback for a startup failure the CLI reports as one line (a data
    directory in use, a newer storage format, a refused join: things the user fixes, not
    bugs)."""

    def __init__(self, errors: list[BaseException]) -> None:
        super().__init__()
        self.errors = errors

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.errors or not isinstance(self.errors[0], CrdtError | MeridianError):
            return True
        message = record.getMessage()
        return not (
            record.exc_info or message.startswith("Traceback") or "startup failed" in message
        )


def run_server(settings: NodeSettings, sock: socket.socket, port: int, *, log_level: str) -> int:
    """Runs uvicorn on ``sock`` until a signal; returns the exit status."""
    import uvicorn

    from .http import create_app

    startup_errors: list[BaseException] = []
    host = settings.host if ":" not in settings.host else f"[{settings.host}]"

    def on_ready(node: Node) -> None:
        print(
            f"meridian: node {node.node_id} (region {node.region}) serving http://{host}:{port}",
            flush=True,
        )
        if node.handoff is not None:
            node.handoff.on_removed.append(stop_when_removed)

    def stop_when_removed() -> None:
        # A node that left has handed off every copy: it stops, as a SIGTERM would.
        print(f"meridian: node {settings.node_id} left the cluster", flush=True)
        server.should_exit = True

    app = create_app(settings, on_ready=on_ready, on_startup_error=startup_errors.append)
    config = uvicorn.Config(
        app,
        log_level=log_level,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=10,
        log_config=None,
        # Peer frames carry whole documents during anti-entropy.
        ws_max_size=settings.cluster.limits.max_document_bytes + (1 << 20),
        ws_ping_interval=None,
    )
    server = _server_class()(config)
    quiet = _QuietStartupFailure(startup_errors)
    uvicorn_log = logging.getLogger("uvicorn.error")
    uvicorn_log.addFilter(quiet)
    try:
        server.run(sockets=[sock])
    except SystemExit:
        if not startup_errors:
            raise
    finally:
        uvicorn_log.removeFilter(quiet)
    if startup_errors:
        error = startup_errors[0]
        return _fail(str(error))
    if not server.started:
        return _fail("the node did not start")
    print(f"meridian: node {settings.node_id} stopped", flush=True)
    return 0


def node_command(args: argparse.Namespace) -> int:
    """``meridian node leave|remove`` (app.tools.nodes)."""
    from .tools import nodes

    try:
        cluster = _load_cluster(args.config)
    except ConfigError as exc:
        return _fail(str(exc), 2)
    if args.node_command == "leave":
        return nodes.leave(cluster, args.url, timeout=args.timeout, out=sys.stdout)
    return nodes.remove(cluster, args.url, args.node, out=sys.stdout)


def token_create(args: argparse.Namespace) -> int:
    """Prints one access token, signed with the cluster secret (see app.auth)."""
    try:
        cluster = _load_cluster(args.config)
    except ConfigError as exc:
        return _fail(str(exc), 2)
    secret = os.environ.get(cluster.secret_env)
    if not secret:
        return _fail(
            "tokens are signed with the cluster secret: set the environment variable "
            f"{cluster.secret_env}",
            2,
        )
    try:
        token = create_token(
            secret.encode(),
            prefix=args.prefix,
            ids=args.doc,
            rights=["read"] if args.read_only else ["read", "write"],
            ttl_seconds=args.ttl,
            subject=args.subject,
        )
    except ValueError as exc:
        return _fail(str(exc), 2)
    print(token, flush=True)
    return 0


def status(args: argparse.Namespace) -> int:
    """Prints every node's view of the cluster; with ``--check``, compares the copies."""
    from .tools.status import run_status, targets_from_config, targets_from_urls

    if args.url:
        targets = targets_from_urls(args.url)
    else:
        try:
            cluster = _load_cluster(args.config)
        except ConfigError as exc:
            return _fail(str(exc), 2)
        targets = targets_from_config(cluster)
    if not targets:
        return _fail("no nodes to ask: pass --config with a file that lists [regions], or --url", 2)
    if args.timeout <= 0 or args.concurrency < 1:
        return _fail("--timeout and --concurrency must be positive", 2)
    return run_status(
        targets,
        token=args.token or os.environ.get("MERIDIAN_TOKEN") or None,
        check=args.check,
        as_json=args.json,
        progress=True if args.progress else None,
        timeout=args.timeout,
        concurrency=args.concurrency,
    )


def backup_command(args: argparse.Namespace) -> int:
    """Copies a stopped node's storage file to a new backup file (see app.tools.backup)."""
    from .tools.backup import BackupError, backup

    try:
        stored = backup(Path(args.data), Path(args.out))
    except (BackupError, CrdtError) as exc:
        return _fail(str(exc))
    print(
        f"meridian: backed up {args.data} to {stored.path}: {stored.documents} documents, "
        f"{stored.tombstones} tombstones (storage format {stored.format_version})",
        flush=True,
    )
    return 0


def restore_command(args: argparse.Namespace) -> int:
    """Installs a backup as a stopped node's storage file, under a new storage id."""
    from .tools.backup import BackupError, restore

    try:
        restored = restore(Path(args.backup), Path(args.data))
    except (BackupError, CrdtError) as exc:
        return _fail(str(exc))
    stored = restored.stored
    print(
        f"meridian: restored {args.backup} into {args.data}: {stored.documents} documents, "
        f"{stored.tombstones} tombstones, new storage id {stored.storage_id} (peers read its "
        "changes from the start; it pulls what it lacks from them)",
        flush=True,
    )
    if restored.replaced is not None:
        print(
            f"meridian: the file it replaced is kept as {restored.replaced}; delete it once "
            "the node runs well",
            flush=True,
        )
    return 0


def demo(args: argparse.Namespace) -> int:
    from .tools.demo import run_demo

    return run_demo(
        config=args.config,
        data=args.data,
        wait=not args.exit,
        attach=args.attach,
        nodes=args.node,
        wan_control=args.wan_control,
    )


def torture_command(args: argparse.Namespace) -> int:
    from .tools.torture import TortureOptions, run_torture

    faults = tuple(f for f in args.faults.split(",") if f) if args.faults != "none" else ()
    workloads = tuple(w for w in args.workloads.split(",") if w)
    return run_torture(
        TortureOptions(
            seed=args.seed if args.seed is not None else random.SystemRandom().randrange(2**32),
            duration=args.duration,
            regions=args.regions,
            nodes=args.nodes,
            clients=args.clients,
            documents=args.documents,
            faults=faults,
            workloads=workloads,
            data=Path(args.data) if args.data else None,
            converge_timeout=args.converge_timeout,
            converge_target=args.converge_target,
            max_rss_mb=args.max_rss_mb,
        )
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="meridian", description="Meridian document store")
    parser.add_argument("--version", action="version", version=f"meridian {VERSION}")
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("serve", help="run one node")
    p.add_argument("--region", required=True, help="this node's region (a [regions] name)")
    p.add_argument("--listen", required=True, help="HOST:PORT to listen on (port 0: any)")
    p.add_argument("--data", required=True, help="data directory (holds meridian.duckdb)")
    p.add_argument("--config", help="topology file (default: ./regions.toml when present)")
    p.add_argument(
        "--node-id",
        help="node id: <region>-<n> of regions.toml (default: the listed node whose address "
        "is --listen; else the data directory's name, a standalone node)",
    )
    p.add_argument(
        "--peer",
        action="append",
        default=[],
        metavar="NODE=HOST:PORT",
        help="dial NODE at this address instead of the listed one (e.g. through a WAN "
        "emulator); repeatable",
    )
    p.add_argument(
        "--join",
        nargs="?",
        const="",
        metavar="HOST:PORT[,HOST:PORT...]",
        help="join the running cluster through these nodes (no value: the nodes regions.toml "
        "lists), unless this data directory's node is a member already",
    )
    p.add_argument(
        "--weight",
        type=float,
        default=1.0,
        help="with --join: this node's relative share of its region's documents (default 1; "
        "2 for a machine twice as large)",
    )
    p.add_argument(
        "--advertise",
        metavar="HOST:PORT",
        help="the address other nodes reach this node at (default: --listen's host and port)",
    )
    p.add_argument(
        "--max-protocol-version",
        type=int,
        metavar="N",
        help="speak at most peer protocol version N (default: the newest this version "
        "speaks): holds a new version's features back until every node is upgraded",
    )
    p.add_argument(
        "--log-level",
        default=os.environ.get("MERIDIAN_LOG_LEVEL", "info"),
        choices=["debug", "info", "warning", "error"],
    )
    p.add_argument(
        "--insecure",
        action="store_true",
        help="serve without access tokens whatever the listen address and [auth] say",
    )
    p.add_argument(
        "--log-format",
        default=os.environ.get("MERIDIAN_LOG_FORMAT", "text"),
        choices=LOG_FORMATS,
        help="log lines on stderr as text (default) or one JSON object per line",
    )
    p.set_defaults(func=serve)

    p = commands.add_parser(
        "status",
        help="print the cluster as its nodes see it; --check compares every document's copies",
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--config", help="topology file whose nodes to ask (default: ./regions.toml)"
    )
    where.add_argument(
        "--url",
        action="append",
        default=[],
        metavar="URL",
        help="ask this node (http://host:port) instead of the listed ones; repeatable",
    )
    p.add_argument(
        "--token",
        help="access token for nodes that require one (default: $MERIDIAN_TOKEN, which keeps "
        "it out of the process list); --check needs one that covers every document",
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="compare every document's digest on its holders: exit 0 identical, 1 some "
        "differ or are under-replicated, 2 a node could not be checked",
    )
    p.add_argument("--json", action="store_true", help="print one JSON document instead")
    p.add_argument(
        "--progress",
        action="store_true",
        help="report --check's progress on stderr even when it is not a terminal",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=5.0,
        help="seconds to wait for each answer (default 5)",
    )
    p.add_argument(
        "--concurrency",
        type=int,
        default=16,
        help="documents --check compares at once (default 16)",
    )
    # httpx logs every request at INFO.
    p.set_defaults(func=status, log_level="warning")

    p = commands.add_parser(
        "demo",
        help="run a whole cluster on this machine (WAN latency emulated) and tour replication",
    )
    p.add_argument(
        "--config",
        help="topology file whose nodes to start (default: ./regions.toml, else the repository's)",
    )
    p.add_argument(
        "--data",
        default=None,
        help="directory for the nodes' data, one subdirectory per node (default: a temporary one)",
    )
    p.add_argument(
        "--exit",
        action="store_true",
        help="stop after the proof instead of leaving the cluster running until Ctrl-C",
    )
    p.add_argument(
        "--attach",
        action="store_true",
        help="tour the running cluster of --config (e.g. Docker Compose's) instead of starting "
        "one; it ends after the proof and leaves the cluster running",
    )
    p.add_argument(
        "--node",
        action="append",
        default=[],
        metavar="ID=URL",
        help="with --attach: where a node is, e.g. us-east-1=http://127.0.0.1:7101 (default: "
        "http://<its address in --config>); repeatable",
    )
    p.add_argument(
        "--wan-control",
        metavar="HOST:PORT",
        help="with --attach: the control listener of the WAN emulator service "
        "(python -m app.tools.wan_service --control), where a region is cut off and healed",
    )
    p.set_defaults(func=demo)

    p = commands.add_parser(
        "torture",
        help="a Jepsen-style run: a local cluster under faults and writes, then the checks",
    )
    p.add_argument("--seed", type=int, default=None, help="replays a run (default: random)")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of faults and writes")
    p.add_argument("--regions", type=int, default=3, help="regions of the local cluster (1-6)")
    p.add_argument("--nodes", type=int, default=2, help="nodes per region")
    p.add_argument("--clients", type=int, default=12, help="concurrent writers")
    p.add_argument("--documents", type=int, default=6, help="documents written to")
    p.add_argument(
        "--faults",
        default="partition,node-partition,bridge,one-way,kill,pause,restart,rolling,upgrade,"
        "disk-full",
        help="comma-separated faults the nemesis draws from, or 'none'",
    )
    p.add_argument(
        "--workloads",
        default="list-append,counters,text,maps,deletes,yjs",
        help="comma-separated workloads the clients draw from (yjs: clients over WS /v1/sync)",
    )
    p.add_argument(
        "--data",
        default=None,
        help="directory for the nodes' data, the topology and the history (default: a "
        "temporary one, removed after a passing run)",
    )
    p.add_argument(
        "--converge-timeout",
        type=float,
        default=60.0,
        help="seconds after the heal for every copy to converge",
    )
    p.add_argument(
        "--converge-target",
        type=float,
        default=5.0,
        help="seconds the copies may take to converge once every node is up and every link "
        "open again (longer fails the run)",
    )
    p.add_argument("--max-rss-mb", type=float, default=1024.0, help="memory bound per node")
    p.set_defaults(func=torture_command, log_level="warning")

    p = commands.add_parser("token", help="access tokens for clients")
    tokens = p.add_subparsers(dest="token_command", required=True)
    p = tokens.add_parser(
        "create",
        help="print an access token (signed with the cluster secret from the environment)",
    )
    documents = p.add_mutually_exclusive_group(required=True)
    documents.add_argument(
        "--prefix", help="the token covers the documents whose id starts with this ('' for all)"
    )
    documents.add_argument(
        "--doc",
        action="append",
        metavar="ID",
        help="the token covers this document; repeatable",
    )
    p.add_argument("--read-only", action="store_true", help="grant read, not write")
    p.add_argument(
        "--ttl", type=int, default=3600, help="seconds the token is valid (default 3600)"
    )
    p.add_argument("--subject", help="who the token is for (recorded in the token)")
    p.add_argument(
        "--config",
        help="topology file (default: ./regions.toml when present); names the "
        "secret's environment variable (cluster.secret_env)",
    )
    p.set_defaults(func=token_create)

    p = commands.add_parser("node", help="membership changes: a node leaves, a node is removed")
    changes = p.add_subparsers(dest="node_command", required=True)
    p = changes.add_parser(
        "leave",
        help="the node at --url hands its documents to their next holders, is removed and stops",
    )
    p.add_argument("--url", required=True, help="the leaving node, http://host:port")
    p.add_argument(
        "--timeout", type=float, default=600.0, help="seconds to wait for it (default 600)"
    )
    p.add_argument("--config", help="topology file (names the secret's environment variable)")
    p.set_defaults(func=node_command, log_level="warning")
    p = changes.add_parser(
        "remove", help="remove a dead node for good; its documents move to their next holders"
    )
    p.add_argument("node", help="the node id to remove")
    p.add_argument("--url", required=True, help="any live node, http://host:port")
    p.add_argument("--config", help="topology file (names the secret's environment variable)")
    p.set_defaults(func=node_command, log_level="warning")

    p = commands.add_parser(
        "backup", help="copy a stopped node's storage file to a backup file (never overwrites)"
    )
    p.add_argument("--data", required=True, help="the node's data directory")
    p.add_argument("--out", required=True, help="the backup file to write (must not exist)")
    p.set_defaults(func=backup_command)

    p = commands.add_parser(
        "restore",
        help="install a backup as a stopped node's storage file, under a new storage id",
    )
    p.add_argument(
        "--from", dest="backup", required=True, metavar="FILE", help="the backup file (only read)"
    )
    p.add_argument(
        "--data",
        required=True,
        help="the node's data directory (created when missing; a file there is kept aside)",
    )
    p.set_defaults(func=restore_command)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log_format = getattr(args, "log_format", "text")
    if log_format not in LOG_FORMATS:
        return _fail(f"MERIDIAN_LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}", 2)
    configure_logging(getattr(args, "log_level", "info"), log_format)
    try:
        status: int = args.func(args)
    except CrdtError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return 130
    return status
