"""Build steps for the container tests and the benchmarks, callable from Python. Each returns
what it made (a path or an image name); none of them needs a registry.

    bundle(dist)                          run packaging/bundle.sh into `dist`; the bundle folder
    busybox_rootfs(dest, libs_from=None)  a busybox-static root file system (plus, optionally,
                                          the libraries a bundle's NEEDS names, from this host)
    debian_python_tar(dest)               a Debian minbase tar with python3 and venv (mmdebstrap)
    wheels(dest, python_tag)              cfgsup (pip wheel) and its dependencies for that Python
    context(dest, bundle, wheels)         a build context: the sources, dist/cfgsup, wheels/
    build_all(pm, workdir, bundle)        all of it, as images in Podman `pm`: a dict of names
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 600
BUNDLE = ("bash", "packaging/bundle.sh")  # the README's command, run from the checkout


def _run(args, **kw):
    proc = subprocess.run(args, capture_output=True, timeout=kw.pop("timeout", TIMEOUT), **kw)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args))} exited {proc.returncode}:\n"
                           + proc.stdout.decode(errors="replace")[-2000:]
                           + proc.stderr.decode(errors="replace")[-3000:])
    return proc


def bundle(dist: str, build: str | None = None) -> str:
    """`bash packaging/bundle.sh` with DIST=dist; returns dist/cfgsup (the executable is in it)."""
    env = dict(os.environ, DIST=os.path.abspath(dist),
               BUILD=os.path.abspath(build or os.path.join(dist, "build")), PYTHON=sys.executable)
    _run(list(BUNDLE), env=env, cwd=ROOT)
    return os.path.join(os.path.abspath(dist), "cfgsup")


def busybox_rootfs(dest: str, libs_from: str | None = None) -> str:
    """/bin/busybox, a link per applet, /etc/passwd and /etc/group with root and nobody, /tmp.
    With `libs_from` (a bundle folder), also what its NEEDS names, copied from this host."""
    busybox = shutil.which("busybox")
    if busybox is None:
        raise RuntimeError("busybox is not installed (Debian: busybox-static)")
    sys.path.insert(0, os.path.join(ROOT, "packaging"))
    from needs import interpreter_of

    if interpreter_of(busybox):
        raise RuntimeError(f"{busybox} is dynamically linked; the images need busybox-static")
    for sub in ("bin", "etc", "tmp", "proc", "sys", "dev", "run"):
        os.makedirs(os.path.join(dest, sub), exist_ok=True)
    os.chmod(os.path.join(dest, "tmp"), 0o1777)
    shutil.copy2(busybox, os.path.join(dest, "bin", "busybox"))
    applets = _run([busybox, "--list"]).stdout.decode().split()
    for applet in applets:
        if applet != "busybox":  # a link named busybox would replace the binary itself
            link = os.path.join(dest, "bin", applet)
            if not os.path.lexists(link):
                os.symlink("busybox", link)
    with open(os.path.join(dest, "etc", "passwd"), "w") as fh:
        fh.write("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
    with open(os.path.join(dest, "etc", "group"), "w") as fh:
        fh.write("root:x:0:\nnobody:x:65534:\n")
    if libs_from:
        _run(["sh", os.path.join(ROOT, "packaging", "runtime-libs.sh"),
              os.path.join(libs_from, "NEEDS"), dest])
    return dest


def _mirror() -> tuple[str, str]:
    """(suite, mirror URI) of this Debian host's apt sources."""
    suite = "bookworm"
    try:
        with open("/etc/os-release") as fh:
            suite = re.search(r"^VERSION_CODENAME=(\S+)", fh.read(), re.M).group(1)
    except (OSError, AttributeError):
        pass
    texts = []
    for folder in ("/etc/apt/sources.list.d", "/etc/apt"):
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            continue
        for name in names:
            if name.endswith((".sources", ".list")):
                with open(os.path.join(folder, name), errors="replace") as fh:
                    texts.append(fh.read())
    for text in texts:
        for uri in re.findall(r"^URIs:\s*(\S+)", text, re.M) + re.findall(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)", text, re.M):
            if "security" not in uri:
                return suite, uri
    return suite, "http://deb.debian.org/debian"


def debian_python_tar(dest: str, cache: str | None = None) -> str:
    """mmdebstrap's minbase of this host's suite with python3, python3-venv and nginx, as a tar file.
    With `cache` (a folder), a tar made earlier there is used, and a new one is kept there."""
    kept = os.path.join(cache, "debian-python-nginx.tar") if cache else None
    if kept and os.path.exists(kept):
        shutil.copyfile(kept, dest)
        return dest
    if shutil.which("mmdebstrap") is None:
        raise RuntimeError("mmdebstrap is not installed (Debian: mmdebstrap)")
    suite, mirror = _mirror()
    # nginx too: the sidecar tests' app image (one mmdebstrap for both costs a few seconds).
    _run(["mmdebstrap", "--quiet", "--variant=minbase", "--include=python3,python3-venv,nginx-light",
          suite, dest, mirror])
    if kept:
        os.makedirs(cache, exist_ok=True)
        shutil.copyfile(dest, kept + ".part")
        os.replace(kept + ".part", kept)
    return dest


