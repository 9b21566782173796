"""``socketeer bench``: load any echo or discard server; latency that tells the truth (SPEC §7).

``run(address, mode=...)`` drives the server over any address of §1 and
returns a ``Result``; the ``socketeer bench`` command is a thin layer over it.
With ``workers=N`` the connections are shared out over N processes, each with
its own event loop (uvloop when installed), which send the parent their
counts and histograms every second.

Modules: ``result`` (what a run measured), ``histogram`` (HdrHistogram
layout), ``stream`` (TCP, Unix, TLS), ``datagram`` (UDP, Unix datagrams),
``report`` (table, JSON, progress, plot), ``locust`` (a Locust user).
"""

from __future__ import annotations

import contextlib
import gc
import os
import pickle
import select
import struct
import time
from collections.abc import Callable

from ..address import Address
from ..errors import UsageError
from .result import Counts, Interval, Result, Settings

__all__ = ["MODES", "Counts", "Interval", "Result", "Settings", "run"]

MODES = ("rr", "stream", "connect")
DIRECTIONS = ("send", "receive", "both")
_HEADER = struct.Struct("!I")


def run(
    address: str | Address,
    *,
    mode: str = "rr",
    connections: int = 1,
    size: int = 64,
    duration: float | None = 10.0,
    requests: int | None = None,
    warmup: float = 0.0,
    rate: float | None = None,
    pipeline: int = 1,
    workers: int = 1,
    timeout: float = 1.0,
    direction: str = "send",
    max_errors: int = 0,
    tls: object = None,
    on_interval: Callable[[Interval], None] | None = None,
) -> Result:
    """Load ``address`` and measure; returns when the run is over.

    ``duration`` seconds after ``warmup`` (or ``requests`` in all, if given);
    ``rate`` (requests per second over all connections) runs open loop;
    ``workers=0`` means one process per CPU. ``on_interval`` sees every
    worker's second as it comes (live progress).

    Raises:
        AddressError, UsageError: an address or setting that cannot be run.
    """
    target = Address.parse(address)
    settings = Settings(
        address=str(target),
        mode=mode,
        connections=connections,
        size=size,
        duration=duration,
        requests=requests,
        warmup=warmup,
        rate=rate,
        pipeline=pipeline,
        workers=workers,
        timeout=timeout,
        direction=direction,
        max_errors=max_errors,
    )
    _check(settings, target)
    processes = min(workers or os.cpu_count() or 1, connections)
    shares = _split(connections, processes)
    request_shares: list[int | None] = (
        list(_split(requests, processes)) if requests is not None else [None] * processes
    )
    result = Result(settings=settings)
    started = time.monotonic()

    def collect(interval: Interval) -> None:
        result.intervals.append(interval)
        if on_interval is not None:
            on_interval(interval)

    if processes == 1:
        warm, connected = _work(
            settings,
            worker=0,
            connections=shares[0],
            rate=rate,
            requests=request_shares[0],
            tls=tls,
            emit=collect,
        )
        result.warmup.add(warm)
        result.connections = connected
    else:
        _fork_workers(
            settings,
            shares=shares,
            request_shares=request_shares,
            tls=tls,
            collect=collect,
            result=result,
        )
    result.elapsed = _measured_seconds(result, time.monotonic() - started - warmup)
    result.client_cpu = _busiest_cpu(result)
    return result


def _check(settings: Settings, target: Address) -> None:
    if settings.mode not in MODES:
        raise UsageError(f"--mode takes {', '.join(MODES)}, not {settings.mode!r}")
    if settings.direction not in DIRECTIONS:
        raise UsageError(f"--direction takes {', '.join(DIRECTIONS)}, not {settings.direction!r}")
    if settings.connections < 1:
        raise UsageError("connections must be at least 1")
    if settings.size < 1:
        raise UsageError("size must be at least 1 byte")
    if settings.pipeline < 1:
        raise UsageError("pipeline must be at least 1")
    if settings.rate is not None and settings.rate <= 0:
        raise UsageError("rate must be a positive number of requests per second")
    if settings.duration is None and settings.requests is None:
        raise UsageError("give a duration or a number of requests")
    if settings.workers < 0:
        raise UsageError("workers must be >= 0 (0 = one per CPU)")
    if target.scheme == "fd":
        raise UsageError(f"bench needs an address to connect to, not {target}")
    if target.is_datagram:
        if settings.mode != "rr":
            raise UsageError(f"--mode {settings.mode} needs a stream address; datagrams do rr")
        if settings.size < 16:
            raise UsageError("datagram rr needs at least 16 bytes (sequence number and sender)")


