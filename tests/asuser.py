"""Run a command as another user, with the Python that runs the tests and this checkout reachable.

The tests often run from a Python under a directory other users cannot search (`/root/.pyenv`
behind a 0700 `/root`). `as_user()` then starts the command in a private mount namespace where
each such directory is covered by a tmpfs holding only bind mounts of what the command needs, so
nothing on the host changes. Where every path is reachable already it is plain `setpriv`.
"""
from __future__ import annotations

import functools
import os
import shlex
import stat
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _needed() -> list[str]:
    paths = {ROOT, sys.prefix, sys.base_prefix, os.path.dirname(os.path.realpath(sys.executable))}
    build = os.environ.get("CFGSUP_TEST_COMMAND")  # another build under test (the bundle)
    if build:
        paths.add(os.path.dirname(os.path.realpath(build.split()[0])))
    paths.update(p for p in sys.path if p and os.path.isdir(p))
    return sorted(os.path.realpath(p) for p in paths)


def _closed_ancestor(path: str) -> str | None:
    """The topmost directory on the way to `path` that other users cannot search."""
    parts = path.strip("/").split("/")
    for depth in range(1, len(parts)):
        prefix = "/" + "/".join(parts[:depth])
        if not os.stat(prefix).st_mode & stat.S_IXOTH:
            return prefix
    return None


@functools.lru_cache(maxsize=None)
def as_user(uid: int, gid: int, groups: tuple = ()) -> list[str]:
    """An argv prefix: `[*as_user(65534, 65534), "cmd", ...]` runs cmd as uid:gid."""
    setpriv = ["setpriv", f"--reuid={uid}", f"--regid={gid}",
               f"--groups={','.join(map(str, groups))}" if groups else "--clear-groups"]
    covers: dict[str, list[str]] = {}
    for path in _needed():
        closed = _closed_ancestor(path)
        if closed:
            covers.setdefault(closed, []).append(path)
    if not covers:
        return setpriv
    stage = tempfile.mkdtemp(prefix="cfgsup-asuser-")  # empty; a tmpfs goes over it in the namespace
    lines = ["set -e", f"mount -t tmpfs -o mode=0700 stage {shlex.quote(stage)}"]
    index = 0
    for closed, paths in sorted(covers.items()):
        keep = [p for p in paths if not any(p.startswith(o + "/") for o in paths if o != p)]
        staged = []
        for path in keep:
            index += 1
            spot = f"{stage}/{index}"
            lines += [f"mkdir {shlex.quote(spot)}", f"mount --bind {shlex.quote(path)} {shlex.quote(spot)}"]
            staged.append((path, spot))
        lines.append(f"mount -t tmpfs -o mode=0755 cover {shlex.quote(closed)}")
        for path, spot in staged:
            lines += [f"mkdir -p {shlex.quote(path)}", f"mount --bind {shlex.quote(spot)} {shlex.quote(path)}"]
    lines.append('exec "$@"')
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", "\n".join(lines), "as_user",
            *setpriv]
