"""Start-up: the whole command, `X -- true`, on the venv's interpreter, interleaved runs."""
from __future__ import annotations

import subprocess
import time

from common import MISSING, Section, failed, median, ms, pct, peer


def timed(argv) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, timeout=60)
    return time.perf_counter() - t0


def interleaved(commands, runs):
    """{label: [seconds]} for every command that is there; load changes hit them all alike.
    A command that fails is reported with its error in place of times."""
    times = {label: [] for label, argv in commands if argv}
    errors = {}
    for _ in range(runs):
        for label, argv in commands:
            if argv and label not in errors:
                try:
                    times[label].append(timed(argv))
                except Exception as exc:  # noqa: BLE001
                    errors[label] = failed(exc)
    return times, errors


def rows_for(commands, times, errors, base_label):
    base = median(times[base_label]) if times.get(base_label) and base_label not in errors else None
    rows = []
    for label, argv in commands:
        if argv is None:
            rows.append([label, MISSING, "", ""])
        elif label in errors:
            rows.append([label, errors[label], "", ""])
        else:
            med = median(times[label])
            rows.append([label, ms(med), ms(pct(times[label], 99)), f"{med / base:.2f}x" if base else "n/a"])
    return rows


def bench_startup(run):
    py, cfgsup, runs = run.env.python, run.env.cfgsup, run.n["runs"]
    empty = run.scratch("startup-watch")
    tini, dumb, cat = peer("tini"), peer("dumb-init"), peer("catatonit")
    commands = [
        ("python -c pass", [py, "-c", "pass"]),
        ('python -c "import click"', [py, "-c", "import click"]),
        ("cfgsup -- true", [cfgsup, "--", "true"]),
        ("cfgsup --watch DIR -- true", [cfgsup, "--watch", empty, "--", "true"]),
        ("tini -- true", [tini, "--", "true"] if tini else None),
        ("dumb-init true", [dumb, "true"] if dumb else None),
        ("catatonit -- true", [cat, "--", "true"] if cat else None),
    ]
    times, errors = interleaved(commands, runs)
    run.figures["startup"] = {label: median(v) for label, v in times.items() if v and label not in errors}
    return [Section(f"Start-up: whole command, {runs} interleaved runs each (python and cfgsup from the venv)",
                    ["command", "median", "p99", 'vs python -c "import click"'],
                    rows_for(commands, times, errors, 'python -c "import click"'))]
