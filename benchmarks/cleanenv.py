"""The clean interpreter every row runs on: a fresh venv with cfgsup pip-installed from this tree.

A user's container has a clean interpreter: no site-packages `.pth` files importing things at
start, as a developer's global Python may have. So the bare-interpreter baseline, the floors and
cfgsup all run on the same venv's python, made here from the interpreter running the benchmark.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass

from common import ROOT, peer, run_bounded

# What the source copy leaves out at the top: build/ and *.egg-info of an earlier in-tree build
# can carry stale modules into the wheel; the rest is not part of the package.
_TOP_SKIP = {".git", ".venv", "venv", "build", "dist", ".pytest_cache", ".hypothesis", "benchmarks",
             "tests", "examples"}


def _skip(directory, names):
    top = os.path.samefile(directory, ROOT)
    return [n for n in names if (top and n in _TOP_SKIP) or n == "__pycache__" or n.endswith(".egg-info")]

_PACKAGES = ("cfgsup", "click", "watchdog", "psutil", "xxhash", "prometheus_client")


@dataclass
class Env:
    venv: str
    python: str          # VENV/bin/python
    cfgsup: str          # VENV/bin/cfgsup, the console script a user runs
    base: str            # the interpreter the venv was made from (resolved)
    version: str         # "3.11.7"
    packages: dict       # distribution -> version, as installed in the venv
    made: bool           # created by this run (else: reused with --venv)

    def describe(self) -> str:
        pkgs = ", ".join(f"{k} {v}" for k, v in self.packages.items())
        how = "made by this run" if self.made else "given with --venv"
        return (f"`{self.python}` (a venv {how}, `python -m venv` of `{self.base}`, Python {self.version}); "
                f"installed there by `pip install` of this tree: {pkgs}")


class SetupError(Exception):
    """The venv could not be made or cfgsup not installed into it: the run cannot measure."""


def _pip_can_target() -> bool:
    """pip 22.3+ installs into another interpreter (`--python`), so the venv needs no pip of its own."""
    out = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True, text=True)
    try:
        major, minor = (int(x) for x in out.stdout.split()[1].split(".")[:2])
    except (IndexError, ValueError):
        return False
    return (major, minor) >= (22, 3)


def _run(argv, what):
    try:
        proc = run_bounded(argv, timeout=900)
    except TimeoutError as exc:
        raise SetupError(f"{what}: {exc}") from None
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise SetupError(f"{what} failed ({proc.returncode}): {' / '.join(tail)}")


def make(venv: str, scratch: str) -> Env:
    """Create `venv` and pip-install a clean copy of this tree into it; reuse it when it exists."""
    made = not os.path.exists(os.path.join(venv, "bin", "python"))
    if made:
        src = os.path.join(scratch, "src")
        shutil.copytree(ROOT, src, ignore=_skip)
        targetable = _pip_can_target()
        # sys.executable may itself be a venv's python: venv then builds on its base interpreter.
        argv = [sys.executable, "-m", "venv", venv] + (["--without-pip"] if targetable else [])
        _run(argv, "python -m venv")
        py = os.path.join(venv, "bin", "python")
        pip = [sys.executable, "-m", "pip", "--python", py] if targetable else [py, "-m", "pip"]
        _run([*pip, "install", "-q", "--disable-pip-version-check", src], "pip install of cfgsup")
    py = os.path.join(venv, "bin", "python")
    script = os.path.join(venv, "bin", "cfgsup")
    if not os.access(script, os.X_OK):
        raise SetupError(f"{script} is missing: cfgsup is not installed in {venv}")
    probe = ("import json, sys, importlib.metadata as m\n"
             "def v(name):\n"
             "    try: return m.version(name)\n"
             "    except m.PackageNotFoundError: return 'missing'\n"
             f"print(json.dumps({{'base': sys._base_executable, 'version': sys.version.split()[0], "
             f"'packages': {{n: v(n) for n in {list(_PACKAGES)!r}}}}}))")
    out = subprocess.run([py, "-c", probe], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise SetupError(f"the venv's python does not run: {out.stderr.strip()[-200:]}")
    info = json.loads(out.stdout)
    return Env(venv, py, script, os.path.realpath(info["base"]), info["version"], info["packages"], made)


def reference_digest(rev: str, scratch: str) -> tuple[str | None, str]:
    """supervisor/digest.py as of `rev`, written to a file of its own (it imports nothing of
    cfgsup's, so it loads alone beside the new one). Returns (path or None, what it is)."""
    out = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", f"{rev}^{{commit}}"],
                         capture_output=True, text=True)
    if out.returncode != 0:
        why = (out.stderr.strip().splitlines() or ["git failed"])[0][:160]
        return None, f"commit {rev[:12]} not found: {why}"
    short = out.stdout.strip()
    text = subprocess.run(["git", "-C", ROOT, "show", f"{rev}:supervisor/digest.py"],
                          capture_output=True, text=True)
    if text.returncode != 0:
        return None, f"commit {short} has no supervisor/digest.py"
    path = os.path.join(scratch, f"digest_{short}.py")
    with open(path, "w") as fh:
        fh.write(text.stdout)
    return path, f"supervisor/digest.py of commit {short}"


def machine() -> str:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as fh:
            model = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    versions = []
    for name, flag in (("tini", "--version"), ("dumb-init", "--version"), ("catatonit", "--version"),
                       ("inotifywait", "--help")):
        path = peer(name)
        if path:
            out = subprocess.run([path, flag], capture_output=True, text=True)
            first = ((out.stdout or out.stderr).strip().splitlines() or ["?"])[0]
            versions.append(f"{name} ({first})" if name not in first else first)
        else:
            versions.append(f"{name} missing")
    return (f"{os.cpu_count()} cores ({model}), {mem:.0f} GiB, Linux {platform.release()}; "
            f"peers: {', '.join(versions)}")
