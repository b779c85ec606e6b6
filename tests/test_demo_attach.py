"""``meridian demo --attach`` against a cluster that is already running, as Docker Compose runs
it but on loopback: real ``meridian serve`` processes, and the WAN emulator as its own process
(``python -m app.tools.wan_service``, labelled proxies, a control listener) that the demo cuts a
region off through. Also the control listener's answers to bad input, and its line splitting
and command parsing without sockets.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from app.tools.wan_service import (
    MAX_COMMAND,
    Command,
    CommandLines,
    ControlError,
    parse_command,
    parse_spec,
)

from .cluster import Cluster, free_port
from .support import REPO, TIMEOUT_FACTOR, OutputLines, wait_for
from .test_demo import assert_full_tour

LAYOUT = {"east": 2, "west": 1, "south": 1}
LATENCY_MS = 10


@dataclass
class WanProcess:
    process: subprocess.Popen[str]
    control_port: int
    output: list[str]
    drain: threading.Thread

    def stop(self) -> None:
        """SIGTERM; the service must exit 0 (SIGKILL if it does not exit in time)."""
        self.process.terminate()
        try:
            status = self.process.wait(timeout=15 * TIMEOUT_FACTOR)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self.drain.join(timeout=10)
            if self.process.stdout is not None:
                self.process.stdout.close()
        assert status == 0, "".join(self.output)

    def control(self, payload: bytes) -> list[str]:
        """Sends ``payload`` on a new control connection, closes its sending side, and
        returns every reply line."""
        with socket.create_connection(("127.0.0.1", self.control_port), timeout=10) as sock:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        return data.decode().splitlines()

    def status(self) -> dict[str, object]:
        (reply,) = self.control(b"status\n")
        assert reply.startswith("ok "), reply
        status: dict[str, object] = json.loads(reply[3:])
        return status


def start_wan(cluster: Cluster) -> WanProcess:
    """``python -m app.tools.wan_service`` with one labelled proxy per cross-region node pair, in
    front of the node with the larger id (which the other dials, as in docker-compose.yml)."""
    control_port = free_port()
    command = [sys.executable, "-m", "app.tools.wan_service", "--jitter-ms", "1"]
    command += ["--control", f"127.0.0.1:{control_port}"]
    for dialer in cluster.members.values():
        for acceptor in cluster.members.values():
            if dialer.region == acceptor.region or dialer.node_id >= acceptor.node_id:
                continue
            port = free_port()
            command += [
                "--listen",
                f"{dialer.region}:{acceptor.region}@127.0.0.1:{port}="
                f"127.0.0.1:{acceptor.port}:{LATENCY_MS}",
            ]
            cluster.peer_args[dialer.node_id] += ["--peer", f"{acceptor.node_id}=127.0.0.1:{port}"]
    process = subprocess.Popen(
        command,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []

    def drain() -> None:
        assert process.stdout is not None
        output.extend(process.stdout)

    drainer = threading.Thread(target=drain, daemon=True)
    drainer.start()
    wan = WanProcess(process, control_port, output, drainer)
    wait_for(
        lambda: (
            any(f"control on 127.0.0.1:{control_port}" in line for line in output)
            or process.poll() is not None
        ),
        timeout=15,
        what="the WAN service's control listener",
    )
    if process.poll() is not None:  # it exited: release its pipe before failing
        drainer.join(timeout=10)
        if process.stdout is not None:
            process.stdout.close()
        raise AssertionError(f"the WAN service exited {process.returncode}: {''.join(output)}")
    return wan


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, WanProcess]]:
    """Four nodes in three regions and the WAN service, started here and left running."""
    cluster = Cluster(tmp_path_factory.mktemp("attach"), LAYOUT, latency_ms=LATENCY_MS)
    try:
        wan = start_wan(cluster)
    except BaseException:
        cluster.close()
        raise
    try:
        for node_id in cluster.members:
            cluster.start_node(node_id)
        cluster.wait_links_up(timeout=30)
        yield cluster, wan
    finally:
        cluster.close()
        wan.stop()


def attach_command(cluster: Cluster, *args: str) -> list[str]:
    return [sys.executable, "-m", "app", "demo", "--attach", "--config", str(cluster.config), *args]


def attach(cluster: Cluster, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        attach_command(cluster, *args),
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=timeout * TIMEOUT_FACTOR,
    )


def test_attached_demo_tours_the_running_cluster_and_heals_it(
    running: tuple[Cluster, WanProcess],
) -> None:
    cluster, wan = running
    control = f"127.0.0.1:{wan.control_port}"
    east = cluster["east-1"].url
    result = attach(cluster, "--wan-control", control, "--node", f"east-1={east}/", "--exit")
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert f"attached to cluster 'test' of {cluster.config}" in out
    assert f"east-1      {east}\n" in out
    assert "4 nodes healthy" in out and "6 peer links up" in out
    # The partition made through the WAN service's control listener, healed, the proof;
    # then the cluster left as it was found: running, nothing cut.
    assert_full_tour(out, latency_ms=LATENCY_MS)
    assert "the cluster is left running, its WAN healed" in out
    assert result.stderr == ""
    assert len(cluster.running()) == 4
    status = wan.status()
    assert status["isolated"] == [] and status["cut"] == []
    cluster.wait_links_up(timeout=30)


def test_control_listener_answers_bad_input_and_the_proxies_keep_working(
    running: tuple[Cluster, WanProcess],
) -> None:
    cluster, wan = running
    replies = wan.control(
        b"frobnicate\n"
        b"isolate\n"
        b"isolate nowhere\n"
        b"cut east\n"
        b"\xff\xfe\n"
        + b"x" * (3 * MAX_COMMAND)
        + b"\n"
        + b"\n"  # a blank line: ignored
        + b"cut east west\n"
        b"restore EAST west\n"
        b"restore east west"  # no newline before the end: still a command
    )
    assert replies == [
        "error unknown command 'frobnicate'; commands: isolate REGION, rejoin REGION, "
        "cut A B, restore A B, heal, status",
        "error isolate takes 1 region(s): isolate REGION",
        "error unknown region 'nowhere'; the labelled links connect east, south, west",
        "error cut takes 2 region(s): cut A B",
        "error the command is not UTF-8 text",
        f"error command longer than {MAX_COMMAND} bytes",
        "ok cut east west: 2 of 5 labelled links cut",
        "error unknown region 'EAST'; the labelled links connect east, south, west",
        "ok restore east west: 0 of 5 labelled links cut",
    ]
    # A connection that sends only garbage is answered and closed like the others.
    assert wan.control(b"\x00" * 100 + b"\n") == [
        "error unknown command '\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00"
        "\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00"
        "\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00'; commands: isolate "
        "REGION, rejoin REGION, cut A B, restore A B, heal, status"
    ]
    assert wan.process.poll() is None
    status = wan.status()
    assert status["isolated"] == [] and status["cut"] == []
    # The proxies still carry replication across regions.
    cluster.wait_links_up(timeout=30)
    with cluster["south-1"].client() as south:
        response = south.patch(
            "/v1/docs/after-garbage",
            json={"ops": [{"op": "set", "path": ["checks", "ok"], "value": True}]},
        )
        assert response.status_code == 200, response.text

    def seen_at_east() -> bool:
        with httpx.Client(base_url=cluster["east-1"].url, timeout=10) as east:
            return east.get("/v1/docs/after-garbage").status_code == 200

    wait_for(seen_at_east, timeout=15, what="the write at south-1 on east-1 through the WAN")


def test_attach_errors_are_one_clear_line(running: tuple[Cluster, WanProcess]) -> None:
    cluster, wan = running
    control = f"127.0.0.1:{wan.control_port}"
    west = cluster["west-1"].url
    cases = [
        ([], 2, "--attach needs --wan-control HOST:PORT"),
        (["--wan-control", "nowhere"], 2, "--wan-control: listen address 'nowhere' must be"),
        (["--wan-control", control, "--node", "east-1"], 2, "must be NODE_ID=http://HOST:PORT"),
        (
            ["--wan-control", control, "--node", "mars-1=http://127.0.0.1:1"],
            1,
            "--node mars-1: ",
        ),
        (
            ["--wan-control", f"127.0.0.1:{free_port()}", "--exit"],
            1,
            "WAN control at 127.0.0.1:",
        ),
        (
            ["--wan-control", control, "--node", f"east-1={west}"],
            1,
            f"{west} is node west-1 of region west, but ",
        ),
        (["--wan-control", control, "--data", "/tmp"], 2, "--data is for the local demo"),
    ]
    for args, status, message in cases:
        result = attach(cluster, *args, timeout=60)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == status, (args, result.stdout, result.stderr)
        assert len(lines) == 1 and lines[0].startswith("meridian demo: error: "), lines
        assert message in lines[0], (message, lines)
    # None of it cut anything.
    status_now = wan.status()
    assert status_now["isolated"] == [] and status_now["cut"] == []


# -- without sockets -----------------------------------------------------------------------


def test_command_lines_split_and_skip_overlong_lines() -> None:
    lines = CommandLines()
    assert lines.receive_data(b"sta") == []
    assert lines.receive_data(b"tus\nheal\nis") == [b"status\n", b"heal\n"]
    assert lines.receive_data(b"x" * MAX_COMMAND) == [None]
    assert lines.receive_data(b"y" * MAX_COMMAND) == []  # still the same line
    assert lines.receive_data(b"z\ncut a b\n") == [b"cut a b\n"]
    assert lines.receive_data(b"a" * (MAX_COMMAND + 5) + b"\nheal\n") == [None, b"heal\n"]
    assert lines.receive_data(b"rejoin a") == []
    assert lines.receive_eof() == [b"rejoin a"]


def test_parse_command() -> None:
    assert parse_command(b"  Isolate ap-south \r\n") == Command("isolate", ("ap-south",))
    assert parse_command(b"cut us-east eu-west\n") == Command("cut", ("us-east", "eu-west"))
    assert parse_command(b"heal") == Command("heal", ())
    assert parse_command(b" \n") is None
    for line, message in [
        (b"heal now\n", "heal takes 0 region(s)"),
        (b"restore a\n", "restore takes 2 region(s): restore A B"),
        (b"drop table\n", "unknown command 'drop'"),
        (b"\xc3\x28\n", "not UTF-8"),
    ]:
        with pytest.raises(ControlError, match=re.escape(message)):
            parse_command(line)


def test_parse_spec_labels() -> None:
    spec = parse_spec("ap-south:eu-west@0.0.0.0:9001=eu-west-1:7000:65")
    assert spec.regions == ("ap-south", "eu-west")
    assert (spec.listen, spec.target, spec.latency_ms) == (
        ("0.0.0.0", 9001),
        ("eu-west-1", 7000),
        65.0,
    )
    assert parse_spec("0.0.0.0:9001=eu-west-1:7000:65").regions is None
    for value, message in [
        ("ap-south@0.0.0.0:9001=eu-west-1:7000:65", "two different regions"),
        ("a:a@0.0.0.0:9001=eu-west-1:7000:65", "two different regions"),
        (":b@0.0.0.0:9001=eu-west-1:7000:65", "two different regions"),
        ("a:b@0.0.0.0:9001", "must be [FROM_REGION:TO_REGION@]"),
        ("a:b@0.0.0.0:9001=eu-west-1:7000:-1", "the latency must be >= 0"),
    ]:
        with pytest.raises(ValueError, match=re.escape(message)):
            parse_spec(value)


def test_wan_service_bad_arguments_exit_2() -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "app.tools.wan_service", *args],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=30 * TIMEOUT_FACTOR,
        )

    result = run("--listen", "x@127.0.0.1:0=127.0.0.1:1:5")
    assert result.returncode == 2 and "the label must be two different regions" in result.stderr
    result = run("--listen", "a:b@127.0.0.1:0=127.0.0.1:1:5", "--control", "nowhere")
    assert result.returncode == 2 and "--control: listen address 'nowhere'" in result.stderr
    result = run("--send", "heal")
    assert result.returncode == 2 and "--send needs --control HOST:PORT" in result.stderr
    result = run("--control", f"127.0.0.1:{free_port()}", "--send", "heal")
    assert result.returncode == 1 and result.stderr.startswith("meridian-wan: error: ")


def test_wan_service_send(running: tuple[Cluster, WanProcess]) -> None:
    _, wan = running
    control = f"127.0.0.1:{wan.control_port}"

    def send(command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "app.tools.wan_service",
                "--control",
                control,
                "--send",
                command,
            ],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=30 * TIMEOUT_FACTOR,
        )

    result = send("isolate mars")
    assert result.returncode == 1
    assert result.stderr == (
        "meridian-wan: error: unknown region 'mars'; the labelled links connect east, south, west\n"
    )
    result = send("status")
    assert result.returncode == 0
    links = json.loads(result.stdout)["links"]
    assert sorted(tuple(link["regions"]) for link in links) == [
        ("east", "south"),
        ("east", "south"),
        ("east", "west"),
        ("east", "west"),
        ("south", "west"),
    ]


def test_interrupted_during_the_partition_heals_the_wan(
    running: tuple[Cluster, WanProcess],
) -> None:
    cluster, wan = running
    process = subprocess.Popen(
        attach_command(cluster, "--wan-control", f"127.0.0.1:{wan.control_port}"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    output = OutputLines(process)
    try:
        wait_for(
            lambda: output.has("GET /v1/cluster each second"),
            timeout=120,
            what="the demo to cut a region off",
        )
        assert wan.status()["isolated"] == ["south"]
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60 * TIMEOUT_FACTOR) == 130
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        output.join()
        stderr = process.stderr.read() if process.stderr is not None else ""
        if process.stderr is not None:
            process.stderr.close()
    assert stderr == ""
    assert "the cluster is left running, its WAN healed" in output.text()
    status = wan.status()
    assert status["isolated"] == [] and status["cut"] == []
    cluster.wait_links_up(timeout=30)
