"""The meridian command: clear errors for things a user can fix, clean shutdown."""

from __future__ import annotations

from pathlib import Path

import duckdb

from crdt import FORMAT_VERSION

from .support import REPO, NodeProcess, run_meridian


def test_bad_config_is_one_clear_line(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[limits]\nmax_body_bytes = -5\n")
    result = run_meridian(
        "serve",
        "--region",
        "eu-west",
        "--listen",
        "127.0.0.1:0",
        "--data",
        str(tmp_path / "d"),
        "--config",
        str(config),
    )
    assert result.returncode == 2
    assert "limits.max_body_bytes must be positive" in result.stderr


def test_unknown_region_and_bad_listen(tmp_path: Path) -> None:
    result = run_meridian(
        "serve",
        "--region",
        "mars",
        "--listen",
        "127.0.0.1:0",
        "--data",
        str(tmp_path / "d"),
        "--config",
        str(REPO / "regions.toml"),
    )
    assert result.returncode == 2 and "region 'mars' is not in" in result.stderr
    result = run_meridian(
        "serve", "--region", "eu-west", "--listen", "localhost", "--data", str(tmp_path / "d")
    )
    assert result.returncode == 2 and "must be host:port" in result.stderr


def test_newer_storage_format_is_refused_clearly(tmp_path: Path) -> None:
    data = tmp_path / "eu-west-1"
    node = NodeProcess(data).start()
    with node.client() as client:
        assert (
            client.patch(
                "/v1/docs/d", json={"ops": [{"op": "set", "path": ["m", "k"], "value": 1}]}
            ).status_code
            == 200
        )
    assert node.terminate() == 0
    con = duckdb.connect(str(data / "meridian.duckdb"))
    newer = FORMAT_VERSION + 1
    con.execute(f"UPDATE meta SET value = '{newer}' WHERE key = 'format_version'")
    con.close()
    result = run_meridian(
        "serve", "--region", "eu-west", "--listen", "127.0.0.1:0", "--data", str(data)
    )
    assert result.returncode == 1
    assert f"storage format {newer}, written by a newer Meridian" in result.stderr


def test_sigterm_finishes_and_data_survives(tmp_path: Path) -> None:
    data = tmp_path / "eu-west-1"
    node = NodeProcess(data).start()
    with node.client() as client:
        for i in range(20):
            assert (
                client.patch(
                    "/v1/docs/d", json={"ops": [{"op": "append", "path": ["l"], "values": [i]}]}
                ).status_code
                == 200
            )
    assert node.terminate() == 0
    assert any("stopped" in line for line in node.output)
    again = NodeProcess(data).start()
    try:
        with again.client() as client:
            assert client.get("/v1/docs/d").json()["content"] == {"l": list(range(20))}
    finally:
        again.close()
