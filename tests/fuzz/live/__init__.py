"""The live fuzzer: random and mutated requests on every route of a real node, frames on
every WebSocket, and after each batch the checks that matter: the node alive, no 5xx, no
WebSocket closed with 1011, the seeded documents' digests unchanged. See docs/fuzzing.md,
"The live fuzzer".

    python -m tests.fuzz.live --duration SECONDS --seed N [--mode M] [--node URL]
    python -m tests.fuzz.live --replay FILE

Modules: :mod:`.node` (the node process, its modes and limits), :mod:`.seeds` (the seeded
documents and their check), :mod:`.content` (valid inputs and the oracle), :mod:`.mutate`
(mutations), :mod:`.base`, :mod:`.http_routes`, :mod:`.other_routes` and :mod:`.ws_routes`
(a generator per route), :mod:`.actions` (what is sent, as records), :mod:`.wire` (sending
them over raw sockets and WebSockets), :mod:`.watchers` (WebSockets open through a batch),
:mod:`.judge` (what an answer may not be), :mod:`.report`, :mod:`.runner` (batches, checks,
reproducers).
"""

from __future__ import annotations

from .judge import judge
from .report import Failure, Report, format_report
from .runner import Options, replay, run

__all__ = ["Failure", "Options", "Report", "format_report", "judge", "replay", "run"]
