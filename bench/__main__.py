"""`python -m bench` (`make bench`): measure, print one table, write it as JSON.

Makes a RabbitMQ vhost and PostgreSQL databases of its own, starts what each phase needs, and
removes all of it on the way out, on Ctrl-C and on failure too.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from bench import peers, phases, report
from bench.context import FULL, QUICK, Bench
from bench.resources import Databases, vhost

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny counts: checks the machinery in seconds, figures mean little",
    )
    parser.add_argument(
        "--only",
        default=",".join(phases.default_phases()),
        metavar="PHASES",
        help=f"comma-separated phases to run (default: all of {','.join(phases.PHASES)}; "
        "peers, FastAPI + Celery beside the ingress, when the `peers` extra is installed)",
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=RESULTS,
        metavar="DIR",
        help="where the JSON goes (default: bench/results/)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="instead of the figures, profile the ingress and the worker with "
        "py-spy (pip install py-spy into .venv first)",
    )
    parser.add_argument(
        "--keep-logs",
        action="store_true",
        help="keep the child processes' logs (kept anyway when a phase fails)",
    )
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in phases.PHASES]
    if unknown:
        parser.error(f"unknown phase(s) {', '.join(unknown)}; phases: {', '.join(phases.PHASES)}")
    if not peers.installed() and (args.only == parser.get_default("only") or "peers" in chosen):
        # An optional phase: said once, then the run goes on without it.
        print(f"bench: the peers phase is left out; it {peers.INSTALL}", file=sys.stderr)
        chosen = [name for name in chosen if name != "peers"]
        if not chosen:
            parser.exit(0)
    args.phases = chosen
    return args


async def measure(args: argparse.Namespace) -> int:
    started = datetime.now(UTC)
    clock = time.monotonic()
    run_id = uuid.uuid4().hex[:8]
    workdir = Path(tempfile.mkdtemp(prefix=f"hookpipe-bench-{run_id}-"))
    figures = phases.catalog()
    databases = Databases(f"hookpipe_bench_{run_id}")
    scale = QUICK if args.quick else FULL
    failed = False
    vhost_name = f"hookpipe-bench-{run_id}"
    async with vhost(vhost_name) as amqp_url:
        bench = Bench(vhost_name, amqp_url, databases, workdir, scale)
        try:
            await bench.open()
            if args.profile:
                from bench import profile

                return await profile.run(bench, args.results, started)
            for name in args.phases:
                print(f"bench: {name} ...", file=sys.stderr, flush=True)
                phase_clock = time.monotonic()
                await phases.run_phase(name, bench, figures)
                bench.results.setdefault("phase_seconds", {})[name] = round(
                    time.monotonic() - phase_clock, 1
                )
        finally:
            await bench.close()
            await databases.drop_all()
    chosen = [
        fig for name in args.phases for fig in (figures[key] for key in phases.PHASES[name][1])
    ]
    failed = any(fig.verdict == "MISSING" for fig in chosen)
    bench.results["total_seconds"] = round(time.monotonic() - clock, 1)
    bench.results["scale"] = "quick" if args.quick else "full"
    print()
    print(report.table(chosen))
    path = report.write_json(args.results, chosen, bench.results, started)
    print(f"\n{bench.results['total_seconds']:.0f} s; written to {path}")
    if failed or args.keep_logs:
        print(f"logs of the processes it started: {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the bench; the exit code is 0 when it ran (whatever the figures), 1 when it broke."""
    args = parse_args(argv)

    async def guarded() -> int:
        # SIGTERM stops the run like Ctrl-C does: through the finally blocks that clean up.
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        return await measure(args)

    try:
        return asyncio.run(guarded())
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("bench: interrupted; its processes, vhost and databases are removed", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
