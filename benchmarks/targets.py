"""The Targets table: every target judged on the figures of this run (run.figures), each row
saying met, missed by how much, or not measured (a section not run, a peer missing).

Figures, as the sections record them (times in seconds, memory in KiB):
  idle[bare|watch|health|poll|tini|...] = {rss, pss, threads, cpu, wakeups}        memory.py
  startup[command label] = median                                                    startup.py
  latency[cfgsup|raw|rawhash|watchdog|inotifywait|poll] = {p50, p99, cpu}            latency.py
  scaling[dirs-N|keys-N|file-X][kind] = {p50, p99, cpu, rss, rss_idle, peak, threads} scaling.py
  digest[keys-N|file-X] = {p50, p99, best, ref_best, chunked_best, peak, bytes, ...}  digests.py
  reaping[peer] = {wall, zombies}                                                    reaping.py
"""
from __future__ import annotations

from common import Section

MIB = 1024


def get(figures, *path):
    for key in path:
        if not isinstance(figures, dict) or key not in figures:
            return None
        figures = figures[key]
    return figures


def _x(v):
    return f"{v:.2f}x"


def _mib(kib):
    return f"{kib / MIB:.1f} MiB"


def _ratio(a, b):
    return a / b if a is not None and b else None


class Table:
    def __init__(self):
        self.rows = []

    def add(self, name, limit_text, value, limit, shown, unit):
        """Met when value <= limit; else missed by (value - limit), written with `unit`."""
        if value is None:
            self.rows.append([name, limit_text, "not measured", "not measured"])
            return
        verdict = "met" if value <= limit else f"missed by {unit(value - limit)}"
        self.rows.append([name, limit_text, shown(), verdict])


def _worst_peak(entries):
    """(KiB, name) of the highest peak among {name: figures with "peak"}, or (None, "")."""
    peaks = [(v["peak"], k) for k, v in entries.items() if isinstance(v, dict) and v.get("peak") is not None]
    return max(peaks) if peaks else (None, "")


def rows(f, smoke=False) -> list[list[str]]:
    t = Table()
    bare, watch, health = (get(f, "idle", key, "rss") for key in ("bare", "watch", "health"))
    r = _ratio(watch, bare)
    t.add("idle RSS with --watch vs the clean bare interpreter", "<= 1.60x", r, 1.6,
          lambda: f"{_x(r)} ({_mib(watch)} / {_mib(bare)})", _x)
    added = health - watch if health is not None and watch is not None else None
    t.add("RSS that --health-addr adds (after /healthz and /metrics)", "<= 4.0 MiB", added, 4 * MIB,
          lambda: _mib(added), _mib)
    n = get(f, "scaling", "dirs-100", "cfgsup", "threads")
    t.add("threads of cfgsup with 100 watched dirs", "<= 3", n, 3, lambda: str(n), str)
    cf, raw = get(f, "latency", "cfgsup", "p50"), get(f, "latency", "raw", "p50")
    r = _ratio(cf, raw)
    hashed = get(f, "latency", "rawhash", "p50")  # what deciding on content adds, for the reader
    also = f"; {_x(_ratio(cf, hashed))} the floor that also reads and hashes" if r and hashed else ""
    t.add("change latency median vs the raw-inotify floor", "<= 2.00x", r, 2.0,
          lambda: f"{_x(r)} ({cf * 1000:.3f} / {raw * 1000:.3f} ms{also})", _x)

    digest = get(f, "digest") or {}
    # A smoke run has no 100 MiB file: it judges its largest one, and says which.
    files = sorted((v.get("bytes", 0), k) for k, v in digest.items() if k.startswith("file-"))
    name = files[-1][1] if smoke and files else "file-100mib"
    d = digest.get(name) or {}
    r = _ratio(d.get("best"), d.get("chunked_best"))
    t.add("digest of one 100 MiB file vs the chunked read+hash floor (quietest batch)", "<= 2.00x", r, 2.0,
          lambda: f"{_x(r)} ({d['best'] * 1000:.1f} / {d['chunked_best'] * 1000:.1f} ms, {name})", _x)
    peak, where = _worst_peak(digest)
    t.add("peak RSS while hashing, above idle (worst volume, in-process digest)", "<= +16.0 MiB", peak, 16 * MIB,
          lambda: f"+{_mib(peak)} ({where})", _mib)
    cpeak, cwhere = _worst_peak({k: v.get("cfgsup") for k, v in (get(f, "scaling") or {}).items()})
    t.add("peak RSS of cfgsup while it handles changes, above idle (worst scaling volume)", "<= +16.0 MiB",
          cpeak, 16 * MIB, lambda: f"+{_mib(cpeak)} ({cwhere})", _mib)
    k = digest.get("keys-1000") or {}
    r = _ratio(k.get("best"), k.get("ref_best"))
    src = "the figure RESULTS.md recorded" if k.get("ref_recorded") else "the earlier commit, same run"
    t.add("1000-key 1 MiB ConfigMap digest vs before (quietest batch; 5% is batch noise)", "<= 1.05x", r, 1.05,
          lambda: f"{_x(r)} ({k['best'] * 1000:.2f} ms vs {k['ref_best'] * 1000:.2f} ms, {src})", _x)

    s = get(f, "startup") or {}
    r = _ratio(s.get("cfgsup -- true"), s.get('python -c "import click"'))
    t.add('cfgsup -- true vs python -c "import click" (same venv)', "<= 1.30x", r, 1.3, lambda: _x(r), _x)
    w = get(f, "idle", "watch", "wakeups")
    t.add("idle wake-ups in inotify mode (--watch DIR)", "0", w, 0, lambda: f"{w} wake-ups",
          lambda v: f"{v} wake-ups")
    r = _ratio(get(f, "reaping", "cfgsup", "wall"), get(f, "reaping", "tini", "wall"))
    t.add("reaping as PID 1 vs tini", "<= 3.00x", r, 3.0, lambda: _x(r), _x)
    z = get(f, "reaping", "cfgsup", "zombies")
    t.add("zombies left after reaping as PID 1", "0", z, 0, lambda: str(z), str)
    return t.rows


def section(figures, smoke=False) -> Section:
    return Section("Targets", ["target", "limit", "measured", "result"], rows(figures, smoke),
                   ["Every figure is from this run; ratios compare rows measured side by side."])
