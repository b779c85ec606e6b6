"""Judging an answer: what the node may not do whatever it was sent (a 5xx, a 1011, a
hang, a slow answer, accepting what it must refuse, showing a seeded document wrong), and the
known problems the run tolerates."""

from __future__ import annotations

import json

from crdt import CrdtError, Document
from tests.support import TIMEOUT_FACTOR

from .actions import Action, HttpRequest, Outcome, WsSession

__all__ = ["KNOWN", "SLOW_SECONDS", "judge"]

#: An action that takes longer is a failure (a request that holds the node's event loop for
#: seconds holds every other client too); hangs are caught by the wire's own timeout.
SLOW_SECONDS = 8.0 * TIMEOUT_FACTOR

#: Known problems of the node (its dependencies, mostly) that the run tolerates, counts and
#: reports; docs/fuzzing.md describes each. The log side is KNOWN_LOG_RECORDS in .node.
KNOWN = {
    "uvicorn-invalid-utf8": "uvicorn 0.55's WebSocket protocol (websockets-sansio) logs an "
    "ERROR with a traceback for every text frame that is not UTF-8; when the client's close "
    "frame is read in the same chunk, it raises InvalidState out of data_received: asyncio "
    "logs 'Fatal error on transport' and the connection ends without a close frame (1006)",
}


def _invalid_text(action: Action) -> bool:
    """Whether a session sent a text frame that is not UTF-8 (see KNOWN)."""
    if not isinstance(action, WsSession):
        return False
    for frame in action.frames:
        if frame.kind == "text":
            try:
                frame.data.decode("utf-8")
            except UnicodeDecodeError:
                return True
    return False


def _wrong_content(request: HttpRequest, body: bytes) -> str | None:
    """What a 200 answer about a seeded document got wrong: its JSON content, or the digest
    of the whole state it carries."""
    if request.content is not None:
        try:
            content = json.loads(body)["content"]
        except (ValueError, KeyError, TypeError):
            return f"a 200 answer that is no document view: {body[:200]!r}"
        if content != request.content:
            return f"a seeded document shows other content: {str(content)[:300]}"
    if request.digest is not None:
        copy = Document("copy")
        try:
            copy.apply_update(body)
        except CrdtError as exc:
            return f"a seeded document's state does not apply: {exc}"
        if copy.digest() != request.digest:
            return "a seeded document's whole state has another digest"
    return None


def judge(action: Action, outcome: Outcome) -> str | None:
    """What is wrong with this answer, or None."""
    if outcome.refused_connection:
        return "the node refused the connection"
    if outcome.hung is not None:
        return f"hang: {outcome.hung}"
    if outcome.seconds > SLOW_SECONDS and not (isinstance(action, HttpRequest) and action.raw):
        return f"slow: the node took {outcome.seconds:.1f} s (at most {SLOW_SECONDS:g} s)"
    for status, code in zip(outcome.statuses, outcome.codes, strict=True):
        if status == 999:
            return "the answer is not HTTP"
        if status >= 500:
            after = isinstance(action, HttpRequest) and action.after
            if status == 503 and code == "after_not_reached" and after:
                continue  # documented: the copy does not include the after= state (yet)
            return f"answered {status} ({code})"
    for code in outcome.close_codes:
        if code == 1011:
            return "a WebSocket closed with 1011 (internal error)"
        if code == 1006 and isinstance(action, WsSession) and not _invalid_text(action):
            return "a WebSocket was dropped without a close frame (1006)"
    if outcome.wrong is not None:
        return outcome.wrong
    if isinstance(action, HttpRequest) and outcome.statuses[:1] == [200]:
        wrong = _wrong_content(action, outcome.body)
        if wrong is not None:
            return wrong
    refused = action.expect == "refuse" and isinstance(action, HttpRequest)
    if refused and outcome.statuses and 200 <= outcome.statuses[0] < 300:
        return f"accepted ({outcome.statuses[0]}) a request the node must refuse"
    return None
