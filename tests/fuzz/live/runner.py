"""Runs the live fuzzer: for each mode, a node, its seeded documents, then batches of
actions from every route's generator, each action judged as it comes back and the node checked
after each batch; at the end every document is read, the node restarted and checked again.

A failure stops the run: it is printed (seed, mode, batch, the offending actions) and written
to a reproducer file, which ``--replay`` sends again to a fresh node.
"""

from __future__ import annotations

import json
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from websockets.exceptions import InvalidHandshake

from tests.support import TIMEOUT_FACTOR

from .actions import Action, Outcome, describe, from_json
from .actions import to_json as action_json
from .base import Setting
from .content import Tokens
from .http_routes import HttpRoutes
from .judge import SLOW_SECONDS, judge
from .mutate import Mutator
from .node import LIMITS, MODES, ExternalNode, LiveNode, app_routes, log_problems
from .report import Failure, Report, format_report
from .seeds import Seeded, seed
from .watchers import Watcher
from .wire import send
from .ws_routes import WsRoutes

__all__ = ["Generator", "Options", "replay", "run"]

#: How often each route is drawn, relative to the others: writes and the sync socket most.
WEIGHTS = {
    "POST /v1/docs/{doc_id}/update": 14,
    "PATCH /v1/docs/{doc_id}": 12,
    "WS /v1/sync/{doc_id}": 10,
    "GET /v1/docs/{doc_id}": 8,
    "GET /v1/docs/{doc_id}/update": 6,
    "WS /v1/docs/{doc_id}/events": 5,
    "PUT /v1/docs/{doc_id}/placement": 4,
    "DELETE /v1/docs/{doc_id}": 3,
    "GET /v1/docs/{doc_id}/placement": 3,
    "GET /v1/docs": 3,
    "wrong method": 3,
    "no route": 3,
    "GET /v1/docs/{doc_id}/replicas": 2,
    "GET /v1/health": 2,
    "WS /v1/peer": 2,
    "POST /v1/cluster/join": 1.5,
}
#: Every other route: the cluster views, membership, metrics, the dashboard, the API pages.
OTHER_WEIGHT = 0.6


class Generator:
    """Actions drawn from every route's generator with one seeded ``random.Random``."""

    def __init__(
        self, rng: random.Random, setting: Setting, seeded: Seeded, tokens: Tokens | None
    ) -> None:
        m = Mutator(rng)
        oracle = seeded.oracle(LIMITS["max_operations"])
        self.http = HttpRoutes(m, setting, oracle, tokens)
        self.ws = WsRoutes(m, setting, oracle, tokens)
        self.routes: dict[str, Callable[[], Action]] = {**self.http.routes, **self.ws.routes}
        missing = app_routes() - set(self.routes)
        if missing:
            raise AssertionError(f"routes of the node without a generator: {sorted(missing)}")
        self.names = sorted(self.routes)
        self.weights = [WEIGHTS.get(name, OTHER_WEIGHT) for name in self.names]
        self.rng = rng

    def batch(self, size: int) -> list[Action]:
        names = self.rng.choices(self.names, self.weights, k=size)
        return [self.routes[name]() for name in names]


@dataclass(slots=True)
class Options:
    duration: float
    seed: int
    modes: tuple[str, ...] = MODES
    node_url: str | None = None
    secret: bytes | None = None
    batch_size: int = 200
    #: Stop each mode after this many batches (None: when its share of the time is up).
    batches: int | None = None
    out: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "meridian-fuzz-live")
    restart: bool = True
    #: Batches sent ``concurrency`` actions at once: every other one (1: none).
    concurrency: int = 4
    #: Restart the node every this many batches, killing it every other time (0: never).
    restart_every: int = 0
    quiet: bool = False


# -- running -----------------------------------------------------------------------------------


class _Stop(Exception):
    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.problem)
        self.failure = failure


