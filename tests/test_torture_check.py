"""The checks of ``meridian torture``'s counter, text, map, delete and Yjs-client workloads
on plain values: a clean history passes, and each kind of violation is found."""

from __future__ import annotations

from typing import Any

from app.tools.torture_check import Op
from app.tools.torture_check_workloads import (
    Cut,
    Held,
    check_counters,
    check_deletes,
    check_maps,
    check_text,
    check_yjs,
    text_tokens,
)


def op(value: str, outcome: str = "ok", kind: str = "append", doc: str = "d", **more: Any) -> Op:
    start = more.pop("start", 0.0)
    end = more.pop("end", start + 0.1)
    return Op(value, doc, "n1", outcome, start, end, kind=kind, **more)  # type: ignore[arg-type]


def live(root: Any, digest: str = "h", incarnation: int = 1) -> Held:
    return Held("live", root, incarnation, digest)


def both(root: Any, **more: Any) -> dict[str, dict[str, Held]]:
    """Document "d" with the same copy on two holders."""
    return {"d": {"n1": live(root, **more), "n2": live(root, **more)}}


# -- counters ----------------------------------------------------------------------------


def inc(key: str, amount: int, outcome: str = "ok") -> Op:
    return op(key, outcome, "increment", amount=amount)


def test_counters_between_acknowledged_and_indeterminate_pass() -> None:
    ops = [inc("a", 2), inc("b", 1), inc("c", 3, "fail"), inc("m", 2, "info"), inc("n", 1, "info")]
    found = check_counters(ops, both({"a": 2, "b": 1, "m": 2}))
    assert found.ok, found.lines()
    assert found.counts["increment ok"] == 2 and found.counts["increment info"] == 2


def test_counters_below_acknowledged_or_above_indeterminate_fail() -> None:
    ops = [inc("a", 2), inc("b", 1), inc("m", 2, "info")]
    low = check_counters(ops, both({"a": 2}))
    assert low.problems["acknowledged writes lost"] == [("d", "n1", "b"), ("d", "n2", "b")]
    assert ("d", "n1", 2, 3, 2) in low.problems[
        "counters out of bounds (value, acknowledged, indeterminate)"
    ]
    # An increment applied with another amount takes the value past the bound.
    high = check_counters(ops, both({"a": 2, "b": 1, "m": 5}))
    assert ("d", "n1", "m", 5) in high.problems["increments with another amount"]
    assert ("d", "n1", 8, 3, 2) in high.problems[
        "counters out of bounds (value, acknowledged, indeterminate)"
    ]


def test_counters_find_refused_and_unwritten_keys() -> None:
    ops = [inc("a", 1), inc("r", 1, "fail")]
    found = check_counters(ops, {"d": {"n1": live({"a": 1, "r": 1, "z": 1})}})
    assert found.problems["refused increments present"] == [("d", "n1", "r")]
    assert found.problems["keys nobody wrote"] == [("d", "n1", "z")]


# -- text --------------------------------------------------------------------------------


def test_text_tokens() -> None:
    assert text_tokens("<a><b-1>") == (["a", "b-1"], "")
    assert text_tokens("<a>x<b") == (["a"], "x<b")


def test_text_passes_with_every_acknowledged_token_once() -> None:
    ops = [op("a", kind="insert"), op("b", kind="insert"), op("m", "info", "insert")]
    found = check_text(ops, both("<b><m><a>"))
    assert found.ok, found.lines()


def test_text_finds_lost_duplicated_refused_and_stray_text() -> None:
    ops = [op("a", kind="insert"), op("b", kind="insert"), op("r", "fail", "insert"),
           op("m", "info", "insert")]  # fmt: skip
    found = check_text(ops, {"d": {"n1": live("<a><m>x<m><r>", "h1"), "n2": live("<a><b>", "h2")}})
    assert found.problems["acknowledged writes lost"] == [("d", "n1", "b")]
    assert found.problems["elements present more than once"] == [("d", "n1", "m", 2)]
    assert found.problems["refused elements present"] == [("d", "n1", "r")]
    assert found.problems["text nobody wrote"] == [("d", "n1", "x")]
    assert [doc for doc, _ in found.problems["documents whose holders disagree"]] == ["d"]


