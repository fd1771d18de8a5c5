"""Readings from /proc: memory (RSS, PSS, peak), threads, children, CPU time, wake-ups."""
from __future__ import annotations

import os
import time
from typing import NamedTuple


def status_kib(pid: int, key: str) -> int:
    """A `kB` field of /proc/PID/status (VmRSS, VmHWM); 0 once the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_kib(pid: int) -> int:
    return status_kib(pid, "VmRSS")


def pss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def reset_peak(pid: int) -> bool:
    """Reset VmHWM to the current RSS ("5" to clear_refs, Linux 4.0+), so VmHWM afterwards is
    the peak of what follows. False when the kernel or permissions refuse."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def threads(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return 0


def children(pid: int) -> list[int]:
    found = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                found += [int(p) for p in fh.read().split()]
        except OSError:
            pass
    return found


def descendants(pid: int) -> list[int]:
    """Children, grandchildren, ... of pid, as they are now."""
    found, todo = [], [pid]
    while todo and len(found) < 10000:
        for child in children(todo.pop()):
            found.append(child)
            todo.append(child)
    return found


_TICK = os.sysconf("SC_CLK_TCK")


class Cpu(NamedTuple):
    precise: float        # sum of se.sum_exec_runtime of the live threads (0 without it)
    ticks: float          # utime+stime of the process, dead threads included
    tasks: frozenset      # the thread ids the precise sum covers


def cpu(pid: int) -> Cpu:
    """CPU time of the process (all threads, its children not counted). utime+stime from
    /proc/PID/stat counts in 10 ms ticks, too coarse for a change that costs 0.1 ms, so the
    per-thread se.sum_exec_runtime (ns) is summed too, where the kernel has it."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        ticks = (int(fields[11]) + int(fields[12])) / _TICK
    except (OSError, IndexError):
        return Cpu(0.0, 0.0, frozenset())
    precise, tasks = 0.0, set()
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{task}/sched") as fh:
                    for line in fh:
                        if line.startswith("se.sum_exec_runtime"):
                            precise += float(line.split(":")[1]) / 1000  # ms -> s
                            tasks.add(task)
                            break
            except OSError:
                continue
    except OSError:
        pass
    return Cpu(precise, ticks, frozenset(tasks))


def cpu_spent(before: Cpu, after: Cpu) -> float:
    """Seconds of CPU between two readings: the precise sums while every thread of the first
    reading is still there (a thread that exited took its time with it), else the ticks."""
    if before.precise and after.precise and before.tasks <= after.tasks:
        return after.precise - before.precise
    return after.ticks - before.ticks


def cpu_seconds(pid: int) -> float:
    """A single figure to compare with itself later (settle_cpu)."""
    reading = cpu(pid)
    return reading.precise or reading.ticks


def switches(pid: int) -> int:
    """Context switches of all threads: each one is a wake-up."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/status") as fh:
                for line in fh:
                    if "ctxt_switches" in line:
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def settle_cpu(pids, quiet=0.1, timeout=3.0) -> None:
    """Wait until the processes stopped using CPU (for `quiet` seconds): the last change is
    fully handled before its cost is read."""
    deadline = time.monotonic() + timeout
    last = sum(cpu_seconds(p) for p in pids)
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = sum(cpu_seconds(p) for p in pids)
        if now - last < 0.0005:
            return
        last = now
