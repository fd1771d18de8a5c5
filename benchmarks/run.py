"""Side-by-side measurements of cfgsup against its peers and floors, in one run on one machine.

    python benchmarks/run.py [--smoke] [--out FILE] [--only SECTION,...] [--venv DIR]
                             [--digest-ref REV] [--bundle PATH] [--image LABEL=IMAGE ...]

Makes a clean virtual environment (python -m venv of this interpreter, pip install of this
tree), runs every row on its interpreter, prints a markdown report (medians, p99 where it
applies, ratios against the peer or floor, and a Targets table computed from the same run) and
writes it to FILE when given. --smoke runs every section with tiny counts and sizes, so the test
suite can prove the benchmark still works; its numbers mean nothing.

Peers come from Debian packages (tini, dumb-init, catatonit, inotify-tools); a missing one is
reported as missing. Exit status: 0, or 1 when a section broke (its row says how), or 2 for a
bad command line, or 3 when the clean venv could not be made.
"""
from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bundle  # noqa: E402
import cleanenv  # noqa: E402
import digests  # noqa: E402
import latency  # noqa: E402
import memory  # noqa: E402
import reaping  # noqa: E402
import restart  # noqa: E402
import scaling  # noqa: E402
import startup  # noqa: E402
import targets  # noqa: E402
from common import ROOT, Run, Section, stop_all  # noqa: E402

# In this order: scaling shows the digest figures of the same run, so digest comes first.
SECTIONS = {
    "latency": latency.bench_latency,
    "startup": startup.bench_startup,
    "memory": memory.bench_memory_and_idle,
    "reaping": reaping.bench_reaping,
    "digest": digests.bench_digest,
    "scaling": scaling.bench_scaling,
    "restart": restart.bench_restart,
    "bundle": bundle.bench_bundle,
}
SMOKE = dict(swaps=3, poll=2, runs=2, idle=1.0, reap=20, reap_runs=1, restarts=2, swaps_small=2, swaps_mid=1,
             swaps_big=1, podman_runs=1)
FULL = dict(swaps=200, poll=100, runs=40, idle=30.0, reap=2000, reap_runs=5, restarts=30, swaps_small=50,
            swaps_mid=20, swaps_big=8, podman_runs=10)
NOTES = [
    "The baseline interpreter, the floors and cfgsup all run on the same clean venv's python: "
    "a developer's global Python may import things at start from site-packages `.pth` files, which "
    "would inflate the baseline by as much as cfgsup.",
    "Rows of a section run side by side, interleaved where they can be, so read the ratios: the "
    "machine is shared and absolute times move from run to run.",
    "cfgsup runs here as an ordinary process, not as PID 1 of a container (the reaping section excepted).",
    "Idle: a wake-up is a context switch of any thread; inotify mode should have none at all, "
    "polling wakes once per interval by design.",
    "Polling latency is bounded by the interval (about half of it at the median).",
]


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny counts: proves it runs, measures nothing")
    parser.add_argument("--out", help="also write the markdown here")
    parser.add_argument("--only", help=f"comma-separated sections to run, of: {','.join(SECTIONS)}")
    parser.add_argument("--venv", help="use this venv (made and cfgsup installed when it does not exist "
                                       "yet; reused as it is otherwise) instead of a fresh one")
    parser.add_argument("--digest-ref", metavar="REV", help="the commit whose supervisor/digest.py is "
                        f"\"before\" in the digest section (default {digests.DEFAULT_REF[:7]})")
    parser.add_argument("--bundle", default=os.path.join(ROOT, "dist", "cfgsup", "cfgsup"),
                        help="the self-contained bundle's executable (default: dist/cfgsup/cfgsup)")
    parser.add_argument("--image", dest="images", action="append", metavar="LABEL=IMAGE",
                        help="an image whose entrypoint is cfgsup, for the podman row (repeatable)")
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.only.split(",") if s.strip()] if args.only else list(SECTIONS)
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown or not chosen:
        parser.error(f"--only: unknown section {', '.join(unknown) or '(none given)'}; "
                     f"choose from {', '.join(SECTIONS)}")
    args.sections = [s for s in SECTIONS if s in chosen]
    if args.out and not os.access(os.path.dirname(os.path.abspath(args.out)), os.W_OK):
        parser.error(f"--out: cannot write into {os.path.dirname(os.path.abspath(args.out))}")
    if args.out and os.path.isdir(args.out):
        parser.error(f"--out: {args.out} is a directory")
    if args.venv:
        args.venv = os.path.abspath(args.venv)
    return args


def scratch_base() -> str | None:
    """tmpfs when it has room: Secrets live there, and the kubelet's writes of 10000 keys are
    five times faster than on this VM's disk, which bounds the run time (the measured part,
    events and reads from the page cache, is the same on both)."""
    try:
        st = os.statvfs("/dev/shm")
        if st.f_bavail * st.f_frsize >= 2 << 30 and os.access("/dev/shm", os.W_OK):
            return "/dev/shm"
    except OSError:
        pass
    return None


def render(sections: list[Section]) -> list[str]:
    out = []
    for s in sections:
        out += [f"## {s.title}", "", "| " + " | ".join(s.header) + " |", "|" + "---|" * len(s.header)]
        out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in s.rows]
        out += [""] + [f"- {note}" for note in s.notes] + ([""] if s.notes else [])
    return out


def main(argv=None) -> int:
    try:
        return measure(argv)
    except KeyboardInterrupt:  # everything started is stopped and the scratch space removed
        print("benchmarks: interrupted", file=sys.stderr)
        return 130


def measure(argv=None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up like on Ctrl-C
    started = time.monotonic()
    tmp = tempfile.mkdtemp(prefix="cfgsup-bench-", dir=scratch_base())
    broken = False
    try:
        try:
            env = cleanenv.make(args.venv or os.path.join(tmp, "venv"), tmp)
        except (cleanenv.SetupError, OSError) as exc:
            print(f"benchmarks: cannot make the clean venv: {exc}", file=sys.stderr)
            return 3
        run = Run(env=env, n=SMOKE if args.smoke else FULL, tmp=tmp, smoke=args.smoke, args=args)
        sections = []
        print(f"benchmarks: clean venv ready ({time.monotonic() - started:.0f} s)", file=sys.stderr, flush=True)
        for name in args.sections:
            print(f"benchmarks: {name} ...", file=sys.stderr, flush=True)
            t0 = time.monotonic()
            try:
                sections += SECTIONS[name](run)
            except Exception as exc:  # noqa: BLE001 - one broken section must not lose the others
                broken = True
                traceback.print_exc()
                sections.append(Section(f"{name}: broken", ["error"], [[f"{type(exc).__name__}: {exc}"]]))
            finally:
                stop_all()
                print(f"benchmarks: {name} took {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
        sections.append(targets.section(run.figures, args.smoke))
    finally:
        stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    elapsed = time.monotonic() - started
    command = " ".join(["python benchmarks/run.py", *map(shlex.quote, sys.argv[1:] if argv is None else argv)])
    out = [f"# cfgsup benchmarks{' (smoke run: numbers mean nothing)' if args.smoke else ''}", "",
           f"Machine: {cleanenv.machine()}", "", f"Interpreter: {env.describe()}", "",
           f"Run: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, `{command}`, {elapsed:.0f} s; "
           f"volumes and scratch files under {os.path.dirname(tmp)}", ""]
    out += render(sections) + ["## Notes", ""] + [f"- {note}" for note in NOTES]
    text = "\n".join(out) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
