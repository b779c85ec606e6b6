"""regions.toml parsing, and the rule that every setting is documented."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from app.config import SCHEMA, ConfigError, load_config, parse_config

from .support import REPO


def test_sample_topology_parses() -> None:
    config = load_config(REPO / "regions.toml")
    assert set(config.regions) == {"us-east", "eu-west", "ap-south"}
    assert len(config.regions["us-east"].nodes) == 2
    assert config.latency_ms("eu-west", "us-east") == 40
    assert config.latency_ms("us-east", "eu-west") == 40
    assert config.replicas == 2


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"bogus": {}}, r"unknown section \[bogus\]"),
        ({"limits": {"max_body_byte": 1}}, "unknown key limits.max_body_byte"),
        ({"limits": {"max_body_bytes": "big"}}, "limits.max_body_bytes must be an integer"),
        ({"limits": {"max_body_bytes": 0}}, "limits.max_body_bytes must be positive"),
        (
            {"storage": {"duckdb_memory_limit": "lots"}},
            "storage.duckdb_memory_limit must be a size",
        ),
        ({"cluster": {"name": "Bad Name"}}, "cluster.name must be lowercase"),
        ({"cluster": {"secret_env": "1X"}}, "cluster.secret_env must be an environment variable"),
        ({"regions": {"eu": {"nodes": "127.0.0.1:1"}}}, "regions.eu.nodes must be a list"),
        ({"regions": {"eu": {"nodes": ["nowhere"]}}}, "regions.eu.nodes: listen address 'nowhere'"),
        ({"regions": {"eu": {"nodes": [], "extra": 1}}}, "unknown key regions.eu.extra"),
        ({"regions": {"eu": {}}, "latency": {"eu:us": 3}}, "latency key 'eu:us'"),
        (
            {"regions": {"eu": {}, "us": {}}, "latency": {"eu:us": -1}},
            "latency.eu:us must be a non-negative",
        ),
    ],
)
def test_bad_config_names_the_key(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(data, "test.toml")


def test_unreadable_and_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[cluster\nname=")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(broken)


def test_every_setting_is_documented() -> None:
    """Like datasette's test_docs: a setting nobody documented fails the build."""
    docs = (REPO / "docs" / "configuration.md").read_text()
    documented = set(re.findall(r"`([a-z_]+\.[a-z_]+)`", docs))
    for section, keys in SCHEMA.items():
        for key in keys:
            assert f"{section}.{key}" in documented, (
                f"{section}.{key} is not in docs/configuration.md"
            )
    for extra in ("regions.<name>.nodes", "latency"):
        assert extra in docs
    # every environment variable the code reads is documented
    sources = "\n".join(p.read_text() for p in (REPO / "app").rglob("*.py"))
    sources += (REPO / "tests" / "support.py").read_text()
    for variable in set(re.findall(r"\"(MERIDIAN_[A-Z_]+)\"", sources)):
        assert variable in docs, f"environment variable {variable} is not in docs/configuration.md"


def test_sample_file_sets_only_documented_keys() -> None:
    data = tomllib.loads((REPO / "regions.toml").read_text())
    parse_config(data, "regions.toml")


def test_a_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    # Found by fuzzing: load_config raised UnicodeDecodeError (a traceback at start-up).
    path = tmp_path / "regions.toml"
    path.write_bytes(b'[cluster]\nname = "\xff\xfe"\n')
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(path)
