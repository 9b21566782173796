"""What a server and its children cost, read from /proc: CPU time, memory, descriptors.

A relay that forks (socat, ``--model fork``) is a tree of processes; every
figure here is summed over the process and all its descendants. CPU time
includes the children already reaped (``cutime``/``cstime``), so a measurement
taken before and after a load counts the processes that came and went.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()  # fields from "state" on


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            ppid = int(_stat_fields(int(entry.name))[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, []))
    return tree


def cpu_seconds(pid: int) -> float:
    """utime + stime (+ reaped children's) over the tree, in seconds."""
    ticks = 0
    for p in descendants(pid):
        try:
            fields = _stat_fields(p)
        except OSError:
            continue
        ticks += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return ticks / TICK


def _status_kib(pid: int, path: str, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/{path}").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_bytes(pid: int) -> int:
    """VmRSS summed over the tree (counts shared pages once per process)."""
    return 1024 * sum(_status_kib(p, "status", "VmRSS:") for p in descendants(pid))


def pss_bytes(pid: int) -> int:
    """Proportional set size summed over the tree (shared pages split)."""
    return 1024 * sum(_status_kib(p, "smaps_rollup", "Pss:") for p in descendants(pid))


def descriptors(pid: int) -> int:
    total = 0
    for p in descendants(pid):
        with contextlib.suppress(OSError):
            total += len(os.listdir(f"/proc/{p}/fd"))
    return total
