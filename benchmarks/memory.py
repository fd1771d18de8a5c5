"""Idle memory (RSS, PSS, threads) and idle cost (CPU, wake-ups) of each PID 1, side by side.

Every row runs at the same time, for the same idle period, on the same machine. The baseline
is the venv's interpreter doing nothing: the clean interpreter a container has.
"""
from __future__ import annotations

import os
import socket
import time
import urllib.request

from common import MISSING, Section, Volume, failed, log_has, peer, start, stop, wait_for
from procfs import children, cpu, cpu_spent, pss_kib, rss_kib, switches, threads


def free_port() -> int:
    """A port nobody listens on now (cfgsup binds it a moment later; --health-addr needs a
    number, not 0)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rows_to_start(run, watch_dir):
    """(key, label, argv or None, what cfgsup's log must show first, after-start hook)."""
    cfgsup, py, sleeper = run.env.cfgsup, run.env.python, ["sleep", "600"]
    port = free_port()
    tini, dumb, cat = peer("tini"), peer("dumb-init"), peer("catatonit")

    def scrape():
        for path in ("/healthz", "/metrics"):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
                answer.read()
    return [
        ("bare", "bare interpreter (the venv's python sleeping)", [py, "-c", "import time; time.sleep(600)"],
         None, None),
        ("watch", "cfgsup --watch DIR -- sleep (inotify)", [cfgsup, "--watch", watch_dir, "--", *sleeper],
         "watching", None),
        ("health", "cfgsup --watch DIR --health-addr -- sleep (after one /healthz and one /metrics)",
         [cfgsup, "--watch", watch_dir, "--health-addr", f"127.0.0.1:{port}", "--", *sleeper], "serving",
         scrape),
        ("poll", "cfgsup --poll 1 --watch DIR -- sleep",
         [cfgsup, "--poll", "1", "--watch", watch_dir, "--", *sleeper], "watching", None),
        ("tini", "tini -- sleep", [tini, "--", *sleeper] if tini else None, None, None),
        ("dumb-init", "dumb-init sleep", [dumb, *sleeper] if dumb else None, None, None),
        ("catatonit", "catatonit -- sleep", [cat, "--", *sleeper] if cat else None, None, None),
    ]


def launch(argv, log_path, wait_text, is_supervisor=True):
    """Start one PID 1 (as an ordinary process) and wait until it is settled: cfgsup until its
    log shows `wait_text` (and its watches are in place), a peer until it has its child."""
    with open(log_path, "w") as log:
        proc = start(argv, stdout=log, stderr=log)
    if wait_text:
        wait_for(lambda: log_has(log_path, wait_text) or proc.poll() is not None, 15, repr(wait_text))
        if not log_has(log_path, "watching"):
            wait_for(lambda: log_has(log_path, "watching") or proc.poll() is not None, 15, "'watching'")
    elif is_supervisor:
        wait_for(lambda: children(proc.pid) or proc.poll() is not None, 10, "the child")
    if proc.poll() is not None:
        raise RuntimeError(f"exited with {proc.returncode}")
    return proc


def bench_memory_and_idle(run):
    idle_seconds = run.n["idle"]
    mem_rows, idle_rows = [], []
    figures = run.figures.setdefault("idle", {})
    watch_dir = os.path.join(run.scratch("memory"), "v")
    Volume(watch_dir, {"a": b"1"})
    started = []
    try:
        for key, label, argv, wait_text, hook in rows_to_start(run, watch_dir):
            if argv is None:
                started.append((key, label, None, MISSING))
                continue
            try:
                proc = launch(argv, os.path.join(run.scratch("memory"), f"{key}.log"), wait_text, key != "bare")
                if hook:
                    hook()
                started.append((key, label, proc, None))
            except Exception as exc:  # noqa: BLE001
                started.append((key, label, None, failed(exc)))
        live = [(key, proc) for key, _label, proc, _err in started if proc]
        before = {key: (cpu(proc.pid), switches(proc.pid)) for key, proc in live}
        t0 = time.monotonic()
        while time.monotonic() < t0 + idle_seconds:  # the measurement itself: let them idle
            time.sleep(min(1.0, max(0.0, t0 + idle_seconds - time.monotonic())))
        elapsed = time.monotonic() - t0
        for key, proc in live:
            cpu0, sw0 = before[key]
            figures[key] = {"rss": rss_kib(proc.pid), "pss": pss_kib(proc.pid), "threads": threads(proc.pid),
                            "cpu": cpu_spent(cpu0, cpu(proc.pid)), "wakeups": switches(proc.pid) - sw0}
    finally:
        for _key, _label, proc, _err in started:
            stop(proc)
    bare = figures.get("bare", {}).get("rss")
    for key, label, _proc, error in started:
        if error:
            mem_rows.append([label, error, "", "", ""])
            idle_rows.append([label, error, "", ""])
            continue
        f = figures[key]
        mem_rows.append([label, f"{f['rss'] / 1024:.1f} MiB", f"{f['pss'] / 1024:.1f} MiB", str(f["threads"]),
                         f"{f['rss'] / bare:.2f}x" if bare else "n/a"])
        idle_rows.append([label, f"{f['cpu'] * 1000:.0f} ms", str(f["wakeups"]),
                          f"{f['wakeups'] / elapsed:.2f}/s"])
    return [
        Section("Memory: the supervisor process itself (its child not counted), after the idle period",
                ["what", "RSS", "PSS", "threads", "RSS vs bare interpreter"], mem_rows,
                ["PSS (from /proc/PID/smaps_rollup) shares each page among the processes mapping it; "
                 "these rows run at the same time on the same interpreter, so their PSS is lower than "
                 "each would have alone. RSS does not depend on the neighbours."]),
        Section(f"Idle cost over {idle_seconds:g} s (CPU time and context switches of all threads)",
                ["what", "CPU", "wake-ups", "rate"], idle_rows),
    ]