def wheels(dest: str, python_tag: str) -> str:
    """cfgsup built here with `pip wheel`, and wheels of its dependencies and its build backend
    for the image's Python (`python_tag` like "3.11"): `pip install --no-index` works inside."""
    os.makedirs(dest, exist_ok=True)
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    _run([*pip, "wheel", "--no-deps", "-w", dest, ROOT])
    cfgsup = [os.path.join(dest, n) for n in os.listdir(dest) if n.startswith("cfgsup-")]
    nodot = python_tag.replace(".", "")
    machine = os.uname().machine
    platforms = [a for tag in ("manylinux2014", "manylinux_2_17", "manylinux_2_28", "manylinux_2_31",
                               "manylinux_2_34") for a in ("--platform", f"{tag}_{machine}")]
    _run([*pip, "download", "-d", dest, "--only-binary=:all:", "--python-version", python_tag,
          "--implementation", "cp", "--abi", f"cp{nodot}", "--abi", "abi3", "--abi", "none",
          *platforms, *cfgsup, "setuptools>=61", "wheel"])
    return dest


def context(dest: str, bundle_dir: str | None = None, wheel_dir: str | None = None) -> str:
    """A build context like a clean checkout, plus dist/cfgsup and wheels/ when given."""
    ignore = shutil.ignore_patterns(".git", ".venv", "build", "dist", "wheels", "__pycache__",
                                    "*.egg-info", ".pytest_cache", ".hypothesis", ".benchmarks")
    shutil.copytree(ROOT, dest, ignore=ignore)
    if bundle_dir:
        shutil.copytree(bundle_dir, os.path.join(dest, "dist", "cfgsup"), symlinks=True)
    if wheel_dir:
        shutil.copytree(wheel_dir, os.path.join(dest, "wheels"))
    return dest


def build_all(pm, workdir: str, bundle_dir: str, cache: str | None = None) -> dict:
    """Every image the container tests use, built in Podman `pm` from `bundle_dir`:
        busybox   busybox-static only (no libc at all)
        glibc     busybox plus this host's copies of what the bundle NEEDS (no Python)
        nolibz    the same without libz.so.1 (what a user sees then)
        pybase    Debian minbase with python3 and nginx (mmdebstrap)
        pip       Dockerfile.example on pybase: cfgsup pip-installed from wheels, offline
        cfgsup    packaging/Containerfile on busybox, libraries from pybase
        bundled   Dockerfile.bundle.example: the bundle copied from `cfgsup` into `glibc`
    and `context`, the build context they were built from (a checkout with dist/ and wheels/).
    """
    names = {"bundle_dir": bundle_dir}
    names["busybox"] = pm.import_rootfs(busybox_rootfs(os.path.join(workdir, "busybox")),
                                        "localhost/cfgsup-test-busybox:1")
    glibc = busybox_rootfs(os.path.join(workdir, "glibc"), libs_from=bundle_dir)
    names["glibc"] = pm.import_rootfs(glibc, "localhost/cfgsup-test-glibc:1")
    os.unlink(os.path.join(glibc, "lib", "libz.so.1"))
    names["nolibz"] = pm.import_rootfs(glibc, "localhost/cfgsup-test-nolibz:1")
    tar = debian_python_tar(os.path.join(workdir, "debian.tar"), cache)
    names["pybase"] = pm.import_rootfs(tar, "localhost/cfgsup-test-pybase:1",
                                       changes=("ENV PATH=/usr/local/bin:/usr/bin:/bin",))
    tag = pm.text("run", "--rm", "--network", "none", names["pybase"], "python3", "-c",
                  "import sys; print('%d.%d' % sys.version_info[:2])")
    ctx = names["context"] = context(os.path.join(workdir, "context"), bundle_dir,
                                     wheels(os.path.join(workdir, "wheels"), tag))
    names["pip"] = pm.build(ctx, os.path.join(ctx, "Dockerfile.example"), "localhost/cfgsup-test-pip:1",
                            {"BASE": names["pybase"], "PIP_NO_INDEX": "1",
                             "PIP_FIND_LINKS": "/src/wheels"})
    names["cfgsup"] = pm.build(ctx, os.path.join(ctx, "packaging", "Containerfile"),
                               "localhost/cfgsup-test-cfgsup:1",
                               {"BASE": names["busybox"], "LIBS": names["pybase"]})
    names["bundled"] = pm.build(ctx, os.path.join(ctx, "Dockerfile.bundle.example"),
                                "localhost/cfgsup-test-bundled:1",
                                {"BASE": names["glibc"], "CFGSUP": names["cfgsup"]})
    return names
