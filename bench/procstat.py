"""CPU time and peak memory of a process tree, read from /proc (Linux).

A proxy is measured as its whole live process tree: meshproxy's worker processes are children of the main
process, and /proc/<pid>/stat's cutime/cstime only cover children that have already been reaped. Summing
utime+stime+cutime+cstime over the live tree counts every CPU second exactly once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class ProcStatError(Exception):
    """A /proc file could not be parsed."""


@dataclass(frozen=True, slots=True)
class ProcStat:
    """The fields of /proc/<pid>/stat the bench uses; times are in clock ticks."""

    pid: int
    ppid: int
    utime: int
    stime: int
    cutime: int
    cstime: int

    @property
    def ticks(self) -> int:
        return self.utime + self.stime + self.cutime + self.cstime


def parse_stat(text: str) -> ProcStat:
    """Parse /proc/<pid>/stat. `comm` (field 2) may hold spaces and parentheses: split after the last ')'."""
    open_paren, close_paren = text.find("("), text.rfind(")")
    if open_paren < 0 or close_paren < open_paren:
        raise ProcStatError(f"no (comm) in stat line {text[:80]!r}")
    rest = text[close_paren + 1 :].split()
    # rest[0] is field 3 (state); field n is rest[n - 3] (proc(5)).
    if len(rest) < 15:
        raise ProcStatError(f"short stat line {text[:80]!r}")
    try:
        return ProcStat(
            pid=int(text[:open_paren]),
            ppid=int(rest[1]),
            utime=int(rest[11]),
            stime=int(rest[12]),
            cutime=int(rest[13]),
            cstime=int(rest[14]),
        )
    except ValueError as exc:
        raise ProcStatError(f"bad stat line {text[:80]!r}: {exc}") from None


def parse_status_kib(text: str, key: str) -> int:
    """A `Key:   1234 kB` value from /proc/<pid>/status, in KiB; 0 when absent (kernel threads, zombies)."""
    prefix = key + ":"
    for line in text.splitlines():
        if line.startswith(prefix):
            fields = line[len(prefix) :].split()
            try:
                return int(fields[0])
            except (IndexError, ValueError):
                raise ProcStatError(f"bad {key} line {line!r}") from None
    return 0


def parse_cpu_busy_ticks(stat_text: str) -> int:
    """Busy clock ticks of all CPUs from /proc/stat's `cpu` line: user nice system irq softirq steal.

    Idle and iowait are left out; guest time is already inside user (proc(5)). Steal counts as busy: it is
    time the hypervisor gave to someone else, which the bench must see as noise too.
    """
    for line in stat_text.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            try:
                user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[1:9])
            except ValueError:
                break
            return user + nice + system + irq + softirq + steal
    raise ProcStatError("no aggregate cpu line in /proc/stat")


def descendants(root: int, stats: dict[int, ProcStat]) -> list[int]:
    """`root` and every live descendant of it, given the stat of every process."""
    children: dict[int, list[int]] = {}
    for stat in stats.values():
        children.setdefault(stat.ppid, []).append(stat.pid)
    tree, pending = [], [root]
    while pending:
        pid = pending.pop()
        if pid in stats:
            tree.append(pid)
            pending.extend(children.get(pid, ()))
    return sorted(tree)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None  # the process went away between listing and reading


def all_stats() -> dict[int, ProcStat]:
    stats: dict[int, ProcStat] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            text = _read(entry / "stat")
            if text is not None:
                stats[int(entry.name)] = parse_stat(text)
    return stats


def system_busy_seconds() -> float:
    """CPU seconds all processes on the machine have used since boot (every core)."""
    return parse_cpu_busy_ticks((PROC / "stat").read_text()) / CLOCK_TICKS


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU seconds used so far by `root`, its live descendants and their reaped children."""
    stats = all_stats()
    return sum(stats[pid].ticks for pid in descendants(root, stats)) / CLOCK_TICKS


def tree_peak_rss_kib(root: int) -> int:
    """Sum of VmHWM (peak resident set) over `root` and its live descendants, in KiB."""
    stats = all_stats()
    total = 0
    for pid in descendants(root, stats):
        text = _read(PROC / str(pid) / "status")
        if text is not None:
            total += parse_status_kib(text, "VmHWM")
    return total


def tree_cpu_by_process(root: int) -> dict[int, float]:
    """CPU seconds used so far by each live process of the tree (a multi-worker proxy: its supervisor and
    each worker), own time only (utime + stime)."""
    stats = all_stats()
    return {pid: (stats[pid].utime + stats[pid].stime) / CLOCK_TICKS for pid in descendants(root, stats)}


def spread(before: dict[int, float], after: dict[int, float], root: int) -> tuple[float, float]:
    """(share of the busiest worker over the mean worker, supervisor share of the tree's CPU) between two
    samples of `tree_cpu_by_process`; workers are the processes other than `root`. (1.0, 0.0) for one
    process."""
    used = {pid: after[pid] - before.get(pid, 0.0) for pid in after}
    workers = [cpu for pid, cpu in used.items() if pid != root]
    total = sum(used.values())
    if not workers or total <= 0:
        return 1.0, 0.0
    mean = sum(workers) / len(workers)
    return (max(workers) / mean if mean > 0 else 1.0), used.get(root, 0.0) / total
