"""The self-contained bundle (`bash packaging/bundle.sh` -> dist/cfgsup/cfgsup) beside the pip
install: start-up, idle RSS with --watch, size on disk against tini, and container start-up
(`podman run --rm IMAGE -- true`) for the images given with --image LABEL=IMAGE.

Without a bundle (or images, or podman) each row says what is missing; nothing fails.
"""
from __future__ import annotations

import os
import subprocess
import time

from common import MISSING, Section, Volume, failed, median, peer, plural, stop
from procfs import pss_kib, rss_kib
from memory import launch
from startup import interleaved, rows_for

NOT_BUILT = "not built (bash packaging/bundle.sh)"


def du_kib(path: str) -> int:
    """Disk blocks of a file or a tree, each inode once (like du -s)."""
    seen, blocks = set(), 0
    paths = [path] if not os.path.isdir(path) else [
        os.path.join(d, n) for d, dirs, files in os.walk(path) for n in dirs + files]
    for p in paths:
        st = os.lstat(p)
        if (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            blocks += st.st_blocks
    return blocks // 2


def site_packages(venv: str) -> str | None:
    lib = os.path.join(venv, "lib")
    for name in sorted(os.listdir(lib)) if os.path.isdir(lib) else []:
        path = os.path.join(lib, name, "site-packages")
        if os.path.isdir(path):
            return path
    return None


def bench_bundle(run):
    bundle = run.args.bundle
    built = bool(bundle) and os.access(bundle, os.X_OK)
    return [_startup(run, bundle if built else None), _idle(run, bundle if built else None),
            _size(run, bundle if built else None), _podman(run)]


def _startup(run, bundle):
    tini = peer("tini")
    commands = [("pip install: cfgsup -- true", [run.env.cfgsup, "--", "true"]),
                ("bundle: cfgsup -- true", [bundle, "--", "true"] if bundle else None),
                ("tini -- true", [tini, "--", "true"] if tini else None)]
    times, errors = interleaved(commands, run.n["runs"])
    rows = rows_for(commands, times, errors, "pip install: cfgsup -- true")
    if not bundle:
        rows[1][1] = NOT_BUILT
    run.figures.setdefault("bundle", {})["startup"] = {k: median(v) for k, v in times.items() if v}
    return Section(f"Self-contained bundle: start-up ({run.n['runs']} interleaved runs each)",
                   ["command", "median", "p99", "vs the pip install"], rows)


def _idle(run, bundle):
    watch_dir = os.path.join(run.scratch("bundle"), "v")
    Volume(watch_dir, {"a": b"1"})
    tini = peer("tini")
    rows = []
    sleeper = ["--", "sleep", "600"]
    for label, argv, wait_text in (
            ("pip install: cfgsup --watch DIR -- sleep", [run.env.cfgsup, "--watch", watch_dir, *sleeper],
             "watching"),
            ("bundle: cfgsup --watch DIR -- sleep", [bundle, "--watch", watch_dir, *sleeper] if bundle else None,
             "watching"),
            ("tini -- sleep", [tini, *sleeper] if tini else None, None)):
        if argv is None:
            rows.append([label, NOT_BUILT if "bundle" in label else MISSING, ""])
            continue
        proc = None
        try:
            proc = launch(argv, os.path.join(run.scratch("bundle"), f"{len(rows)}.log"), wait_text)
            time.sleep(min(1.0, run.n["idle"]))  # past start-up: the lazy imports are done
            rows.append([label, f"{rss_kib(proc.pid) / 1024:.1f} MiB", f"{pss_kib(proc.pid) / 1024:.1f} MiB"])
        except Exception as exc:  # noqa: BLE001
            rows.append([label, failed(exc), ""])
        finally:
            stop(proc)
    return Section("Self-contained bundle: idle memory", ["what", "RSS", "PSS"], rows)


def _size(run, bundle):
    rows = []
    if bundle:
        size = du_kib(os.path.dirname(bundle))
        rows.append([f"bundle: {os.path.dirname(bundle)}/ (no Python needed)", f"{size / 1024:.1f} MiB"])
    else:
        rows.append(["bundle", NOT_BUILT])
    sp = site_packages(run.env.venv)
    if sp:
        rows.append(["pip install: the venv's site-packages (needs a Python in the image besides)",
                     f"{du_kib(sp) / 1024:.1f} MiB"])
    for name in ("tini", "dumb-init", "catatonit"):
        path = peer(name)
        rows.append([name, f"{du_kib(os.path.realpath(path)) / 1024:.2f} MiB" if path else MISSING])
    return Section("Self-contained bundle: size on disk (du)", ["what", "size"], rows)


def _entrypoint(image: str) -> list:
    import json

    try:
        out = subprocess.run(["podman", "image", "inspect", "--format", "{{json .Config.Entrypoint}}", image],
                             capture_output=True, text=True, timeout=60).stdout
        return json.loads(out) or []
    except (OSError, ValueError, subprocess.SubprocessError):
        return []


def _podman(run):
    images = run.args.images or []
    title = "Container start-up: `podman run --rm IMAGE -- true`, wall time"
    header = ["image", "cfgsup -- true as the entrypoint", "--entrypoint true (the runtime alone)"]
    if not peer("podman"):
        return Section(title, header, [["podman", "podman not installed", ""]])
    if not images:
        return Section(title, header, [["no image given", "(--image LABEL=IMAGE, repeatable)", ""]])
    rows = []
    for spec in images:
        label, _, image = spec.partition("=")
        image = image or label
        cells = [label]
        run_ = ["podman", "run", "--rm", "--pull", "never", "--network", "none"]  # no registry here
        # An entrypoint that ends in `--` (Dockerfile.example's) takes the command as it is.
        ends = _entrypoint(image)[-1:] == ["--"]
        for argv in ([*run_, image, *([] if ends else ["--"]), "true"], [*run_, "--entrypoint", "true", image]):
            try:
                times = []
                for _ in range(run.n["podman_runs"]):
                    t0 = time.perf_counter()
                    subprocess.run(argv, capture_output=True, check=True, timeout=120)
                    times.append(time.perf_counter() - t0)
                cells.append(f"{median(times) * 1000:.0f} ms")
            except Exception as exc:  # noqa: BLE001
                cells.append(failed(exc))
        rows.append(cells)
    runs = plural(run.n["podman_runs"], "run")
    return Section(f"{title} ({runs} each; podman as configured in the environment)",
                   header, rows)
