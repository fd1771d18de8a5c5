"""inotify(7) through ctypes: one non-blocking fd, watches by path, events decoded with struct.

Not watchdog's module: every watchdog module that reaches inotify (`watchdog.observers.inotify_c`
in watchdog 6 and 7 alike) lives in the `watchdog.observers` package, whose import pulls in its
thread and event machinery (about 60 modules, 5 MiB of RSS, 40 ms here). ctypes itself is loaded
already: child.py spawns the app through it, before any watch is set up.
"""
from __future__ import annotations

import errno
import os
import struct

# <sys/inotify.h>
IN_MODIFY, IN_ATTRIB, IN_CLOSE_WRITE = 0x2, 0x4, 0x8
IN_MOVED_FROM, IN_MOVED_TO, IN_CREATE, IN_DELETE = 0x40, 0x80, 0x100, 0x200
IN_DELETE_SELF, IN_MOVE_SELF = 0x400, 0x800
IN_UNMOUNT, IN_Q_OVERFLOW, IN_IGNORED = 0x2000, 0x4000, 0x8000
IN_ONLYDIR, IN_DONT_FOLLOW, IN_EXCL_UNLINK = 0x01000000, 0x02000000, 0x04000000
IN_ISDIR = 0x40000000
IN_NONBLOCK, IN_CLOEXEC = os.O_NONBLOCK, os.O_CLOEXEC

# What can mean new content, and nothing else: no IN_ACCESS, IN_OPEN or IN_CLOSE_NOWRITE, so the
# app reading its config never wakes cfgsup. ATTRIB: a chmod can make an unreadable file readable.
# Only directories are watched (IN_ONLYDIR), never through a link swapped in meanwhile
# (IN_DONT_FOLLOW), and a file unlinked while a process still writes it says nothing more
# (IN_EXCL_UNLINK).
MASK = (IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_CLOSE_WRITE | IN_MODIFY | IN_ATTRIB
        | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR | IN_DONT_FOLLOW | IN_EXCL_UNLINK)

HEADER = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len; then len bytes of name
                                # (NUL-padded), read by watcher.py
BUFFER = 65536                  # one read; the largest event is 16 + NAME_MAX + 1 bytes


class Inotify:
    """One inotify instance. Raises OSError when it cannot be made (the instance limit and the
    fd limit both say EMFILE; ENOSYS without inotify) or a watch cannot be added."""

    def __init__(self):
        import ctypes

        self._ctypes = ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        try:
            init1, self._add, self._rm = libc.inotify_init1, libc.inotify_add_watch, libc.inotify_rm_watch
        except AttributeError:
            raise OSError(errno.ENOSYS, "the C library has no inotify") from None
        init1.argtypes, init1.restype = [ctypes.c_int], ctypes.c_int
        self._add.argtypes, self._add.restype = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32], ctypes.c_int
        self._rm.argtypes, self._rm.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        self.fd = init1(IN_NONBLOCK | IN_CLOEXEC)
        if self.fd < 0:
            self._raise()

    def _raise(self, path: str | None = None):
        code = self._ctypes.get_errno()
        message = os.strerror(code)
        if code == errno.ENOSPC:  # "No space left on device" alone would mislead
            message += " (the inotify watch limit)"
        raise OSError(code, message, path)

    def add(self, path: str, mask: int = MASK) -> int:
        """The watch descriptor of directory `path` (the same one again for a directory already
        watched, by this path or another)."""
        wd = self._add(self.fd, os.fsencode(path), mask)
        if wd < 0:
            self._raise(path)
        return wd

    def remove(self, wd: int) -> None:
        """Stop watching; a watch the kernel already dropped (its directory deleted) is no error."""
        self._rm(self.fd, wd)

    def read(self) -> bytes:
        """What is queued, up to BUFFER bytes of whole events; b"" when nothing is."""
        try:
            return os.read(self.fd, BUFFER)
        except (BlockingIOError, InterruptedError):
            return b""

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

