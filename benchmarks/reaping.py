"""Reaping as PID 1 in a fresh pid namespace: thousands of short-lived processes and orphans."""
from __future__ import annotations

import subprocess
import time

from common import MISSING, Section, failed, median, ms, peer, plural, run_bounded

# Orphans galore, then wait (bounded) until no zombie is left, and say how many were.
WORKLOAD = """
n=0
while [ $n -lt {count} ]; do sh -c 'true & true &' ; true; n=$((n+1)); done
deadline=$(( $(date +%s) + 20 ))
while :; do
  z=0
  for s in /proc/[0-9]*/stat; do
    case "$(cut -d' ' -f3 "$s" 2>/dev/null)" in Z) z=$((z+1));; esac
  done
  [ "$z" -eq 0 ] || [ "$(date +%s)" -ge "$deadline" ] && break
done
echo "zombies=$z"
"""


def bench_reaping(run):
    count, runs = run.n["reap"], run.n["reap_runs"]
    unshare = ["unshare", "--pid", "--fork", "--mount-proc"]
    title = (f"Reaping as PID 1 in a pid namespace: {count} short-lived processes and {2 * count} "
             f"orphans ({plural(runs, 'run')} each)")
    try:
        usable = subprocess.run([*unshare, "true"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        usable = False
    if not usable:
        return [Section(title, ["PID 1", "result"], [["unshare --pid", "not available (needs root)"]])]
    workload = WORKLOAD.format(count=count)
    tini, dumb, cat = peer("tini"), peer("dumb-init"), peer("catatonit")
    peers = [("cfgsup", [run.env.cfgsup, "--", "sh", "-c", workload]),
             ("tini", [tini, "--", "sh", "-c", workload] if tini else None),
             ("dumb-init", [dumb, "sh", "-c", workload] if dumb else None),
             ("catatonit", [cat, "--", "sh", "-c", workload] if cat else None)]
    times = {label: [] for label, argv in peers if argv}
    zombies = {label: [] for label, argv in peers if argv}
    errors = {}
    for _ in range(runs):
        for label, argv in peers:
            if argv and label not in errors:
                try:
                    t0 = time.perf_counter()
                    out = run_bounded([*unshare, *argv], timeout=300)
                    times[label].append(time.perf_counter() - t0)
                    if "zombies=" not in out.stdout:
                        tail = (out.stderr.strip().splitlines() or [""])[-1][:160]
                        raise RuntimeError(f"exit {out.returncode} without a count: {tail}")
                    zombies[label].append(int(out.stdout.split("zombies=")[1].split()[0]))
                except Exception as exc:  # noqa: BLE001
                    errors[label] = failed(exc)
    figures = run.figures["reaping"] = {}
    base = median(times["tini"]) if times.get("tini") and "tini" not in errors else None
    rows = []
    for label, argv in peers:
        if argv is None:
            rows.append([label, MISSING, "", ""])
        elif label in errors:
            rows.append([label, errors[label], "", ""])
        else:
            med = median(times[label])
            figures[label] = {"wall": med, "zombies": max(zombies[label])}
            rows.append([label, ms(med), str(max(zombies[label])), f"{med / base:.2f}x" if base else "n/a"])
    return [Section(title, ["PID 1", "median wall time", "zombies left", "vs tini"], rows)]
