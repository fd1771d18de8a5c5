"""Restart cycle: a kubelet swap to the new app running (the app stops promptly on TERM).

VARIANTS is the hook for more rows: each is one line, a label, the cfgsup arguments that watch
the volume ({volume} and {scratch} are filled in) and the cfgsup option the row needs. A row
whose option this cfgsup does not have says so instead of failing.
"""
from __future__ import annotations

import os
import random
import subprocess
import time

from common import Lines, Section, Volume, failed, log_has, median, ms, pct, start, stop, wait_for

VARIANTS = [
    ("--watch SRC (no staging)", ["--watch", "{volume}"], None),
    # issue 10: staging publishes SRC into DEST (validated, generations kept) before the restart.
    ("--stage SRC:DEST", ["--stage", "{volume}:{scratch}/stage"], "--stage"),
]
# The app stops at once on TERM: sleep is the process that gets it. (A shell trap can miss a
# TERM that arrives between two builtins and sit out a whole `sleep 1`: 1 s outliers.)
APP = "echo ready; exec sleep 600"


def supports(cfgsup: str, option: str) -> bool:
    out = subprocess.run([cfgsup, "--help"], capture_output=True, text=True, timeout=30)
    return option in out.stdout


def cycle_times(run, index, watch_args, cycles):
    scratch = run.scratch(f"restart-{index}")
    volume = Volume(os.path.join(scratch, "v"), {"app.conf": b"start"})
    args = [a.format(volume=volume.path, scratch=scratch) for a in watch_args]
    log = os.path.join(scratch, "log")
    with open(log, "w") as fh:
        proc = start([run.env.cfgsup, *args, "--on-change", "restart", "--", "sh", "-c", APP], stderr=fh)
    lines = Lines(proc.stdout)
    times = []
    try:
        lines.until("ready", timeout=15)
        wait_for(lambda: log_has(log, "watching") or proc.poll() is not None, 15, "'watching'")
        for n in range(cycles):
            volume.write({"app.conf": f"v{n} {random.random()}".encode()})
            lines.until("ready", timeout=20)
            times.append(time.monotonic() - volume.committed_at)
    finally:
        stop(proc)
    return times


def bench_restart(run):
    cycles = run.n["restarts"]
    rows = []
    figures = run.figures.setdefault("restart", {})
    for index, (label, watch_args, needs) in enumerate(VARIANTS):
        if needs and not supports(run.env.cfgsup, needs):
            rows.append([label, f"not available: this cfgsup has no {needs}", ""])
            continue
        try:
            times = cycle_times(run, index, watch_args, cycles)
        except Exception as exc:  # noqa: BLE001
            rows.append([label, failed(exc), ""])
            continue
        figures[label] = median(times)
        rows.append([label, ms(median(times)), ms(pct(times, 99))])
    return [Section(f"Restart cycle: kubelet commit to the new app printing ready ({cycles} cycles)",
                    ["cfgsup watching with", "median", "p99"], rows)]