# -- maps --------------------------------------------------------------------------------


def put(key: str, value: int, outcome: str = "ok") -> Op:
    return op(key, outcome, "set", amount=value)


def drop_key(key: str, outcome: str = "ok", changed: bool | None = True) -> Op:
    return op(key, outcome, "delete", changed=changed)


def test_maps_pass() -> None:
    ops = [put("a", 1), put("b", 2), put("c", 3), drop_key("b"), put("r", 4, "fail"),
           put("m", 5, "info"), put("x", 6), drop_key("x", "info"),
           put("y", 7), drop_key("y", changed=False)]  # fmt: skip
    # c: never deleted, present; b: deleted; x: maybe deleted; y: the delete did not see it.
    found = check_maps(ops, both({"a": 1, "c": 3, "m": 5, "y": 7}))
    assert found.ok, found.lines()
    assert found.counts["delete concurrent with its set"] == 1


def test_maps_find_a_resurrected_key_a_lost_one_and_a_wrong_value() -> None:
    ops = [put("a", 1), put("b", 2), drop_key("b"), put("r", 4, "fail"), put("c", 3)]
    found = check_maps(ops, {"d": {"n1": live({"b": 2, "r": 4, "c": 9, "z": 0})}})
    assert found.problems["deleted keys present"] == [("d", "n1", "b")]
    assert found.problems["acknowledged keys lost"] == [("d", "n1", "a")]
    assert found.problems["refused sets present"] == [("d", "n1", "r")]
    assert found.problems["keys with another value"] == [("d", "n1", "c", 9, 3)]
    assert found.problems["keys nobody wrote"] == [("d", "n1", "z")]


def test_a_delete_that_changed_nothing_promises_nothing() -> None:
    # Its node had not seen the set: concurrent, so the key may stay.
    assert check_maps([put("b", 2), drop_key("b", changed=False)], both({"b": 2})).ok
    assert not check_maps([put("b", 2), drop_key("b", changed=True)], both({"b": 2})).ok


# -- deletes with re-creation ------------------------------------------------------------


def add(value: str, incarnation: int | None, outcome: str = "ok", start: float = 0.0) -> Op:
    return op(value, outcome, "append", incarnation=incarnation, start=start)


def drop(name: str, incarnation: int | None, outcome: str = "ok", start: float = 0.0) -> Op:
    return op(name, outcome, "drop", incarnation=incarnation, start=start)


def test_deletes_pass_by_incarnation() -> None:
    ops = [add("a", 1), drop("x1", 1, start=1), add("b", 2, start=2), add("c", 2, start=3),
           add("late", 1, start=1.5),  # reached a copy without the tombstone: discarded
           add("m", None, "info"), drop("x2", None, "fail")]  # fmt: skip
    found = check_deletes(ops, both(["b", "m", "c"], incarnation=2))
    assert found.ok, found.lines()
    assert found.counts["append discarded by a delete"] == 2  # a and late
    assert found.counts["append after a delete, written into it"] == 1  # late


def test_deletes_find_an_undone_delete_a_resurrection_and_a_lost_element() -> None:
    ops = [add("a", 1), drop("x1", 1, start=1), add("b", 2, start=2), add("c", 2, start=3)]
    # Final live incarnation 1: the acknowledged delete of 1 undone, b and c from the future.
    undone = check_deletes(ops, both(["a"], incarnation=1))
    assert ("d", "n1", "x1", 1, 1) in undone.problems[
        "deletes undone (delete, incarnation deleted, final live incarnation)"
    ]
    assert ("d", "n1", "b", 2, 1) in undone.problems[
        "incarnations gone backwards (element, written in, final)"
    ]
    # Incarnation 2 with an element of the deleted one, and without c.
    resurrected = check_deletes(ops, both(["a", "b"], incarnation=2))
    assert ("d", "n1", "a", 1, 2) in resurrected.problems[
        "elements of an earlier incarnation present"
    ]
    assert ("d", "n1", "c") in resurrected.problems["acknowledged elements lost"]


