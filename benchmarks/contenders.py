"""Watchers that turn a kubelet swap into SIGUSR1 for an app, and the swap-to-signal measurement.

Each contender watches volumes of its own (same payloads) and signals an app of its own
(programs/signal_app.py), which prints when the signal arrived. Swaps go round the contenders in
turn, in a rotating order, so load on the shared machine hits all of them alike.

  cfgsup       cfgsup --watch DIR... --on-change signal --signal USR1 -- APP
  raw          programs/raw_inotify.py: ctypes inotify in one thread, no hashing (the floor)
  rawhash      the same with --hash: it reads and hashes the new payload and signals only when
               the digest changed (the floor of deciding on content; latency section only)
  watchdog     programs/watchdog_observer.py: watchdog's stock observer, no hashing
  inotifywait  `inotifywait -m -e ... --format '%e %f' DIR...` piped into a `sh` read loop that
               runs the shell's built-in kill on `MOVED_TO ..data`: what a shell user would deploy.
               Its CPU and RSS are the two processes together.
All run on the venv's interpreter (inotifywait and sh are C programs).
"""
from __future__ import annotations

import os
import subprocess

from common import PROGRAMS, Lines, Missing, Volume, failed, log_has, peer, start, stop, wait_for
from procfs import cpu, cpu_spent, reset_peak, rss_kib, settle_cpu, status_kib, threads

KINDS = ("cfgsup", "raw", "watchdog", "inotifywait")
LABELS = {"cfgsup": "cfgsup (inotify)", "raw": "floor: raw inotify (ctypes, one thread)",
          "rawhash": "raw inotify + read and hash of the payload",
          "watchdog": "bare watchdog observer", "inotifywait": "inotifywait -m | sh read loop"}
# The same events cfgsup's watcher subscribes to, so every contender reads as many per swap.
IW_EVENTS = "modify,attrib,close_write,moved_from,moved_to,create,delete,delete_self,move_self"
IW_READER = ('while read -r event name; do '
             'case "$event $name" in "MOVED_TO ..data") kill -USR1 "$1";; esac; done')


class Contender:
    def __init__(self, run, kind: str, dirs: list[str], logs: str, extra=()):
        self.run, self.kind, self.dirs, self.logs, self.extra = run, kind, dirs, logs, list(extra)
        self.label = LABELS.get(kind, kind)
        self.procs = []          # whose CPU, RSS and threads count
        self.app = None
        self.lines = None
        self.error = None
        self.volumes: list[Volume] = []
        self.latencies: list[float] = []
        self.extra_signals = 0
        self.note = None         # a warning the row's reader must see

    # ---- life cycle -----------------------------------------------------------------------
    def launch(self) -> None:
        env = self.run.env
        app = [env.python, os.path.join(PROGRAMS, "signal_app.py")]
        self.log = os.path.join(self.logs, f"{self.kind}.log")
        if self.kind == "cfgsup":
            watches = [arg for d in self.dirs for arg in ("--watch", d)]
            with open(self.log, "w") as log:  # a pipe nobody reads would fill up and stall it
                proc = start([env.cfgsup, *watches, "--on-change", "signal", "--signal", "USR1",
                              *self.extra, "--", *app], stderr=log)
            self.procs, self.lines = [proc], Lines(proc.stdout)
            return
        if self.kind == "inotifywait" and not peer("inotifywait"):
            raise Missing("inotifywait")
        self.app = start(app)
        self.lines = Lines(self.app.stdout)
        self.lines.until("ready")
        pid = str(self.app.pid)
        if self.kind == "inotifywait":
            with open(self.log, "w") as log:
                iw = start([peer("inotifywait"), "-m", "-e", IW_EVENTS, "--format", "%e %f", *self.dirs],
                           stderr=log)
            reader = start(["sh", "-c", IW_READER, "reader", pid], stdin=iw.stdout,
                           stdout=subprocess.DEVNULL)
            iw.stdout.close()  # the reader holds the pipe now
            self.procs = [iw, reader]
        else:
            script = {"raw": "raw_inotify.py", "rawhash": "raw_inotify.py",
                      "watchdog": "watchdog_observer.py"}[self.kind]
            flags = ["--hash"] if self.kind == "rawhash" else []
            with open(self.log, "w") as log:
                self.procs = [start([env.python, os.path.join(PROGRAMS, script), *flags, pid, *self.dirs],
                                    stderr=log)]

    def wait_ready(self, timeout: float) -> None:
        if self.kind == "cfgsup":
            self.lines.until("ready", timeout)
            wait_for(lambda: log_has(self.log, "watching") or self.dead(), timeout,
                     "'watching' in cfgsup's log")
        elif self.kind == "inotifywait":
            wait_for(lambda: log_has(self.log, "Watches established") or self.dead(), timeout,
                     "'Watches established' from inotifywait")
        else:
            Lines(self.procs[0].stdout).until("watching", timeout)
        if self.dead():
            raise RuntimeError(f"{self.kind} exited: {self.log_tail()}")

    def fell_back(self) -> str | None:
        """cfgsup's first warning that a watch went to polling (the inotify instance or watch
        limit, say): its latency would then be the poll interval's, and the row must say so."""
        if self.kind != "cfgsup":
            return None
        try:
            with open(self.log, errors="replace") as fh:
                for line in fh:
                    if "inotify unavailable" in line or "with inotify" in line:
                        return "fell back to polling: " + line.strip()[:200]
        except OSError:
            pass
        return None

    def dead(self) -> bool:
        return any(p.poll() is not None for p in self.procs)

    def log_tail(self) -> str:
        try:
            with open(self.log, errors="replace") as fh:
                return " / ".join(fh.read().strip().splitlines()[-2:])[:200]
        except OSError:
            return ""

    def stop(self) -> None:
        for proc in [*self.procs, self.app]:
            stop(proc)

    # ---- readings -------------------------------------------------------------------------
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def cpu_readings(self) -> list:
        return [cpu(p) for p in self.pids()]

    def rss(self) -> int:
        return sum(rss_kib(p) for p in self.pids())

    def hwm(self) -> int:
        return sum(status_kib(p, "VmHWM") for p in self.pids())

    def threads(self) -> int:
        return sum(threads(p) for p in self.pids())

    # ---- one swap -------------------------------------------------------------------------
    def swap(self, index: int, payload: dict, timeout: float) -> float:
        """Write a new payload into volume `index`; seconds from the commit (the rename over
        ..data, when the new content exists for anyone) to the signal in the app."""
        self.extra_signals += self.lines.drain()  # signals nobody asked for, since the last swap
        volume = self.volumes[index]
        volume.write(payload)
        try:
            line = self.lines.until("got ", timeout=timeout)
        except TimeoutError:
            raise TimeoutError(f"no signal in the app within {timeout:g} s of a swap") from None
        except EOFError:
            raise EOFError("the app's output closed: the watcher or the app exited") from None
        return float(line.split()[1]) - volume.committed_at


