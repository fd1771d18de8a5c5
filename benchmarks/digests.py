"""Digest of a volume, in-process (programs/digest_probe.py on the venv's interpreter): cfgsup's
digest now, the digest of an earlier commit, the read floor and the chunked read+hash floor,
interleaved, in batches with pauses between them.

The quietest batch shows the digest's own cost on a shared machine; the overall median and p99
what a busy neighbour makes of it. Ratios are between quietest batches.
"""
from __future__ import annotations

import json
import os
import subprocess

from cleanenv import reference_digest
from common import PROGRAMS, Section, Volume, failed, median, mib, ms, pct, ratio

# The digest before issue 13's streaming rewrite (main when the issue was filed, ade14e6 being the
# last change to supervisor/digest.py), unless --digest-ref names another commit.
DEFAULT_REF = "ade14e68c211558dae2485543dbd0dd76833c3b1"
# Its 1000-key figure as RESULTS.md recorded it (quietest batch), for a clone without that commit.
RECORDED_1000_KEYS = 0.00467


def probe(run, volume: str, runs: int, batches: int, reference: str | None) -> dict:
    argv = [run.env.python, os.path.join(PROGRAMS, "digest_probe.py"), "--runs", str(runs),
            "--batches", str(batches), "--pause", "0" if run.smoke else "0.2", volume]
    if reference:
        argv[2:2] = ["--reference", reference]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError((out.stderr.strip().splitlines() or ["no output"])[-1])
    return json.loads(out.stdout)


def _runs(run, spec) -> tuple[int, int]:
    if run.smoke:
        return 2, 1
    return {"swaps_small": (200, 5), "swaps_mid": (50, 5), "swaps_big": (15, 5)}[spec.swaps]


def bench_digest(run):
    ref_path, ref_what = reference_digest(run.args.digest_ref or DEFAULT_REF, run.tmp)
    figures = run.figures.setdefault("digest", {})
    figures["_reference"] = ref_what if ref_path else None
    timing, memory = [], []
    for spec in run.specs():
        volume = Volume(os.path.join(run.scratch("digest"), spec.name), spec.make(0))
        runs, batches = _runs(run, spec)
        try:
            res = probe(run, volume.path, runs, batches, ref_path)
        except Exception as exc:  # noqa: BLE001
            timing.append([spec.label, failed(exc)] + [""] * 7)
            memory.append([spec.label, failed(exc)] + [""] * 5)
            continue
        finally:
            _remove(volume.path)
        t, best, peak, kept = res["times"], res["best"], res["peak_kib"], res["kept_kib"]
        fig = figures[spec.name] = {
            "p50": median(t["current"]), "p99": pct(t["current"], 99), "best": best["current"],
            "ref_best": best.get("reference"), "read_best": best["read"], "chunked_best": best["chunked"],
            "chunked_p50": median(t["chunked"]), "chunked_p99": pct(t["chunked"], 99),
            "peak": peak["current"] if res["peak_reset"] else None, "kept": kept["current"],
            "idle": res["idle_kib"], "bytes": res["bytes"]}
        ref = fig["ref_best"]
        timing.append([spec.label, ms(fig["p50"]), ms(fig["p99"]), ms(fig["best"]), ms(ref),
                       ratio(fig["best"], ref), ms(fig["read_best"]), ms(fig["chunked_best"]),
                       ratio(fig["best"], fig["chunked_best"])])
        if not res["peak_reset"]:
            memory.append([spec.label, "n/a (VmHWM cannot be reset here)", "", "", "", ""])
            continue
        same = res.get("same_as_reference")
        memory.append([spec.label, "+" + mib(peak["current"]), "+" + mib(peak["reference"]) if ref else "n/a",
                       "+" + mib(peak["chunked"]), mib(kept["current"]),
                       "n/a" if same is None else "yes" if same else "no"])
    if not ref_path and "keys-1000" in figures:
        figures["keys-1000"]["ref_best"] = RECORDED_1000_KEYS
        figures["keys-1000"]["ref_recorded"] = True
    before = (f"\"before\" is {ref_what}, loaded beside the installed one in the same process." if ref_path else
              f"\"before\" is not available ({ref_what}); the 1000-key target compares with the "
              f"{RECORDED_1000_KEYS * 1000:.2f} ms that RESULTS.md recorded for it.")
    head = f"Digest of a kubelet volume, in-process ({'2 runs' if run.smoke else 'up to 200 runs'} in batches)"
    return [
        Section(head, ["volume", "median", "p99", "quietest batch", "before: quietest batch", "vs before",
                       "read floor: quietest", "read+hash floor: quietest", "vs read+hash floor"], timing,
                [before,
                 "read floor: open, read in 1 MiB chunks and close every file; read+hash floor: the "
                 "same reads fed into one xxh3_128. Both are what any digest of these bytes must pay."]),
        Section("Digest memory: peak RSS above the RSS just before one digest, in a fresh process",
                ["volume", "cfgsup now", "before", "read+hash floor", "RSS kept afterwards (cfgsup now)",
                 "same digest as before"],
                memory, ["VmHWM is reset right before each digest (`5` to /proc/self/clear_refs), so the "
                         "peak is that digest's own."]),
    ]


def _remove(path):
    import shutil

    shutil.rmtree(path, ignore_errors=True)
