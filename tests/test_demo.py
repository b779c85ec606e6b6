"""``meridian demo``: the whole cluster of a regions.toml as real processes, the guided tour,
and a clean stop (ports free again, no node left behind) however it ends."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

from .cluster import FAST, free_port
from .support import REPO, TIMEOUT_FACTOR, OutputLines, wait_for

#: Small emulated latencies, one way, in milliseconds.
LATENCY = {("east", "west"): 8, ("east", "south"): 15, ("west", "south"): 12}


def write_config(root: Path, layout: dict[str, int]) -> tuple[Path, list[int]]:
    """A regions.toml of ``layout`` on free loopback ports, with quick replication timers."""
    ports: list[int] = []
    lines = ['[cluster]\nname = "demo-test"\nsecret_env = "MERIDIAN_CLUSTER_SECRET"\n']
    lines += ["[replication]", *(f"{key} = {value}" for key, value in FAST.items())]
    for region, count in layout.items():
        region_ports = [free_port() for _ in range(count)]
        ports += region_ports
        nodes = ", ".join(f'"127.0.0.1:{port}"' for port in region_ports)
        lines.append(f"\n[regions.{region}]\nnodes = [{nodes}]")
    lines.append("\n[latency]")
    lines += [f'"{a}:{b}" = {ms}' for (a, b), ms in LATENCY.items() if {a, b} <= set(layout)]
    path = root / "regions.toml"
    path.write_text("\n".join(lines) + "\n")
    return path, ports


def assert_full_tour(out: str, *, latency_ms: float) -> None:
    """What a whole tour of the 4-node layout {east: 2, west: 1, south: 1} prints, started
    locally or attached: replication times per link, the partition (both sides wrote without
    seeing each other's writes), the heal and the proof."""
    assert re.search(r"seen on east-2 \d+(\.\d)? ms \(direct\)", out), out
    assert re.search(rf"south-1 \d+(\.\d)? ms \(WAN {latency_ms:g} ms\)", out), out
    assert "NOT seen on east-1, east-2, west-1 within" in out, out
    assert "NOT seen on south-1 within" in out, out
    assert "link down on both ends" in out, out
    assert re.search(r"every copy identical after \d", out), out
    assert re.search(r"all \d+ copies identical \(\d+ documents, each on its holders\)", out), out
    assert "COPIES DIFFER" not in out


def assert_placement_step(out: str) -> None:
    """The placement step of a local tour: a document on its holders only, a forwarded read,
    a follower copy gained by repeated reads, and the residency proof of a pinned document."""
    assert "holds a copy" in out and "holds none of it" in out, out
    assert re.search(r"south-1 +GET /v1/docs/notes-\w+ -> 200 in .* \(forwarded", out), out
    assert re.search(r"south gained a follower copy: GET -> 200 in .* served by south-1", out)
    assert re.search(r"the marker is in none of \d+ files of .*, byte by byte", out), out
    assert "RESIDENCY BROKEN" not in out


def demo_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "app", "demo", *args]


def demo_env() -> dict[str, str]:
    # The demo generates a cluster secret when none is set.
    return {k: v for k, v in os.environ.items() if k != "MERIDIAN_CLUSTER_SECRET"}


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def assert_stopped(output: str, ports: list[int]) -> None:
    pids = [int(pid) for pid in re.findall(r"\bpid (\d+)", output)]
    assert len(pids) == len(ports), output
    wait_for(lambda: all(gone(pid) for pid in pids), timeout=5, what="node processes to exit")
    wait_for(lambda: all(port_free(port) for port in ports), timeout=5, what="ports to be free")


