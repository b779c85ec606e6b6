from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .support import NodeProcess, ThreadedNode
from .test_interop_js import node_js  # noqa: F401 - shared with the live-client tests


@pytest.fixture
def node(tmp_path: Path) -> Iterator[ThreadedNode]:
    """A fresh node (uvicorn in a thread, real DuckDB file) for one test."""
    threaded = ThreadedNode(tmp_path / "eu-west-1").start()
    try:
        yield threaded
    finally:
        threaded.stop()


@pytest.fixture
def node_process(tmp_path: Path) -> Iterator[NodeProcess]:
    """A real ``meridian serve`` process on a free port."""
    process = NodeProcess(tmp_path / "eu-west-1").start()
    try:
        yield process
    finally:
        process.close()
