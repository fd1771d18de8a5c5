"""The digest of one volume measured in-process, beside its floors, on the venv's interpreter.

    digest_probe.py [--reference FILE] [--runs N] [--batches B] [--pause S] VOLUME

Prints one JSON object. Contenders, run interleaved (so load changes hit them alike):
  current    supervisor.digest.snapshot of the installed cfgsup
  reference  snapshot() of FILE, an older supervisor/digest.py (loaded on its own)
  read       the I/O floor: open, read in 1 MiB chunks and close every file, nothing else
  chunked    the read+hash floor: the same reads fed into one xxh3_128
The peak RSS of each is its first run in this fresh process: VmHWM is reset to the current RSS
right before (clear_refs), so "peak" is what that one digest added at its highest.
"""
import argparse
import gc
import importlib.util
import json
import os
import time

import xxhash
from supervisor import digest

CHUNK = 1 << 20


def files(volume):
    """The payload's regular files, sorted, read through one resolution of ..data."""
    target = os.path.join(volume, os.readlink(os.path.join(volume, "..data")))
    found = []
    for dirpath, dirnames, names in os.walk(target):
        dirnames.sort()
        found += [os.path.join(dirpath, n) for n in sorted(names)]
    return found


_BUFFER = []


def read_floor(paths, hasher=None):
    if not _BUFFER:  # one buffer for every run, as a floor would have it; its first use counts
        _BUFFER.append(bytearray(CHUNK))
    buf = _BUFFER[0]
    view = memoryview(buf)
    for path in paths:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            while True:
                n = os.readv(fd, [buf])
                if not n:
                    break
                if hasher is not None:
                    hasher.update(view[:n])
        finally:
            os.close(fd)
    return hasher.hexdigest() if hasher is not None else None


def kib(key):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def median(values):
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("volume")
    parser.add_argument("--reference")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--pause", type=float, default=0.2)
    args = parser.parse_args()
    paths = files(args.volume)
    impls = {"current": lambda: digest.snapshot(args.volume).digest}
    if args.reference:
        spec = importlib.util.spec_from_file_location("reference_digest", args.reference)
        reference = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(reference)
        impls["reference"] = lambda: reference.snapshot(args.volume).digest
    impls["read"] = lambda: read_floor(paths)
    impls["chunked"] = lambda: read_floor(paths, xxhash.xxh3_128())

    read_floor(paths)  # the page cache holds what the kubelet just wrote; make sure of it
    gc.collect()
    out = {"idle_kib": kib("VmRSS"), "files": len(paths), "bytes": sum(os.path.getsize(p) for p in paths),
           "peak_kib": {}, "kept_kib": {}, "peak_reset": True, "times": {k: [] for k in impls}, "best": {}}
    digests = {}
    for name, run in impls.items():
        gc.collect()
        before = kib("VmRSS")
        out["peak_reset"] &= reset_peak()
        digests[name] = run()
        out["peak_kib"][name] = max(0, kib("VmHWM") - before)
        gc.collect()
        out["kept_kib"][name] = kib("VmRSS") - before
    if "reference" in digests:
        out["same_as_reference"] = digests["current"] == digests["reference"]
    batch_medians = {k: [] for k in impls}
    per_batch = max(1, args.runs // args.batches)
    order = list(impls)
    for batch in range(args.batches):
        times = {k: [] for k in impls}
        for i in range(per_batch):
            shift = (batch * per_batch + i) % len(order)
            for name in order[shift:] + order[:shift]:
                t0 = time.perf_counter()
                impls[name]()
                times[name].append(time.perf_counter() - t0)
        for name, values in times.items():
            out["times"][name] += values
            batch_medians[name].append(median(values))
        if batch + 1 < args.batches:
            time.sleep(args.pause)  # spread the batches over time: the quietest one shows the cost
    out["best"] = {k: min(v) for k, v in batch_medians.items()}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