def test_demo_tours_the_cluster_and_proves_identical_copies(tmp_path: Path) -> None:
    config, ports = write_config(tmp_path, {"east": 2, "west": 1, "south": 1})
    result = subprocess.run(
        demo_command("--exit", "--config", str(config), "--data", str(tmp_path / "data")),
        capture_output=True,
        text=True,
        cwd=REPO,
        env=demo_env(),
        timeout=180 * TIMEOUT_FACTOR,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "4 nodes healthy" in out and "6 peer links up" in out
    # Measured replication times: same region (direct) and across the emulated WAN.
    assert_full_tour(out, latency_ms=15)
    assert_placement_step(out)
    assert re.search(r"durability=all -> 200 in .*\(reached all, durable on ", out), out
    assert "?after=<its state vector> -> 200" in out and "includes the write" in out
    assert "all nodes stopped (exit status: east-1 0, east-2 0, west-1 0, south-1 0)" in out
    assert_stopped(out, ports)


def test_demo_keeps_running_until_sigint_then_stops_every_node(tmp_path: Path) -> None:
    config, ports = write_config(tmp_path, {"east": 1, "west": 1})
    process = subprocess.Popen(
        demo_command("--config", str(config)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
        env=demo_env(),
    )
    output_lines = OutputLines(process)
    try:
        wait_for(
            lambda: output_lines.has("Press Ctrl-C"),
            timeout=120,
            what="the demo to finish its tour",
        )
        output = output_lines.text()
        assert "2 nodes healthy" in output and "1 peer link up" in output
        assert f"http://127.0.0.1:{ports[0]}/docs" in output
        assert all(not port_free(port) for port in ports)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60 * TIMEOUT_FACTOR) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        output_lines.join()
    output = output_lines.text()
    assert "all nodes stopped (exit status: east-1 0, west-1 0)" in output, output
    assert_stopped(output, ports)


def test_port_in_use_is_one_clear_line(tmp_path: Path) -> None:
    config, ports = write_config(tmp_path, {"east": 1, "west": 1})
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", ports[1]))
        taken.listen()
        result = subprocess.run(
            demo_command("--exit", "--config", str(config)),
            capture_output=True,
            text=True,
            cwd=REPO,
            env=demo_env(),
            timeout=60 * TIMEOUT_FACTOR,
        )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"meridian demo: error: port {ports[1]} is already in use (127.0.0.1:{ports[1]}, "
        "west-1): stop what listens there, or pass --config with other addresses"
    ]
    assert "pid" not in result.stdout  # nothing was started
    assert port_free(ports[0])


def test_a_node_that_fails_to_start_is_shown_and_the_others_stopped(tmp_path: Path) -> None:
    config, ports = write_config(tmp_path, {"east": 1, "west": 1})
    data = tmp_path / "data"
    (data / "west-1").mkdir(parents=True)
    (data / "west-1" / "meridian.duckdb").write_text("not a database")
    result = subprocess.run(
        demo_command("--exit", "--config", str(config), "--data", str(data)),
        capture_output=True,
        text=True,
        cwd=REPO,
        env=demo_env(),
        timeout=60 * TIMEOUT_FACTOR,
    )
    assert result.returncode == 1
    assert "meridian demo: error: west-1 exited with status 1" in result.stderr
    assert "| meridian: error: cannot open" in result.stderr
    assert_stopped(result.stdout, ports)


def test_demo_with_access_tokens(tmp_path: Path) -> None:
    """Nodes that require tokens (MERIDIAN_AUTH_REQUIRED, inherited by the nodes): the demo
    signs its own with the cluster secret it made."""
    config, _ = write_config(tmp_path, {"east": 1, "west": 1})
    result = subprocess.run(
        demo_command("--exit", "--config", str(config)),
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**demo_env(), "MERIDIAN_AUTH_REQUIRED": "true"},
        timeout=180 * TIMEOUT_FACTOR,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "copies identical" in result.stdout
    # The nodes did require tokens: a refused one stops the demo with one clear line.
    result = subprocess.run(
        demo_command("--exit", "--config", str(config)),
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**demo_env(), "MERIDIAN_AUTH_REQUIRED": "true", "MERIDIAN_TOKEN": "garbage"},
        timeout=180 * TIMEOUT_FACTOR,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "was refused (401" in result.stderr and "MERIDIAN_TOKEN" in result.stderr
    assert "Traceback" not in result.stderr