def test_deletes_find_disagreeing_holders_and_a_delete_nobody_sent() -> None:
    ops = [add("a", 1), add("b", 1)]
    gone = {"d": {"n1": Held("deleted"), "n2": Held("deleted")}}
    assert check_deletes(ops, gone).problems["deleted without a delete"] == [("d", ["n1", "n2"])]
    split = {"d": {"n1": Held("deleted"), "n2": live(["a", "b"])}}
    found = check_deletes([*ops, drop("x", None, "info")], split)
    assert list(found.problems) == ["documents whose holders disagree"]
    missing = check_deletes(ops, {"d": {"n1": Held("missing"), "n2": live(["a", "b", "b"])}})
    assert missing.problems["holders without a copy"] == [("d", "n1")]
    assert missing.problems["elements present more than once"] == [("d", "n2", "b", 2)]
    assert check_deletes(ops, {}).problems["documents without holders"] == ["d"]


# -- Yjs clients -------------------------------------------------------------------------


def token(value: str, observed: bool = False) -> Op:
    return op(value, "ok" if observed else "info", "insert")


def test_yjs_passes_with_synced_and_observed_tokens() -> None:
    ops = [token("a", True), token("b"), token("c")]
    found = check_yjs(ops, both(["a", "c", "b"]), {"d": {"a", "b"}})
    assert found.ok, found.lines()


def test_yjs_finds_a_lost_synced_token_a_duplicate_and_a_phantom() -> None:
    ops = [token("a", True), token("b"), token("c")]
    found = check_yjs(ops, {"d": {"n1": live(["c", "c", "z"])}}, {"d": {"b"}})
    assert found.problems["acknowledged or synced tokens lost"] == [("d", "n1", "a"),
                                                                     ("d", "n1", "b")]  # fmt: skip
    assert found.problems["elements present more than once"] == [("d", "n1", "c", 2)]
    assert found.problems["elements nobody wrote"] == [("d", "n1", "z")]
    # A document with synced or acknowledged tokens that no holder has.
    assert check_yjs([], {}, {"e": {"a"}}).problems["documents without holders"] == ["e"]
    assert check_yjs([token("a", True)], {}, {}).problems["documents without holders"] == ["d"]


def test_deletes_find_an_append_into_a_re_created_past_incarnation() -> None:
    """A node without a copy (a stand-in) creating the document as incarnation 1 when it had
    been at incarnation 3 for seconds: the write is acknowledged, then discarded."""
    fresh = op("late", kind="append", incarnation=1, created=True, start=10.0, served_by="s")
    ops = [add("a", 3, start=1.0), fresh]
    kind = "acknowledged appends into a re-created past incarnation (element, its incarnation, later one, seen at)"  # noqa: E501
    found = check_deletes(ops, both(["a"], incarnation=3))
    assert found.problems[kind] == [("d", "late", 1, 3, 1.1)]
    assert not found.ok and found.copies_ok  # in the history alone: waiting cannot undo it
    # Not within GRACE of the write that showed incarnation 3 (replication may still be on
    # its way), nor while regions were cut apart or the serving node itself was down.
    soon = op("late", kind="append", incarnation=1, created=True, start=2.0, served_by="s")
    assert check_deletes([add("a", 3, start=1.0), soon], both(["a"], incarnation=3)).ok
    assert check_deletes(ops, both(["a"], incarnation=3), [Cut(5.0, 6.0)]).ok
    assert check_deletes(ops, both(["a"], incarnation=3), [Cut(5.0, 6.0, "s")]).ok
    assert not check_deletes(ops, both(["a"], incarnation=3), [Cut(5.0, 6.0, "other")]).ok
    # An acknowledged delete of incarnation 1 shows the document left it too.
    gone = [drop("x", 1, start=1.0), fresh]
    assert kind in check_deletes(gone, both([], incarnation=2)).problems
    # A node that saw the tombstone and re-created the next incarnation is right.
    ok = op("next", kind="append", incarnation=2, created=True, start=10.0)
    assert check_deletes([drop("x", 1, start=1.0), ok], both(["next"], incarnation=2)).ok
