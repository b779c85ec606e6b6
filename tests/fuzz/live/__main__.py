"""``python -m tests.fuzz.live``: see the package docstring and docs/fuzzing.md."""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from pathlib import Path

from .node import MODES
from .runner import Options, replay, run


def main(argv: list[str] | None = None) -> int:
    # The oracle applies refused updates here too; Yrs prints a panic's message for some of
    # them (caught, as designed): no backtrace besides.
    os.environ.setdefault("RUST_BACKTRACE", "0")
    if os.environ["RUST_BACKTRACE"] != "0":
        os.environ["RUST_BACKTRACE"] = "0"
    parser = argparse.ArgumentParser(
        prog="python -m tests.fuzz.live",
        description="Fuzz a real Meridian node over HTTP and WebSockets.",
    )
    parser.add_argument("--duration", type=float, default=60.0, help="seconds in all (60)")
    parser.add_argument("--seed", type=int, help="the run's seed (default: a random one)")
    parser.add_argument(
        "--mode",
        choices=[*MODES, "all"],
        default="all",
        help="which node to start: standalone, cluster, auth, or all three in turn (default)",
    )
    parser.add_argument(
        "--node", metavar="URL", help="fuzz this running node (loopback) instead of starting one"
    )
    parser.add_argument("--secret", help="with --node: its cluster secret (tokens are made)")
    parser.add_argument("--batch-size", type=int, default=200, help="actions per batch (200)")
    parser.add_argument("--batches", type=int, help="at most this many batches per mode")
    parser.add_argument("--out", type=Path, help="where reproducers go")
    parser.add_argument("--json", type=Path, help="write the report as JSON here")
    parser.add_argument("--no-restart", action="store_true", help="skip the final restart")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=4,
        help="every other batch sends this many actions at once (default 4; 1: never)",
    )
    parser.add_argument(
        "--restart-every",
        type=int,
        default=0,
        metavar="N",
        help="restart the node every N batches, SIGKILL every other time (default: never)",
    )
    parser.add_argument("--replay", type=Path, metavar="FILE", help="send a reproducer again")
    args = parser.parse_args(argv)

    if args.replay is not None:
        return 1 if replay(args.replay) is not None else 0
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    options = Options(
        duration=args.duration,
        seed=seed,
        modes=MODES if args.mode == "all" else (args.mode,),
        node_url=args.node,
        secret=args.secret.encode() if args.secret else None,
        batch_size=args.batch_size,
        batches=args.batches,
        restart=not args.no_restart,
        concurrency=args.concurrency,
        restart_every=args.restart_every,
    )
    if args.out is not None:
        options.out = args.out
    report = run(options)
    if args.json is not None:
        args.json.write_text(json.dumps(report.to_json(), indent=1), encoding="utf-8")
    return 1 if report.failure is not None else 0


if __name__ == "__main__":
    sys.exit(main())
