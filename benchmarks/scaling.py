"""Scaling: 1, 10 and 100 watched directories; 10, 1000 and 10000 keys; one file of 1 KiB,
10 MiB and 100 MiB. Each against the raw-inotify floor, the bare watchdog observer and
inotifywait (contenders.py), and, where cfgsup must hash, the digest of the same volume measured
in-process with its chunked read+hash floor (from the digest section of the same run).
"""
from __future__ import annotations

import shutil

from common import Section, median, mib, ms, pct, plural
from contenders import KINDS, measure
from payloads import Spec, small


def scenarios(run) -> list[Spec]:
    dirs = [Spec(f"dirs-{n}", f"{n} watched dir{'s' if n > 1 else ''} (1 small key each)", small,
                 "swaps_small", 10.0) for n in (1, 10, 100)]
    return dirs + run.specs()


def bench_scaling(run):
    figures = run.figures.setdefault("scaling", {})
    rows, warnings = [], []
    for spec in scenarios(run):
        ndirs = int(spec.name.split("-")[1]) if spec.name.startswith("dirs-") else 1
        swaps = run.n[spec.swaps]
        contenders = measure(run, KINDS, f"scaling-{spec.name}", ndirs, spec.make, swaps, spec.timeout)
        shutil.rmtree(run.scratch(f"scaling-{spec.name}"), ignore_errors=True)
        warnings += [f"{spec.label}, {c.label}: {c.note}" for c in contenders if c.note]
        warnings += [f"{spec.label}, {c.label}: {plural(c.extra_signals, 'signal')} no swap asked for"
                     for c in contenders if c.extra_signals]
        first = True
        for c in contenders:
            label = f"{spec.label}, {plural(swaps, 'swap')}" if first else ""
            first = False
            if c.error:
                rows.append([label, c.label, c.error, "", "", "", "", ""])
                continue
            p50 = median(c.latencies)
            figures.setdefault(spec.name, {})[c.kind] = {
                "p50": p50, "p99": pct(c.latencies, 99), "cpu": c.cpu_per_change, "rss": c.rss_after,
                "rss_idle": c.rss_idle, "peak": c.peak_above, "threads": c.nthreads}
            rows.append([label, c.label, ms(p50), ms(pct(c.latencies, 99)), ms(c.cpu_per_change),
                         f"{mib(c.rss_idle)} -> {mib(c.rss_after)}",
                         "n/a" if c.peak_above is None else "+" + mib(c.peak_above), str(c.nthreads)])
        digest = run.figures.get("digest", {}).get(spec.name)
        if spec.name.startswith("dirs-"):
            continue
        if digest is None:
            rows.append(["", "in-process digest", "not measured (digest section not run, or failed)"] + [""] * 5)
            continue
        rows.append(["", "in-process digest (supervisor.digest)", ms(digest["p50"]), ms(digest["p99"]),
                     "", "", "+" + mib(digest["peak"]) if digest["peak"] is not None else "n/a", ""])
        rows.append(["", "chunked read+hash floor (1 MiB chunks, xxh3_128)", ms(digest["chunked_p50"]),
                     ms(digest["chunked_p99"]), "", "", "", ""])
    notes = [
        "Each watcher has volumes of its own with the same payloads; a swap rewrites one of its volumes "
        "(in turn over the directories) the way the kubelet does. The floors only notify: where cfgsup "
        "must hash (many keys, large files) their rows still show the pure notification cost, and the "
        "digest rows show what hashing that volume costs in-process, beside the least any digest of "
        "those bytes can cost.",
        "CPU per change: the watcher's own CPU time over the measured swaps (all its threads, from "
        "/proc), divided by their number. RSS: right after the watches were in place -> after the "
        "swaps; peak: VmHWM while the swaps were handled (reset when they began) above that first "
        "RSS. inotifywait's figures are inotifywait and its `sh` reader together (threads: 1 each).",
        "With fewer than 100 swaps, p99 is the largest value seen.",
    ] + warnings
    return [Section("Scaling: swap to signal with more directories, keys and bytes",
                    ["volume", "watcher", "median", "p99", "CPU per change", "RSS (idle -> after)",
                     "peak RSS above idle", "threads"], rows, notes)]
