"""The OS boundary: one object, so the unit tests can hand the machines a fake.

Everything that starts, signals or reaps a process, reads the watched paths or starts a thread
goes through here. The heavier imports (ctypes for inotify, the helper's shlex) happen only when
used.
"""
from __future__ import annotations

import contextlib
import os
import signal

from . import child as child_mod
from . import reaper
from .digest import snapshot


@contextlib.contextmanager
def quiet_threads():
    """Threads started inside inherit a mask blocking every forwarded signal, so the kernel
    delivers process signals to the main thread, the one waiting on the wake-up pipe."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, child_mod.FORWARDED | {signal.SIGCHLD})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class System:
    spawn_app = staticmethod(child_mod.spawn_app)
    send = staticmethod(child_mod.send)
    group_alive = staticmethod(child_mod.group_alive)
    reap = staticmethod(reaper.reap_all)
    snapshot = staticmethod(snapshot)
    isdir = staticmethod(os.path.isdir)

    def helper(self, purpose, command, env, timeout, now):
        from .actions import Helper

        return Helper(purpose, command, env, timeout, now)

    def watcher(self, include, exclude):
        from .watcher import InotifyWatcher

        return InotifyWatcher(include, exclude)

    def pinned_mount(self, path):
        from .watcher import pinned_mount

        return pinned_mount(path)

    def poll_signature(self, root, only):
        from .tree import poll_signature

        return poll_signature(root, only)

    def start_thread(self, target, *args):
        import threading

        thread = threading.Thread(target=target, args=args, daemon=True)
        with quiet_threads():
            thread.start()