class _Session:
    """One mode: its node, seeded documents and generator."""

    def __init__(self, mode: str, options: Options, report: Report, workdir: Path) -> None:
        self.mode = mode
        self.options = options
        self.report = report
        if options.node_url is not None:
            self.node: LiveNode | ExternalNode = ExternalNode(options.node_url, options.secret)
        else:
            self.node = LiveNode(mode, workdir)
        self.node.start()
        self.tokens = Tokens(self.node.secret) if self.node.auth and self.node.secret else None
        self.headers = {"Authorization": f"Bearer {self.tokens.admin}"} if self.tokens else {}
        self.client = httpx.Client(base_url=self.node.url, timeout=30 * TIMEOUT_FACTOR)
        self.batch = 0
        self.actions: list[Action] = []

    def close(self) -> None:
        self.client.close()
        self.node.close()

    def seed(self) -> Seeded:
        seeded = seed(self.client, self.headers, self.node.url.replace("http", "ws", 1))
        self.seeded = seeded
        self._log_check(None)
        self.setting = Setting(
            mode=self.mode,
            secret=self.node.secret,
            auth=self.node.auth,
            node_id=self.node.node_id,
            max_body=LIMITS["max_body"],
            max_message=LIMITS["max_message"],
            seeded=sorted(seeded.records),
            tombstone=seeded.tombstone,
            vectors=seeded.vectors(),
            contents={doc: record.content for doc, record in seeded.records.items()},
            digests={doc: record.digest for doc, record in seeded.records.items()},
        )
        return seeded

    def fail(self, problem: str, offending: list[Action]) -> _Stop:
        log = self.node.log_tail() + getattr(self, "stacks", [])
        return _Stop(Failure(self.mode, self.batch, problem, offending, self.actions, log))

    def _log_check(self, action: Action | None) -> None:
        errors, warnings, known = log_problems(self.node.take_log())
        self.report.warnings.update(warnings)
        self.report.tolerated.update(known)
        if errors:
            raise self.fail(
                f"the node logged an error: {errors[0][:500]}", [action] if action else []
            )

    def run_batch(self, actions: list[Action], concurrency: int = 1) -> None:
        """Sends ``actions`` (one at a time, or ``concurrency`` at once), judging each answer,
        then checks the node."""
        self.actions = actions
        node = self.node
        watchers = self._watch()
        try:
            self._send_all(actions, concurrency)
        finally:
            problems = [problem for w in watchers if (problem := w.stop()) is not None]
        self.report.watched += sum(w.messages for w in watchers)
        if problems:
            raise self.fail(problems[0], [a for a in actions if a.doc in self.watched])
        self.check()
        self.report.batches[self.mode] += 1
        rss = node.rss_kb()
        if rss is not None:
            start, _, peak = self.report.rss_kb.setdefault(self.mode, [rss, rss, rss])
            self.report.rss_kb[self.mode] = [start, rss, max(rss, peak)]

    def _watch(self) -> list[Watcher]:
        """Two events streams and a y-websocket client of fuzz documents, open through the
        batch (the same documents every batch: they see every kind of write)."""
        self.watched = ("fz-1", "fz-2", "fz-3")
        kinds = ("events", "events", "sync")
        watchers = []
        try:
            for kind, doc in zip(kinds, self.watched, strict=True):
                watchers.append(Watcher(self.node.host, self.node.port, kind, doc, self.headers))
        except (OSError, InvalidHandshake) as exc:
            for watcher in watchers:
                watcher.stop()
            raise self.fail(f"a watcher could not connect: {exc!r}", []) from None
        return watchers

    def _send_all(self, actions: list[Action], concurrency: int) -> None:
        if concurrency > 1:
            with ThreadPoolExecutor(concurrency, thread_name_prefix="live-fuzz") as pool:
                outcomes = list(pool.map(self._send, actions))
            for action, outcome in zip(actions, outcomes, strict=True):
                self._judge(action, outcome)
            self._log_check(None)
        else:
            for action in actions:
                self._judge(action, self._send(action))
                self._log_check(action)

    def _send(self, action: Action) -> Outcome | Exception:
        try:
            return send(action, self.node.host, self.node.port)
        except Exception as exc:  # the fuzzer's own bug: reported as such, never hidden
            return exc

    def _judge(self, action: Action, outcome: Outcome | Exception) -> None:
        if isinstance(outcome, Exception):
            problem = f"the fuzzer itself failed to send this action: {outcome!r}"
            raise self.fail(problem, [action]) from outcome
        self.report.record(action, outcome)
        problem = judge(action, outcome)
        if problem is None and not self.node.alive():
            problem = f"the node died (exit status {self.node.exit_status()})"
        if problem is not None:
            if outcome.hung is not None or outcome.seconds > SLOW_SECONDS:
                problem += self._diagnose(action)
            raise self.fail(problem, [action])

    def _diagnose(self, action: Action) -> str:
        """After a hang: does the node still answer, and the same request? Its threads'
        stacks go to the log (where its event loop is)."""
        node = self.node
        try:
            health = self.client.get("/v1/health", timeout=5 * TIMEOUT_FACTOR).status_code
        except httpx.HTTPError as exc:
            health = repr(exc)  # type: ignore[assignment]
        again = send(action, node.host, node.port)
        stacks = node.dump_stacks() if isinstance(node, LiveNode) else []
        self.stacks = stacks
        return (
            f"; then GET /v1/health: {health}; the same action again: statuses "
            f"{again.statuses}, hung {again.hung}, {again.seconds:.1f} s; "
            f"{len(stacks)} lines of thread stacks in the log"
        )

    def check(self) -> None:
        """The node lives, answers its health, and every seeded document is as recorded."""
        if not self.node.alive():
            raise self.fail(f"the node died (exit status {self.node.exit_status()})", [])
        try:
            health = self.client.get("/v1/health")
            if health.status_code != 200:
                raise self.fail(f"GET /v1/health answered {health.status_code}", [])
            problems = self.seeded.verify(self.client, self.headers)
        except httpx.HTTPError as exc:
            raise self.fail(f"the node stopped answering: {exc!r}", []) from None
        if problems:
            doc, what = problems[0]
            touched = [a for a in self.actions if a.doc == doc and a.expect != "read"]
            raise self.fail(f"seeded document {doc} changed: {what}", touched or self.actions)
        self._log_check(None)

    def sweep(self) -> None:
        """Reads every document the node lists (with its digest): none may fail to load."""
        cursor = None
        count = 0
        while True:
            params = {"limit": "50", **({"cursor": cursor} if cursor else {})}
            page = self.client.get("/v1/docs", params=params, headers=self.headers)
            if page.status_code != 200:
                raise self.fail(f"GET /v1/docs answered {page.status_code}: {page.text}", [])
            listing = page.json()
            for entry in listing["documents"]:
                doc = entry["id"]
                for path in (f"/v1/docs/{doc}", f"/v1/docs/{doc}/update"):
                    answer = self.client.get(path, params={"digest": "true"}, headers=self.headers)
                    if answer.status_code >= 500:
                        raise self.fail(f"reading {doc} answered {answer.status_code}", [])
                count += 1
            cursor = listing["next_cursor"]
            if not cursor:
                break
        self.report.documents_swept[self.mode] = count
        self._log_check(None)

    def restart(self, *, kill: bool = False) -> None:
        """Stops the node (SIGTERM: it must stop cleanly; or SIGKILL), starts it on the same
        data, and checks it again: the seeded documents, every document readable."""
        assert isinstance(self.node, LiveNode)
        if kill:
            self.node.kill()
        else:
            status = self.node.stop()
            self._log_check(None)
            if status != 0:
                raise self.fail(f"the node stopped with status {status} after fuzzing", [])
        self.node.start()
        self.client.close()
        self.client = httpx.Client(base_url=self.node.url, timeout=30 * TIMEOUT_FACTOR)
        self.check()
        self.sweep()
        self.report.restarts[self.mode] += 1