def measure(run, kinds, scenario: str, ndirs: int, payload, swaps: int, timeout: float, extra=None):
    """Start every kind on `ndirs` fresh volumes of its own, warm each up with one swap, then
    `swaps` measured swaps each. Returns the contenders with their readings (or their error)."""
    base = run.scratch(scenario)
    contenders = []
    serial = [0]

    def content():
        serial[0] += 1
        return payload(serial[0])

    for kind in kinds:
        dirs = [os.path.join(base, kind, f"v{i}") for i in range(ndirs)]
        c = Contender(run, kind, dirs, run.scratch(os.path.join(scenario, "logs")), (extra or {}).get(kind, ()))
        c.volumes = [Volume(d, content()) for d in dirs]
        contenders.append(c)
    try:
        for c in contenders:  # all start at once: their start-up overlaps
            try:
                c.launch()
            except Exception as exc:  # noqa: BLE001 - a peer that cannot run is a row, not a crash
                c.error = failed(exc)
        for c in contenders:
            if c.error is None:
                _warm_up(c, content, timeout)
        live = [c for c in contenders if c.error is None]
        settle_cpu([p for c in live for p in c.pids()])
        cpu0 = {id(c): c.cpu_readings() for c in live}
        for n in range(swaps):
            order = live[n % len(live):] + live[:n % len(live)] if live else []
            for c in order:
                if c.error is None:
                    try:
                        c.latencies.append(c.swap(n % ndirs, content(), timeout))
                    except Exception as exc:  # noqa: BLE001
                        c.error = failed(exc) + f" (swap {n + 1})"
        settle_cpu([p for c in live for p in c.pids()])
        for c in live:
            if c.error is None and not c.latencies:
                c.error = "failed: no swap measured"
            c.note = c.fell_back()
            if c.error is None:
                spent = sum(cpu_spent(a, b) for a, b in zip(cpu0[id(c)], c.cpu_readings()))
                c.cpu_per_change = spent / len(c.latencies)
                c.rss_after = c.rss()
                c.peak_above = max(0, c.hwm() - c.rss_idle) if c.peak_reset else None
                c.nthreads = c.threads()
    finally:
        for c in contenders:
            c.stop()
    return contenders


def _warm_up(c: Contender, content, timeout: float) -> None:
    """Ready, then one swap that must arrive: a watcher that cannot see swaps is found before
    anything is measured, and first-time costs (imports, caches) are paid."""
    try:
        c.wait_ready(max(15.0, timeout))
        c.rss_idle = c.rss()
        # The peak while changes are handled: VmHWM from here on (cfgsup's start-up peak is
        # not part of it).
        c.peak_reset = all(reset_peak(p) for p in c.pids())
        c.swap(0, content(), timeout)
    except Exception as exc:  # noqa: BLE001
        c.error = failed(exc) + (f" [{c.log_tail()}]" if c.log_tail() else "")
