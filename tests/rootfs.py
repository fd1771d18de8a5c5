"""A container root for the test pod (kubepod.py), planned on the host and built by pod.py:
steps that make a tmpfs look like an image's root, read-only, out of the host's own dirs.

- the host's system dirs (/usr, /etc, /var, ...) are bind-mounted read-only, links (/bin ->
  usr/bin) copied as links; /tmp, /run, /root, /home and /mnt are an image's empty dirs;
  /proc is the container's own, /dev the host's with a /dev/shm of its own, /sys read-only;
- the mounts (volumes, this checkout and the Python that runs cfgsup, stand-ins) go on top,
  parents first, read-only where asked;
- a mount point that does not exist under a bound host dir (/etc/tls) cannot be made there
  without writing to the host, so that dir is grafted instead: a tmpfs dir with each of the host
  dir's entries bind-mounted into it (read-only), where pod.py can then make the mount point.
"""
from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SYSTEM_DIRS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr", "etc", "var", "opt")
EMPTY_DIRS = {"tmp": 0o1777, "run": 0o755, "root": 0o700, "home": 0o755, "mnt": 0o755}


def root_steps(mounts: list[tuple[str, str, bool]]) -> list[dict]:
    """The steps pod.py takes to build a container root; `mounts` are (path, source, read_only)."""
    bound = {f"/{name}" for name in SYSTEM_DIRS if os.path.isdir(f"/{name}") and not os.path.islink(f"/{name}")}
    graft = set()  # host dirs that must become tmpfs dirs, to make a mount point in them
    for path, _src, _ro in mounts:
        parts = path.strip("/").split("/")
        if f"/{parts[0]}" not in bound or os.path.lexists(path):
            continue
        for depth in range(1, len(parts)):
            prefix = "/" + "/".join(parts[:depth])
            # pod.py mounts at root + path: a link on the way would lead out of the root.
            assert not os.path.islink(prefix), f"{path}: the test pod cannot mount through the link {prefix}"
            if not os.path.isdir(prefix):
                break
            graft.add(prefix)
    steps = []

    def copy_dir(path):
        steps.append({"op": "dir", "path": path, "mode": os.stat(path).st_mode & 0o7777})
        for name in sorted(os.listdir(path)):
            full = os.path.join(path, name)
            if full in graft:
                copy_dir(full)
            elif os.path.islink(full):
                steps.append({"op": "symlink", "path": full, "target": os.readlink(full)})
            elif os.path.isdir(full) or os.path.isfile(full):
                steps.append({"op": "bind", "path": full, "src": full, "ro": True})

    for name in SYSTEM_DIRS:
        path = f"/{name}"
        if os.path.islink(path):
            steps.append({"op": "symlink", "path": path, "target": os.readlink(path)})
        elif path in graft:
            copy_dir(path)
        elif path in bound:
            steps.append({"op": "bind", "path": path, "src": path, "ro": True})
    for name, mode in EMPTY_DIRS.items():  # an image's empty dirs; searchable when they hold a mount
        holds = any(path.startswith(f"/{name}/") for path, _src, _ro in mounts)
        steps.append({"op": "dir", "path": f"/{name}", "mode": mode | 0o555 if holds else mode})
    steps += [{"op": "proc", "path": "/proc"},
              {"op": "bind", "path": "/dev", "src": "/dev", "ro": False, "rec": True},
              {"op": "tmpfs", "path": "/dev/shm", "mode": 0o1777},  # the pod's own, as in a pod
              {"op": "bind", "path": "/sys", "src": "/sys", "ro": True}]
    for path, src, read_only in sorted(mounts, key=lambda m: m[0].count("/")):  # parents first
        steps.append({"op": "bind", "path": path, "src": src, "ro": read_only})
    return steps


def runtime_dirs() -> list[str]:
    """This checkout and the Python that runs cfgsup, where the system dirs do not show them."""
    dirs = {os.path.abspath(p) for p in (ROOT, sys.prefix, sys.base_prefix, *sys.path) if p and os.path.isdir(p)}
    system = tuple(f"/{name}/" for name in SYSTEM_DIRS)
    keep = [d for d in dirs if not (d + "/").startswith(system)]
    return sorted(d for d in keep if not any(d.startswith(o + "/") for o in keep))
