"""The container runtime's part of a test pod (see kubepod.py), run as root inside namespaces
that `unshare`/`nsenter` made:

    pod.py pause          the pod's first process: brings up `lo` in the pod's fresh network
                          namespace, reaps what is re-parented to it, waits to be killed
    pod.py run SPEC.json  one container: builds its root on a tmpfs from the SPEC's steps
                          (bind mounts of the host's system dirs and of the pod's volumes),
                          makes the root read-only, hands stdio to the container's user,
                          chroots into the root and execs the SPEC's argv
                          (setpriv ... -- the container's command line) with the SPEC's env

Runtime failures are one line on stderr and exit 125, as a container runtime's are.
"""
from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import stat
import struct
import sys

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18

_libc = ctypes.CDLL(None, use_errno=True)


def mount(source, target, fstype, flags, data=None):
    enc = (lambda s: s.encode() if s is not None else None)
    if _libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source} on {target}: {os.strerror(err)}")


def bind(source, target, read_only, recursive=False):
    if not os.path.lexists(target):
        os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
        if os.path.isdir(source):
            os.mkdir(target, 0o755)
        else:
            os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o644))
    mount(source, target, None, MS_BIND | (MS_REC if recursive else 0))
    if read_only:  # a bind mount becomes read-only only by a second, remounting call
        mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)


def build_root(root, steps):
    mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755")
    for step in steps:
        target = root + step["path"]
        kind = step["op"]
        if kind == "dir":
            os.makedirs(target, exist_ok=True)
            os.chmod(target, step["mode"])
        elif kind == "symlink":
            os.symlink(step["target"], target)
        elif kind == "bind":
            bind(step["src"], target, step["ro"], step.get("rec", False))
        elif kind == "tmpfs":
            mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, f"mode={step['mode']:o}")
        elif kind == "proc":
            os.makedirs(target, exist_ok=True)
            mount("proc", target, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        else:
            raise ValueError(f"unknown step {kind!r}")
    mount(None, root, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)


def run(spec_path):
    with open(spec_path) as fh:
        spec = json.load(fh)
    mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing done here leaks to the host
    build_root(spec["root"], spec["steps"])
    uid, gid = spec["stdio_owner"]
    for fd in (0, 1, 2):  # as runc does, so the container's user can reopen /dev/stdout
        try:
            if not stat.S_ISCHR(os.fstat(fd).st_mode):
                os.fchown(fd, uid, gid)
        except OSError:
            pass
    os.chroot(spec["root"])
    os.chdir(spec.get("cwd", "/"))
    os.execve(spec["argv"][0], spec["argv"], spec["env"])


def loopback_up():
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    import fcntl

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sh14x", b"lo", 0)
        flags = struct.unpack("16sh14x", fcntl.ioctl(sock, siocgifflags, request))[1]
        fcntl.ioctl(sock, siocsifflags, struct.pack("16sh14x", b"lo", flags | iff_up))


def pause():
    loopback_up()

    def reap(_signo, _frame):
        try:
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        except ChildProcessError:
            pass

    signal.signal(signal.SIGCHLD, reap)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    os.write(1, b"pause ready\n")
    while True:
        signal.pause()


def main(argv):
    try:
        if argv[1:2] == ["pause"]:
            pause()
        elif argv[1:2] == ["run"] and len(argv) == 3:
            run(argv[2])
        else:
            raise ValueError("usage: pod.py pause | pod.py run SPEC.json")
    except (OSError, ValueError, KeyError) as exc:
        sys.stderr.write(f"pod runtime: {exc}\n")
        return 125
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
