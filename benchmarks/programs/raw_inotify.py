"""The raw-inotify floor: the least any watcher in Python can do per kubelet swap.

    raw_inotify.py PID DIR...

One inotify fd (ctypes inotify_init1 / inotify_add_watch), one blocking read() loop in the main
thread, no hashing: SIGUSR1 to PID when `..data` is moved into a watched directory. It subscribes
to the same events cfgsup's watcher does, so it reads (and skips) as many events per swap.
"""
import ctypes
import os
import signal
import struct
import sys

IN_MODIFY, IN_ATTRIB, IN_CLOSE_WRITE = 0x2, 0x4, 0x8
IN_MOVED_FROM, IN_MOVED_TO, IN_CREATE, IN_DELETE = 0x40, 0x80, 0x100, 0x200
IN_DELETE_SELF, IN_MOVE_SELF = 0x400, 0x800
IN_CLOEXEC = 0o2000000
MASK = (IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
        | IN_DELETE_SELF | IN_MOVE_SELF)
HEADER = struct.Struct("iIII")  # wd, mask, cookie, len (then len bytes of NUL-padded name)

libc = ctypes.CDLL(None, use_errno=True)
pid = int(sys.argv[1])
fd = libc.inotify_init1(IN_CLOEXEC)
if fd < 0:
    sys.exit(f"inotify_init1: {os.strerror(ctypes.get_errno())}")
for path in sys.argv[2:]:
    if libc.inotify_add_watch(fd, os.fsencode(path), MASK) < 0:
        sys.exit(f"inotify_add_watch {path}: {os.strerror(ctypes.get_errno())}")
print("watching", flush=True)
unpack, size, kill, usr1 = HEADER.unpack_from, HEADER.size, os.kill, signal.SIGUSR1
while True:
    buf = os.read(fd, 65536)
    offset = 0
    while offset < len(buf):
        _wd, mask, _cookie, length = unpack(buf, offset)
        name = buf[offset + size:offset + size + length].rstrip(b"\0")
        offset += size + length
        if mask & IN_MOVED_TO and name == b"..data":
            kill(pid, usr1)