def _split(total: int, parts: int) -> list[int]:
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def _work(
    settings: Settings,
    *,
    worker: int,
    connections: int,
    rate: float | None,
    requests: int | None,
    tls: object,
    emit: Callable[[Interval], None],
) -> tuple[Counts, int]:
    """One worker: its event loop, its share, GC out of the way while it measures."""
    from ..aio import _loop

    share = rate * connections / settings.connections if rate else None
    gc.collect()
    gc.freeze()  # what exists now is never collected: no pauses, no copy-on-write churn
    gc.disable()
    try:
        if Address.parse(settings.address).is_datagram:
            from .datagram import run_datagram_rr

            return _loop.run(
                run_datagram_rr(
                    settings,
                    worker=worker,
                    connections=connections,
                    rate=share,
                    requests=requests,
                    on_interval=emit,
                )
            )
        from .stream import run_stream

        return _loop.run(
            run_stream(
                settings,
                worker=worker,
                connections=connections,
                rate=share,
                requests=requests,
                on_interval=emit,
                tls=tls,
            )
        )
    finally:
        gc.enable()
        gc.unfreeze()


def _fork_workers(
    settings: Settings,
    *,
    shares: list[int],
    request_shares: list[int | None],
    tls: object,
    collect: Callable[[Interval], None],
    result: Result,
) -> None:
    """N children, each a worker; each second's ``Interval`` comes back through a pipe."""
    children: dict[int, int] = {}  # read end -> pid
    buffers: dict[int, bytearray] = {}
    try:
        for index, share in enumerate(shares):
            read_end, write_end = os.pipe()
            pid = os.fork()
            if pid == 0:  # the worker
                os.close(read_end)
                for other in children:
                    os.close(other)
                status = 0
                try:

                    def emit(item: object, fd: int = write_end) -> None:
                        data = pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)
                        os.write(fd, _HEADER.pack(len(data)) + data)

                    warm, connected = _work(
                        settings,
                        worker=index,
                        connections=share,
                        rate=settings.rate,
                        requests=request_shares[index],
                        tls=tls,
                        emit=emit,
                    )
                    emit(("done", warm, connected))
                except BaseException as exc:
                    status = 1
                    with contextlib.suppress(Exception):  # the parent raises it for us
                        emit(("error", exc))
                finally:
                    os._exit(status)
            os.close(write_end)
            children[read_end] = pid
            buffers[read_end] = bytearray()
        while children:
            ready, _, _ = select.select(list(children), [], [])
            for fd in ready:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    os.close(fd)
                    os.waitpid(children.pop(fd), 0)
                    continue
                buffer = buffers[fd]
                buffer += chunk
                while len(buffer) >= _HEADER.size:
                    (length,) = _HEADER.unpack_from(buffer)
                    if len(buffer) < _HEADER.size + length:
                        break
                    item = pickle.loads(buffer[_HEADER.size : _HEADER.size + length])
                    del buffer[: _HEADER.size + length]
                    if isinstance(item, Interval):
                        collect(item)
                    elif item[0] == "error":
                        raise item[1]  # a worker could not run: as with one worker
                    else:
                        _, warm, connected = item
                        result.warmup.add(warm)
                        result.connections += connected
    finally:
        for fd, pid in children.items():
            with contextlib.suppress(OSError):
                os.kill(pid, 15)
                os.waitpid(pid, 0)
            os.close(fd)


def _measured_seconds(result: Result, wall: float) -> float:
    """The measured phase: the longest worker's intervals, added up."""
    per_worker: dict[int, float] = {}
    for interval in result.intervals:
        per_worker[interval.worker] = per_worker.get(interval.worker, 0.0) + interval.seconds
    return max(per_worker.values(), default=max(wall, 0.0))


def _busiest_cpu(result: Result) -> float:
    seconds: dict[int, float] = {}
    cpu: dict[int, float] = {}
    for interval in result.intervals:
        seconds[interval.worker] = seconds.get(interval.worker, 0.0) + interval.seconds
        cpu[interval.worker] = cpu.get(interval.worker, 0.0) + interval.cpu_seconds
    return max((cpu[w] / seconds[w] for w in seconds if seconds[w] > 0), default=0.0)
