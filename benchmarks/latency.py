"""Change latency: a kubelet swap of one small key to the signal arriving in the app.

cfgsup against the raw-inotify floor, the bare watchdog observer and inotifywait (contenders.py),
then cfgsup --poll 0.2, whose latency is bounded by the interval.
"""
from __future__ import annotations

import os
import random
import time

from common import Section, Volume, failed, median, ms, pct
from contenders import KINDS, Contender, measure


def small(n):
    return {"app.conf": f"version {n} {random.random()}"}


def bench_latency(run):
    swaps, poll_swaps = run.n["swaps"], run.n["poll"]
    contenders = measure(run, (*KINDS, "rawhash"), "latency", 1, small, swaps, timeout=10)
    figures = run.figures.setdefault("latency", {})
    rows = []
    floor = next((c for c in contenders if c.kind == "raw" and c.error is None), None)
    base = median(floor.latencies) if floor else None
    for c in contenders:
        if c.error:
            rows.append([c.label, c.error, "", "", ""])
            continue
        p50 = median(c.latencies)
        figures[c.kind] = {"p50": p50, "p99": pct(c.latencies, 99), "cpu": c.cpu_per_change}
        rows.append([c.label, ms(p50), ms(pct(c.latencies, 99)), f"{p50 / base:.2f}x" if base else "n/a",
                     ms(c.cpu_per_change)])
    rows.append(_poll_row(run, poll_swaps, base))
    extra = sum(c.extra_signals for c in contenders)
    notes = ["Latency is from the kubelet's atomic commit (the rename of `..data_tmp` over `..data`) "
             "to the moment the app's `sigtimedwait` returned; CPU per change is the watcher's own "
             "CPU time (all threads; the app not counted) over the measured swaps, divided by their "
             "number.",
             "All the watchers subscribe to the same inotify events, so they read as many per swap. "
             "The raw floor and the bare observer hash nothing; the `read and hash` row is the raw "
             "floor that first reads every file of the new payload into one xxh3_128 and signals "
             "only when the digest changed, the least any watcher that decides on content (as "
             "cfgsup does) pays per swap. The raw floor is ctypes `inotify_init1` / "
             "`inotify_add_watch` and a blocking `read()` in one thread of the venv's interpreter. "
             "inotifywait's row is `inotifywait -m` piped into a `sh` read loop that signals with the "
             "shell's built-in kill, as a shell user would run it; its CPU is both processes'."]
    notes += [f"{c.label}: {c.note}" for c in contenders if c.note]
    if extra:
        notes.append(f"{extra} signal(s) arrived that no swap asked for (a contender acting twice).")
    return [Section(f"Change latency: kubelet swap to signal in the app ({swaps} swaps each, in turn; "
                    f"{poll_swaps} polling)", ["what", "median", "p99", "vs raw-inotify floor",
                                               "CPU per change"], rows, notes)]


def _poll_row(run, swaps, base):
    """Polling with a random phase against the poll timer: about half the interval at the median."""
    label = "cfgsup --poll 0.2 (random phase)"
    logs = run.scratch(os.path.join("latency-poll", "logs"))
    c = Contender(run, "cfgsup", [os.path.join(run.scratch("latency-poll"), "v")], logs, ["--poll", "0.2"])
    c.volumes = [Volume(c.dirs[0], small(0))]
    try:
        c.launch()
        c.wait_ready(15)
        for n in range(swaps):
            time.sleep(random.uniform(0, 0.2))
            c.latencies.append(c.swap(0, small(n + 1), timeout=10))
    except Exception as exc:  # noqa: BLE001
        return [label, failed(exc), "", "", ""]
    finally:
        c.stop()
    p50 = median(c.latencies)
    run.figures.setdefault("latency", {})["poll"] = {"p50": p50}
    return [label, ms(p50), ms(pct(c.latencies, 99)), f"{p50 / base:.2f}x" if base else "n/a", ""]