def run(options: Options, *, out: Callable[[str], None] = print) -> Report:
    """Fuzzes each mode for its share of ``options.duration`` (or ``options.batches``);
    returns the report, whose ``failure`` is set when something broke."""
    say = (lambda _: None) if options.quiet else out
    report = Report(options.seed)
    started = time.monotonic()
    modes = ("external",) if options.node_url else options.modes
    say(f"live fuzzing: seed {options.seed}, modes {', '.join(modes)}, {options.duration:g} s")
    for index, mode in enumerate(modes):
        share = (options.duration - (time.monotonic() - started)) / (len(modes) - index)
        deadline = time.monotonic() + max(0.0, share)
        failure = _fuzz_mode(mode, options, report, deadline, say)
        if failure is not None:
            report.failure = failure
            _write_reproducer(options, failure)
            out(_describe_failure(options, failure))
            break
    report.seconds = time.monotonic() - started
    say(format_report(report))
    return report


def _fuzz_mode(
    mode: str, options: Options, report: Report, deadline: float, say: Callable[[str], None]
) -> Failure | None:
    workdir = Path(tempfile.mkdtemp(prefix=f"meridian-live-{mode}-"))
    session = None
    keep = False
    try:
        session = _Session(mode, options, report, workdir)
        seeded = session.seed()
        rng = random.Random(f"{options.seed}:{mode}")
        generator = Generator(rng, session.setting, seeded, session.tokens)
        rss = session.node.rss_kb()
        if rss is not None:
            report.rss_kb[mode] = [rss, rss, rss]
        while time.monotonic() < deadline and (
            options.batches is None or session.batch < options.batches
        ):
            concurrency = options.concurrency if session.batch % 2 else 1
            session.run_batch(generator.batch(options.batch_size), concurrency)
            session.batch += 1
            every = options.restart_every
            if every and session.batch % every == 0 and isinstance(session.node, LiveNode):
                session.restart(kill=session.batch // every % 2 == 1)
            if session.batch % 10 == 0:
                say(f"  {mode}: {session.batch} batches, RSS {session.node.rss_kb()} KiB")
        session.sweep()
        if options.restart and isinstance(session.node, LiveNode):
            session.restart()
        say(f"  {mode}: {session.batch} batches, no failure")
        return None
    except _Stop as stop:
        keep = True
        return stop.failure
    finally:
        if session is not None:
            session.close()
        if keep:
            print(f"  the node's data directory is kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


# -- failures and reports ----------------------------------------------------------------------


def _write_reproducer(options: Options, failure: Failure) -> None:
    options.out.mkdir(parents=True, exist_ok=True)
    path = options.out / f"live-{failure.mode}-seed{options.seed}-batch{failure.batch}.json"
    path.write_text(
        json.dumps(
            {
                "seed": options.seed,
                "mode": failure.mode,
                "batch": failure.batch,
                "batch_size": options.batch_size,
                "problem": failure.problem,
                "offending": [action_json(a) for a in failure.offending],
                "actions": [action_json(a) for a in failure.actions],
                "log": failure.log,
            },
            indent=1,
        ),
        encoding="utf-8",
    )
    failure.reproducer = path


def _describe_failure(options: Options, failure: Failure) -> str:
    lines = [
        f"FAILURE (seed {options.seed}, mode {failure.mode}, batch {failure.batch}): "
        f"{failure.problem}"
    ]
    for action in failure.offending[:10]:
        lines.append(describe(action))
    if len(failure.offending) > 10:
        lines.append(f"... and {len(failure.offending) - 10} more")
    lines.append("the node's last lines:")
    lines += [f"  {line}" for line in failure.log[-60:]]
    lines.append(f"reproducer: {failure.reproducer}")
    lines.append(
        f"again: python -m tests.fuzz.live --seed {options.seed} --mode {failure.mode} "
        f"--batch-size {options.batch_size}  (or --replay {failure.reproducer})"
    )
    return "\n".join(lines)


def replay(path: Path, *, out: Callable[[str], None] = print) -> Failure | None:
    """Sends a reproducer's batch to a fresh node of its mode (seeded the same way) and
    judges it as the run did; returns the failure, if it happens again."""
    data = json.loads(path.read_text(encoding="utf-8"))
    actions = [from_json(item) for item in data["actions"]]
    options = Options(duration=0, seed=data["seed"], modes=(data["mode"],))
    report = Report(options.seed)
    workdir = Path(tempfile.mkdtemp(prefix="meridian-live-replay-"))
    session = _Session(data["mode"], options, report, workdir)
    try:
        session.seed()
        session.run_batch(actions)
        out(f"replayed {len(actions)} actions: no failure")
        return None
    except _Stop as stop:
        out(f"replayed: {stop.failure.problem}")
        for action in stop.failure.offending[:10]:
            out(describe(action))
        return stop.failure
    finally:
        session.close()
        shutil.rmtree(workdir, ignore_errors=True)
