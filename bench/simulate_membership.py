"""Deterministic simulation of Meridian's membership and placement at scale (issue 11, item 7).

The membership CRDT (app/cluster/membership.py) and placement (app/cluster/placement.py) are
sans-I/O, so this script runs them for many nodes in one process, with no sockets and no clock:
every choice comes from one seed, and a seed that breaks an invariant is a regression test.

Run from the repository root with the project's virtualenv; other people share this machine's
two cores, so run it under ``nice``::

    nice .venv/bin/python bench/simulate_membership.py     # 1,000 nodes, 10^5 documents: ~1 min
    nice .venv/bin/python bench/simulate_membership.py --documents 1000000 --jobs 2  # ~1.5 min
    nice .venv/bin/python bench/simulate_membership.py --seed 7 --loss 0.3 --nodes 100

**Gossip.** N nodes in R regions (as many in each, or with ``--layout load`` in proportion to
the copies each region holds), all active and agreeing. Time goes in rounds (one gossip period):
in each round every node that is up sends its whole member list to ``--fanout`` peers chosen at
random among the live members *its own list* knows; a message is lost with probability
``--loss``, else delivered after 0 to ``--delay`` rounds, the messages due in a round in a
shuffled order. A receiver merges what it gets (:meth:`Membership.merge`); when the sender is
removed in the receiver's list, the receiver answers with its list (nobody gossips to a removed
member, so it would never learn of its removal otherwise). Scenarios, each from the agreed list
the previous one ended with:

* join: a new node asks one seed of its region; the seed checks the join (:func:`check_join`),
  applies it and answers with its list, and gossip carries the rest;
* activate: the new node, having taken its share of documents, marks itself active;
* 4 concurrent joins, each at a seed of another region, in the same round;
* join while ``--crash`` of the nodes are down for ``--down-rounds`` rounds (they restart with
  the list they had persisted, and messages sent to them are lost);
* remove: an operator at one node removes a dead node (it is down and never comes back);
* restart of the removed node with its old data: it gossips its old list (where it is active) for
  a while; it must resurrect nothing (every other node keeps it removed) and be refused a join
  under its old incarnation; it rejoins with a new one.

Per scenario: rounds until every node is up and holds the same list (one digest), the messages
sent, how many brought news to their receiver, and the bytes sent cluster-wide three ways: the
whole list in every message (what is simulated); digest-first (16 bytes of digest, the whole
list only when the digests differ); region digests (on a difference, one digest per region, then
the entries of the regions that differ: a one-level Merkle tree). Checked after every delivery:
a node's list only grows (the new list includes the old); at the end, one digest everywhere.

**Placement.** D documents, each with its home in a random region and the default policy
(``--replicas`` regions: home and the nearest), over the topology built from the agreed member
list (:func:`membership.topology`). Inside a region, rendezvous hashing over the region's active
members, ``--per-region`` holders. Computing ``placement.holders`` for 10^6 documents in Python
costs ~10^8 hash calls, so the counts are made per region with the same hash (blake2b-64 of
``doc\\0node``, the best first): one pass per region over its documents and members, in
``--jobs`` processes. It picks the same holders as ``placement.holders`` (equal weights; only a
tie of two 52-bit hash prefixes, ~m^2/2^53 per document, could differ; members of unequal
weights go through ``placement.rendezvous`` itself, slowly), and a sample of
documents is checked against ``placement.holders`` itself. Reported: documents per node, max/mean
(and what plain hashing noise gives at that mean: ~1 + sqrt(2 ln n / mean)); per region, its
documents; on a join in *each* region (the region's n members become n + 1), the documents that
move against the optimum, the ideal 1/(n + 1) share of the region's copies; on a removal in each
region, the documents that move against the ideal 1/n share. Checked: every document's holders
are active members; on a join only documents that gain the new node move, on a removal only those
of the removed node (the sample, with ``placement.holders`` before and after).
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import json
import math
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
if str(REPO / "bench") not in sys.path:
    sys.path.insert(0, str(REPO / "bench"))

from progress import Progress  # noqa: E402  (this directory)

from app.cluster.membership import (  # noqa: E402
    MemberEntry,
    Membership,
    activate,
    check_join,
    join,
    next_incarnation,
    remove,
    topology,
)
from app.cluster.placement import (  # noqa: E402
    Member,
    PlacementRecord,
    Stamp,
    Topology,
    holders,
    regions_of,
    rendezvous,
)

#: Progress on stderr (which step, how long it took); results go to stdout.
progress = Progress("membership")

#: A digest-first exchange sends this much when both sides agree (16 bytes and framing).
DIGEST_BYTES = 40


# ---------------------------------------------------------------------------------------------
# The cluster


def region_names(count: int) -> list[str]:
    return [f"zone-{i:02d}" for i in range(count)]


def base_topology(regions: list[str], replicas: int, per_region: int, seed: int) -> Topology:
    """Regions at random points of a 200 x 100 ms plane (seeded); one-way latency is the
    distance, plus 2 ms."""
    rng = random.Random(f"{seed}-geography")
    where = {region: (rng.uniform(0, 200), rng.uniform(0, 100)) for region in regions}
    latency = {
        (a, b): round(math.dist(where[a], where[b]) + 2, 1)
        for i, a in enumerate(regions)
        for b in regions[i + 1 :]
    }
    return Topology(tuple(regions), latency, min(replicas, len(regions)), per_region)


def node_id(region: str, k: int) -> str:
    return f"{region}-{k}"


def address(region: str, k: int) -> str:
    return f"{region}-{k}.meridian.internal:7000"


def region_sizes(nodes: int, base: Topology, layout: str) -> dict[str, int]:
    """How many nodes each region runs: the same number (``even``, node i in region i mod R) or
    in proportion to the copies the region holds when homes are spread evenly (``load``: a
    region that is the nearest to many others holds their second copies), at least 2 each."""
    regions = list(base.regions)
    if layout == "even":
        return {
            r: nodes // len(regions) + (i < nodes % len(regions)) for i, r in enumerate(regions)
        }
    share = Counter(
        region
        for home in regions
        for region in regions_of(PlacementRecord.new("x", home, Stamp(1, "boot")), base)
    )
    total = sum(share.values())
    exact = {r: 2 + (nodes - 2 * len(regions)) * share[r] / total for r in regions}
    sizes = {r: math.floor(exact[r]) for r in regions}
    by_remainder = sorted(regions, key=lambda r: (sizes[r] - exact[r], r))
    for region in by_remainder[: nodes - sum(sizes.values())]:
        sizes[region] += 1
    return sizes


def first_members(sizes: dict[str, int]) -> Membership:
    """The active members of a cluster started from regions.toml, ``sizes[region]`` per region."""
    entries = []
    for region, count in sizes.items():
        for k in range(1, count + 1):
            made = join(node_id(region, k), region, address(region, k), 1, Stamp(1_000, "boot"))
            entries.append(activate(made, Stamp(2_000, "boot")))
    return Membership(entries)


# ---------------------------------------------------------------------------------------------
# Gossip


@dataclass
class Figures:
    """What one scenario measured."""

    name: str
    rounds: int | None = None
    messages: int = 0
    news: int = 0
    replies: int = 0
    differing: int = 0
    #: Over the messages whose list differed from the receiver's: regions with a difference.
    differing_regions: int = 0
    regions: int = 1
    list_bytes: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def full_bytes(self) -> int:
        return self.messages * self.list_bytes

    @property
    def digest_first_bytes(self) -> int:
        return self.messages * DIGEST_BYTES + self.differing * self.list_bytes

    @property
    def region_digest_bytes(self) -> int:
        """Digest first; when it differs, one digest per region, then the entries of the regions
        that differ (a one-level Merkle tree)."""
        per_region = self.list_bytes / self.regions
        return round(
            self.messages * DIGEST_BYTES
            + self.differing * self.regions * DIGEST_BYTES
            + self.differing_regions * per_region
        )


def _regions_differing(a: Membership, b: Membership) -> set[str]:
    """The regions of the node ids whose entries differ between two lists."""
    regions = set()
    for entry in a:
        theirs = b.get(entry.node)
        if theirs is not entry and theirs != entry:
            regions.add(entry.region)
    regions.update(entry.region for entry in b if entry.node not in a)
    return regions


class Gossip:
    """The member lists of every node and the messages in flight; one seeded random source."""

    def __init__(
        self, members: Membership, *, fanout: int, loss: float, delay: int, seed: str
    ) -> None:
        self.rng = random.Random(seed)
        self.fanout, self.loss, self.delay = fanout, loss, delay
        #: Each node's list, by node id.
        self.views: dict[str, Membership] = dict.fromkeys((e.node for e in members), members)
        #: Nodes down now: they neither send nor receive (messages to them are lost).
        self.down: set[str] = set()
        #: Node id -> round it restarts (with the list it had when it went down).
        self.restarts: dict[str, int] = {}
        #: Messages in flight: (due round, sequence, receiver, sender, list).
        self.in_flight: list[tuple[int, int, str, str, Membership]] = []
        self.round = 0
        self._sequence = 0
        #: Live node ids of a list, by id(list) (the list kept alive next to them).
        self._peers: dict[int, tuple[Membership, tuple[str, ...]]] = {}

    def peers(self, view: Membership) -> tuple[str, ...]:
        known = self._peers.get(id(view))
        if known is None or known[0] is not view:
            if len(self._peers) > 50_000:
                self._peers.clear()
            known = (view, tuple(e.node for e in view.live()))
            self._peers[id(view)] = known
        return known[1]

    def step(self, figures: Figures) -> None:
        """One round: every node up sends, then the messages due are delivered."""
        rng = self.rng
        for node, when in list(self.restarts.items()):
            if when <= self.round:
                self.down.discard(node)
                del self.restarts[node]
        senders = [node for node in self.views if node not in self.down]
        rng.shuffle(senders)
        for node in senders:
            view = self.views[node]
            candidates = self.peers(view)
            chosen = rng.sample(candidates, min(self.fanout + 1, len(candidates)))
            for peer in [p for p in chosen if p != node][: self.fanout]:
                self.send(node, peer, view, figures)
        due_now: list[tuple[int, int, str, str, Membership]] = []
        while self.in_flight and self.in_flight[0][0] <= self.round:
            due_now.append(heapq.heappop(self.in_flight))
        rng.shuffle(due_now)
        for _, _, peer, sender, message in due_now:
            self.deliver(peer, sender, message, figures)
        self.round += 1

    def send(self, node: str, peer: str, view: Membership, figures: Figures) -> None:
        """One message, lost or put in flight with its delay."""
        figures.messages += 1
        if self.rng.random() < self.loss:
            return
        due = self.round + self.rng.randint(0, self.delay)
        self._sequence += 1
        heapq.heappush(self.in_flight, (due, self._sequence, peer, node, view))

    def deliver(self, peer: str, sender: str, message: Membership, figures: Figures) -> None:
        """``peer`` merges ``message``. When the sender is removed in ``peer``'s list but not in
        its own, ``peer`` answers with its list (a removed member is no one's gossip peer, so
        it would never hear of its removal otherwise)."""
        if peer in self.down or peer not in self.views:
            return
        held = self.views[peer]
        if message is not held and message != held:
            figures.differing += 1
            figures.differing_regions += len(_regions_differing(held, message))
        merged = held.merge(message)
        if merged is not held:
            figures.news += 1
            # Invariant: a node's list only grows (nothing it knew is undone).
            if not merged.includes(held):
                raise AssertionError(f"{peer}'s member list went back after a merge")
            self.views[peer] = merged
        theirs = merged.get(sender)
        if theirs is not None and not theirs.live:
            own = message.get(sender)
            if own is not None and own.live and own.incarnation <= theirs.incarnation:
                figures.replies += 1
                self.send(peer, sender, merged, figures)

    def agreed(self) -> Membership | None:
        """The one list every node that is up and a live member holds, None if they differ."""
        first: Membership | None = None
        for node, view in self.views.items():
            if node in self.down:
                continue
            if first is None:
                first = view
            elif view is not first and view != first:
                return None
        return first

    def run_until_agreed(self, figures: Figures, limit: int) -> None:
        """Rounds until every node is up again and :meth:`agreed`; the count goes in
        ``figures.rounds`` (None when ``limit`` rounds were not enough)."""
        start = self.round
        while self.round - start < limit:
            if not self.restarts and self.agreed() is not None:
                figures.rounds = self.round - start
                break
            self.step(figures)
        agreed = self.agreed()
        if agreed is not None:
            figures.list_bytes = len(json.dumps(agreed.to_json(), separators=(",", ":")))
            figures.regions = len({e.region for e in agreed})


def gossip_scenarios(
    members: Membership, base: Topology, args: argparse.Namespace
) -> tuple[list[Figures], Membership]:
    """Runs the scenarios of the module docstring; returns their figures and the final list."""
    regions = list(base.regions)
    sim = Gossip(
        members, fanout=args.fanout, loss=args.loss, delay=args.delay, seed=f"{args.seed}-gossip"
    )
    rng = random.Random(f"{args.seed}-scenarios")
    limit = args.max_rounds
    results: list[Figures] = []
    clock_millis = [10_000]

    def stamp(node: str) -> Stamp:
        clock_millis[0] += 1
        return Stamp(clock_millis[0], node)

    def seed_of(region: str) -> str:
        return node_id(region, 1)

    def admit(node: str, region: str, k: int) -> MemberEntry:
        """A join of a new node at its region's seed; the node starts from the seed's answer."""
        seed = seed_of(region)
        held = sim.views[seed]
        entry = join(node, region, address(region, k), next_incarnation(held, node), stamp(node))
        reason = check_join(held, entry, base.regions)
        if reason is not None:
            raise AssertionError(f"the join of {node} was refused: {reason}")
        sim.views[seed] = held.apply(entry)
        sim.views[node] = sim.views[seed]
        return entry

    def count_in(region: str) -> int:
        return sum(1 for e in sim.views[seed_of(region)] if e.region == region)

    # 1. One join.
    with progress.step("gossip: one join"):
        figures = Figures("join (1 node)")
        region = rng.choice(regions)
        k = count_in(region) + 1
        joiner = node_id(region, k)
        entry = admit(joiner, region, k)
        sim.run_until_agreed(figures, limit)
        results.append(figures)

    # 2. It takes its share of documents, then marks itself active.
    with progress.step("gossip: activation"):
        figures = Figures("activate it")
        sim.views[joiner] = sim.views[joiner].apply(activate(entry, stamp(joiner)))
        sim.run_until_agreed(figures, limit)
        results.append(figures)

    # 3. Concurrent joins at the seeds of different regions.
    with progress.step("gossip: 4 concurrent joins"):
        figures = Figures("4 joins at 4 seeds")
        for region in rng.sample(regions, min(4, len(regions))):
            k = count_in(region) + 1
            admit(node_id(region, k), region, k)
        sim.run_until_agreed(figures, limit)
        results.append(figures)

    # 4. A join while some nodes are down.
    with progress.step("gossip: join with nodes down"):
        crashed = int(args.crash * len(sim.views))
        figures = Figures(f"join, {crashed} down {args.down_rounds} rd")
        victims = rng.sample(sorted(sim.views), crashed)
        region = rng.choice(regions)
        while seed_of(region) in victims:
            region = rng.choice(regions)
        for node in victims:
            sim.down.add(node)
            sim.restarts[node] = sim.round + args.down_rounds
        k = count_in(region) + 1
        admit(node_id(region, k), region, k)
        sim.run_until_agreed(figures, limit + args.down_rounds)
        results.append(figures)

    # 5. An operator removes a dead node.
    with progress.step("gossip: removal of a dead node"):
        figures = Figures("remove a dead node")
        operator = rng.choice(sorted(sim.views))
        seeds = {seed_of(region) for region in regions}
        dead = rng.choice([n for n in sorted(sim.views) if n != operator and n not in seeds])
        dead_view = sim.views.pop(dead)  # it is down for good: what it had persisted
        held = sim.views[operator]
        old = held.get(dead)
        assert old is not None
        sim.views[operator] = held.apply(remove(old, stamp(operator)))
        sim.run_until_agreed(figures, limit)
        results.append(figures)

    # 6. The removed node restarts with its old data.
    with progress.step("gossip: removed node restarts with old data"):
        figures = Figures("removed node restarts")
        sim.views[dead] = dead_view
        for _ in range(args.down_rounds):
            sim.step(figures)
            for node, view in sim.views.items():
                state = view.get(dead)
                if node != dead and state is not None and state.state != "removed":
                    raise AssertionError(f"{node} resurrected {dead}: {state}")
        learned = sim.views[dead].get(dead)
        assert learned is not None
        figures.notes.append(f"it learned it is {learned.state} ({figures.replies} answers)")
        again = join(dead, learned.region, learned.address, 1, stamp(dead))
        reason = check_join(sim.views[seed_of(learned.region)], again, base.regions)
        if reason is None:
            raise AssertionError("a removed node was let back under its old incarnation")
        sim.views.pop(dead)
        incarnation = next_incarnation(sim.views[seed_of(learned.region)], dead)
        rejoin = join(dead, learned.region, learned.address, incarnation, stamp(dead))
        seed = seed_of(learned.region)
        if check_join(sim.views[seed], rejoin, base.regions) is not None:
            raise AssertionError("the rejoin under a new incarnation was refused")
        sim.views[seed] = sim.views[seed].apply(rejoin)
        sim.views[dead] = sim.views[seed]
        figures.rounds = None
        sim.run_until_agreed(figures, limit)
        figures.notes.append(f"rejoined as incarnation {incarnation}")
        results.append(figures)

    # The new members take their share and become active: the list placement uses.
    final = sim.agreed()
    if final is None:
        raise AssertionError("the nodes did not agree on one member list")
    digests = {view.digest() for node, view in sim.views.items() if node not in sim.down}
    if len(digests) != 1:
        raise AssertionError(f"{len(digests)} digests at the end")
    for e in final.entries():
        if e.state == "joining":
            final = final.apply(activate(e, stamp(e.node)))
    return results, final


# ---------------------------------------------------------------------------------------------
# Placement


@dataclass
class RegionTask:
    region: str
    #: The region's active members, in a fixed order.
    nodes: list[str]
    #: The documents (their numbers) the region holds.
    docs: list[int]
    per_region: int
    #: The node that joins the region, and the one removed from it.
    joiner: str
    removed: str
    #: Documents whose holders in this region are returned (the sample).
    sample: frozenset[int]


@dataclass
class RegionResult:
    region: str
    counts: dict[str, int]
    moved_on_join: int
    moved_on_removal: int
    sample_holders: dict[int, list[str]]


def doc_id(number: int) -> str:
    return f"doc-{number}"


def place_region(task: RegionTask) -> RegionResult:
    """The holders of every document of one region: for each document, the blake2b-64 of
    ``doc\\0node`` of every member, the ``per_region`` largest first (what placement's weighted
    rendezvous picks when weights are equal); the documents that would move on a join of
    ``task.joiner`` (its hash beats the last holder's) and on the removal of ``task.removed``
    (one of the holders)."""
    blake2b = hashlib.blake2b
    suffixes = [f"\x00{node}".encode() for node in task.nodes]
    joiner = f"\x00{task.joiner}".encode()
    k = min(task.per_region, len(task.nodes))
    counts = [0] * len(task.nodes)
    moved_on_join = 0
    sample_holders: dict[int, list[str]] = {}
    index = range(len(task.nodes))
    if not task.nodes:  # the joiner would take every document
        return RegionResult(task.region, {}, len(task.docs), 0, {n: [] for n in task.sample})
    for number in task.docs:
        prefix = blake2b(doc_id(number).encode(), digest_size=8)
        digests = []
        for suffix in suffixes:
            h = prefix.copy()
            h.update(suffix)
            digests.append(h.digest())
        if k == 1:
            best = max(digests)
            top = [digests.index(best)]
        else:
            top = heapq.nlargest(k, index, key=digests.__getitem__)
        for i in top:
            counts[i] += 1
        h = prefix.copy()
        h.update(joiner)
        if k < task.per_region or h.digest() > digests[top[-1]]:
            moved_on_join += 1
        if number in task.sample:
            sample_holders[number] = [task.nodes[i] for i in top]
    by_node = dict(zip(task.nodes, counts, strict=True))
    return RegionResult(
        task.region, by_node, moved_on_join, by_node.get(task.removed, 0), sample_holders
    )


def place_region_weighted(task: RegionTask, weights: dict[str, float]) -> RegionResult:
    """:func:`place_region` for members of unequal weights, through placement itself (slow)."""
    members = [Member(node, task.region, weights[node]) for node in task.nodes]
    joiner = Member(task.joiner, task.region)
    counts: Counter[str] = Counter()
    moved_on_join = 0
    sample_holders: dict[int, list[str]] = {}
    for number in task.docs:
        chosen = [m.node for m in rendezvous(doc_id(number), members, task.per_region)]
        counts.update(chosen)
        after = rendezvous(doc_id(number), [*members, joiner], task.per_region)
        moved_on_join += task.joiner in {m.node for m in after}
        if number in task.sample:
            sample_holders[number] = chosen
    by_node = {node: counts[node] for node in task.nodes}
    return RegionResult(
        task.region, by_node, moved_on_join, by_node.get(task.removed, 0), sample_holders
    )


@dataclass
class Placement:
    documents: int
    per_node: dict[str, int]
    per_region_docs: dict[str, int]
    results: list[RegionResult]
    members_in: dict[str, int]
    sample: list[int]
    checked: int
    seconds: float


def run_placement(members: Membership, base: Topology, args: argparse.Namespace) -> Placement:
    started = time.perf_counter()
    rng = random.Random(f"{args.seed}-documents")
    topo = topology(members, base)
    regions = list(topo.regions)
    documents = args.documents
    with progress.step(f"placement: homes and regions of {documents:,} documents"):
        home_of = bytearray(rng.randrange(len(regions)) for _ in range(documents))
        by_home: dict[str, list[int]] = {region: [] for region in regions}
        for number, home_index in enumerate(home_of):
            by_home[regions[home_index]].append(number)
        # Under the default policy the regions of a document depend only on its home.
        held_in = {
            home: regions_of(PlacementRecord.new("x", home, Stamp(1, "boot")), topo)
            for home in regions
        }
        docs_of: dict[str, list[int]] = {region: [] for region in regions}
        for home, numbers in by_home.items():
            for region in held_in[home]:
                docs_of[region].extend(numbers)
    sample = sorted(rng.sample(range(documents), min(args.check, documents)))
    sample_set = frozenset(sample)
    tasks: list[RegionTask] = []
    weights: dict[str, float] = {}
    for region in regions:
        active = topo.active_members(region)
        weights.update({m.node: m.weight for m in active})
        nodes = [m.node for m in active]
        taken = {e.node for e in members.entries()}
        k = len(nodes) + 1
        while node_id(region, k) in taken:
            k += 1
        removed = rng.choice(nodes) if nodes else ""
        tasks.append(
            RegionTask(
                region,
                nodes,
                sorted(docs_of[region]),
                topo.nodes_per_region,
                node_id(region, k),
                removed,
                sample_set,
            )
        )
    equal = len(set(weights.values())) <= 1
    work: Callable[[RegionTask], RegionResult] = (
        place_region if equal else (lambda task: place_region_weighted(task, weights))
    )
    pairs = sum(len(t.docs) * len(t.nodes) for t in tasks)
    with progress.step(f"placement: {pairs:,} document x member hashes in {args.jobs} process(es)"):
        if args.jobs > 1 and equal:
            with ProcessPoolExecutor(max_workers=args.jobs) as pool:
                results = list(pool.map(work, tasks))
        else:
            results = [work(task) for task in tasks]
    per_node: dict[str, int] = {}
    for result in results:
        per_node.update(result.counts)

    # The sample against placement.holders itself, and the moves on a join and a removal.
    with progress.step(f"placement: {len(sample):,} documents checked with placement.holders"):
        active_nodes = {e.node for e in members.active()}
        by_region = {r.region: r for r in results}
        checked = 0
        for number in sample:
            home = regions[home_of[number]]
            record = PlacementRecord.new(doc_id(number), home, Stamp(1, "boot"))
            expected = holders(record, topo)
            fast = [n for region in held_in[home] for n in by_region[region].sample_holders[number]]
            if list(expected) != fast:
                raise AssertionError(f"{doc_id(number)}: holders {expected} but counted {fast}")
            if not set(expected) <= active_nodes:
                raise AssertionError(f"{doc_id(number)} is held by non-active {expected}")
            checked += 1
        for task in tasks:
            joined = topology(_with_joiner(members, task), base)
            without = topology(_without(members, task.removed), base) if task.removed else topo
            for number in sample:
                home = regions[home_of[number]]
                if task.region not in held_in[home]:
                    continue
                record = PlacementRecord.new(doc_id(number), home, Stamp(1, "boot"))
                before = holders(record, topo)
                after_join = holders(record, joined)
                if before != after_join and task.joiner not in after_join:
                    raise AssertionError(f"{doc_id(number)} moved on a join without the joiner")
                after_removal = holders(record, without)
                if before != after_removal and task.removed not in before:
                    raise AssertionError(f"{doc_id(number)} moved on an unrelated removal")
                if not set(after_join) <= active_nodes | {task.joiner}:
                    raise AssertionError(f"{doc_id(number)} held by a non-active member")
    return Placement(
        documents,
        per_node,
        {region: len(docs_of[region]) for region in regions},
        results,
        {region: len(topo.active_members(region)) for region in regions},
        sample,
        checked,
        time.perf_counter() - started,
    )


def _with_joiner(members: Membership, task: RegionTask) -> Membership:
    k = int(task.joiner.rsplit("-", 1)[1])
    made = join(task.joiner, task.region, address(task.region, k), 1, Stamp(90_000, "sim"))
    return members.apply(activate(made, Stamp(90_001, "sim")))


def _without(members: Membership, node: str) -> Membership:
    held = members.get(node)
    assert held is not None
    return members.apply(remove(held, Stamp(90_002, "sim")))


# ---------------------------------------------------------------------------------------------
# Report


def table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        cells = [
            str(cell).ljust(width) if i == 0 else str(cell).rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        return "| " + " | ".join(cells) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), rule, *(line(row) for row in rows)])


def megabytes(n: int) -> str:
    return f"{n / 1e6:,.1f}"


def report(
    args: argparse.Namespace,
    base: Topology,
    gossip: list[Figures],
    final: Membership,
    placed: Placement,
    seconds: float,
) -> None:
    print(
        f"# Membership and placement, simulated (seed {args.seed}): {args.nodes:,} nodes in "
        f"{args.regions} regions, {args.documents:,} documents\n"
    )
    print(
        f"Gossip: fanout {args.fanout}, loss {args.loss:.0%}, delay 0-{args.delay} rounds "
        f"(shuffled); a round is one gossip period. Bytes of the whole scenario, cluster-wide: "
        f"full lists in every message; digest-first (the list only when the digests differ); "
        f"region digests (then only the regions that differ).\n"
    )
    rows = []
    for f in gossip:
        rows.append(
            [
                f.name,
                "-" if f.rounds is None else str(f.rounds),
                f"{f.messages:,}",
                f"{f.news:,}",
                megabytes(f.full_bytes),
                megabytes(f.digest_first_bytes),
                megabytes(f.region_digest_bytes),
                "; ".join(f.notes),
            ]
        )
    header = [
        "scenario",
        "rounds to agree",
        "messages",
        "brought news",
        "MB full lists",
        "MB digest-first",
        "MB region digests",
        "",
    ]
    print(table(rows, header))
    size = gossip[-1].list_bytes
    print(
        f"\nOne member list: {len(final):,} entries ({sum(1 for e in final if e.live):,} live), "
        f"{size / 1e3:,.0f} kB as JSON; digest {final.digest()}.\n"
    )

    counts = sorted(placed.per_node.values())
    mean = sum(counts) / len(counts)

    def noise(mean: float, n: int) -> float:
        """What max/mean plain hashing gives, roughly: n bins of Poisson(mean)."""
        return 1 + math.sqrt(2 * math.log(n) / mean) if mean and n > 1 else 1.0

    # Copies per node in each region, and the max/mean inside each region.
    region_means = [sum(r.counts.values()) / len(r.counts) for r in placed.results if r.counts]
    within, worst = max(
        (
            max(r.counts.values()) / (sum(r.counts.values()) / len(r.counts)),
            noise(sum(r.counts.values()) / len(r.counts), len(r.counts)),
        )
        for r in placed.results
        if r.counts
    )
    docs = placed.per_region_docs
    print(
        f"Placement: replicas {base.replicas}, {base.nodes_per_region} holder(s) per region, "
        f"{len(counts):,} active members ({args.layout} layout: "
        f"{min(placed.members_in.values())} to {max(placed.members_in.values())} per region); "
        f"exact counts ({placed.seconds:.0f} s), "
        f"{placed.checked:,} documents checked with placement.holders.\n"
    )
    rows = [
        ["documents per node: mean", f"{mean:,.0f}", ""],
        ["documents per node: min / max", f"{counts[0]:,} / {counts[-1]:,}", ""],
        [
            "max / mean, cluster",
            f"{counts[-1] / mean:.3f}",
            f"plain hashing noise at this mean ~{noise(mean, len(counts)):.3f}",
        ],
        [
            "max / mean, worst region",
            f"{within:.3f}",
            f"among one region's members; hashing noise there ~{worst:.3f}",
        ],
        [
            "region load min / max (documents)",
            f"{min(docs.values()):,} / {max(docs.values()):,}",
            f"per node {min(region_means):,.0f} / {max(region_means):,.0f}",
        ],
    ]
    joins = [(r, placed.per_region_docs[r.region]) for r in placed.results if r.counts]
    per_region = base.nodes_per_region
    join_ratios = []
    removal_ratios = []
    moved_join = optimum_join = moved_removal = optimum_removal = 0.0
    for result, held in joins:
        n = len(result.counts)
        copies = held * min(per_region, n + 1)
        best = copies / (n + 1)
        join_ratios.append(result.moved_on_join / best)
        moved_join += result.moved_on_join
        optimum_join += best
        best_removal = held * min(per_region, n) / n
        removal_ratios.append(result.moved_on_removal / best_removal)
        moved_removal += result.moved_on_removal
        optimum_removal += best_removal
    rows += [
        [
            "join, moved / optimum: all regions",
            f"{moved_join / optimum_join:.3f}",
            f"{moved_join:,.0f} moved, optimum {optimum_join:,.0f} (1/(n+1) of each region)",
        ],
        [
            "join, moved / optimum: best / worst region",
            f"{min(join_ratios):.3f} / {max(join_ratios):.3f}",
            f"{sum(r <= 1.05 for r in join_ratios)}/{len(join_ratios)} regions <= 1.05",
        ],
        [
            "removal, moved / optimum: all regions",
            f"{moved_removal / optimum_removal:.3f}",
            f"{moved_removal:,.0f} moved, optimum {optimum_removal:,.0f} (1/n of each region)",
        ],
        [
            "removal, moved / optimum: best / worst",
            f"{min(removal_ratios):.3f} / {max(removal_ratios):.3f}",
            f"{sum(r <= 1.05 for r in removal_ratios)}/{len(removal_ratios)} regions <= 1.05",
        ],
    ]
    print(table(rows, ["placement", "value", ""]))
    print(
        "\nInvariants held: every node's list only grew; one member list (one digest) on every "
        "node at the end; the removed node resurrected nothing and was refused under its old "
        "incarnation; every sampled document's holders are active members and equal "
        "placement.holders; on a join only documents gaining the new node moved, on a removal "
        "only the removed node's."
    )
    print(f"\nTook {seconds:.0f} s.")


# ---------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seed", type=int, default=1, help="the seed of every choice (1)")
    parser.add_argument("--nodes", type=int, default=1000, help="members at the start (1000)")
    parser.add_argument("--regions", type=int, default=20, help="regions (20)")
    parser.add_argument(
        "--documents", type=int, default=100_000, help="documents (100,000; issue 11: 1,000,000)"
    )
    parser.add_argument("--loss", type=float, default=0.1, help="message loss probability (0.1)")
    parser.add_argument("--delay", type=int, default=2, help="largest delay, in rounds (2)")
    parser.add_argument("--fanout", type=int, default=3, help="peers per node per round (3)")
    parser.add_argument("--crash", type=float, default=0.05, help="nodes down in one scenario")
    parser.add_argument("--down-rounds", type=int, default=10, help="rounds they stay down (10)")
    parser.add_argument("--max-rounds", type=int, default=200, help="give up after (200)")
    parser.add_argument(
        "--layout",
        choices=("even", "load"),
        default="even",
        help="nodes per region: the same in each (even), or in proportion to its copies (load)",
    )
    parser.add_argument("--replicas", type=int, default=2, help="regions per document (2)")
    parser.add_argument("--per-region", type=int, default=1, help="holders per region (1)")
    parser.add_argument("--check", type=int, default=2000, help="documents checked (2000)")
    parser.add_argument("--jobs", type=int, default=1, help="processes for placement (1)")
    args = parser.parse_args(argv)
    if args.nodes < 2 * args.regions:
        parser.error("give at least two nodes per region (--nodes >= 2 x --regions)")
    if not 0 <= args.loss < 1:
        parser.error("--loss is a probability below 1")
    started = time.perf_counter()
    regions = region_names(args.regions)
    base = base_topology(regions, args.replicas, args.per_region, args.seed)
    members = first_members(region_sizes(args.nodes, base, args.layout))
    gossip, final = gossip_scenarios(members, base, args)
    placed = run_placement(final, base, args)
    report(args, base, gossip, final, placed, time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
