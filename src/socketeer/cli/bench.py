"""``socketeer bench ADDRESS``: load any echo or discard server and report (SPEC §7).

A thin layer over ``socketeer.bench.run``: the options become its keywords,
the live progress line goes to stderr (on a terminal only), the table or the
JSON to stdout, and the exit code says whether the errors stayed within
``--max-errors``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys

from ..address import Address
from ._options import OutputOptions, TLSClientOptions
from ._report import Reporter
from ._tls import client_tls


def run(args: argparse.Namespace) -> int:
    from .. import bench
    from ..bench import report as render

    address = Address.parse(args.address)
    output = OutputOptions.from_args(args)
    reporter = Reporter.from_output(output)
    tls = client_tls(address, TLSClientOptions.from_args(args), reporter)
    duration = args.duration if args.duration is not None else (None if args.requests else 10.0)
    progress = render.Progress(duration) if not output.quiet else None
    seen: dict[int, int] = {}
    errors: dict[int, int] = {}

    def on_interval(interval: bench.Interval) -> None:
        if progress is None:
            return
        seen[interval.worker] = seen.get(interval.worker, 0) + interval.counts.requests
        errors[interval.worker] = errors.get(interval.worker, 0) + interval.counts.error_total
        progress.update(
            requests=sum(seen.values()),
            errors=sum(errors.values()),
            p99_ns=interval.latency.percentile(99.0) if interval.latency.count else None,
            elapsed=interval.start + interval.seconds,
        )

    try:
        result = bench.run(
            address,
            mode=args.mode,
            connections=args.connections,
            size=args.size,
            duration=duration,
            requests=args.requests,
            warmup=args.warmup or 0.0,
            rate=args.rate,
            pipeline=args.pipeline,
            workers=args.workers,
            timeout=args.timeout,
            direction=args.direction,
            max_errors=args.max_errors,
            tls=tls,
            on_interval=on_interval,
        )
    finally:
        if progress is not None:
            progress.close()
    if args.json:
        environment = {
            "python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "platform": platform.platform(),
        }
        json.dump(render.to_json(result, environment), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(render.table(result))
    sys.stdout.flush()
    if args.plot:
        render.plot(result, args.plot)
    failures = result.counts.error_total
    if failures > args.max_errors:
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(result.counts.errors.items()))
        print(
            f"socketeer: error: {failures} errors ({kinds}), more than --max-errors "
            f"{args.max_errors}",
            file=sys.stderr,
            flush=True,
        )
        return 1
    return 0
