"""A fake OS for the machines' unit tests: no processes, no files, no real time."""
from __future__ import annotations

import errno
import io
import os
import queue
import signal

from supervisor.child import SpawnError
from kubelet import KubeletVolume
from supervisor.digest import MISSING, Snapshot
from supervisor.digest import snapshot as real_snapshot
from supervisor.logs import Log
from supervisor.settings import Settings
from supervisor.supervise import Supervisor
from supervisor.watcher import COMMIT


def exited(code):
    return code << 8


def killed(signo):
    return signo


class FakeHelper:
    def __init__(self, pid, purpose, command, env, timeout, now):
        self.pid, self.purpose, self.command, self.env = pid, purpose, command, env
        self.deadline = now + timeout
        self.timed_out = False

    def tail(self):
        return "bad config line 3"


class FakeWatcher:
    """supervisor.watcher.InotifyWatcher's interface: `fd` is polled by the loop, `read()` returns
    the next note a test queued in `pending`."""

    fd = 1000  # never really polled: the harness drives the loop without blocking

    def __init__(self, fail_adds=(), error=None):
        self.armed = {}           # index -> the directories it watches
        self.fail_adds = fail_adds
        # what adding one of fail_adds raises; by default what the inotify watch limit says
        self.error = error or OSError(errno.ENOSPC, "No space left on device")
        self.closed = False
        self.pending = []         # (note, index), one per read(): one per wake-up of the loop

    def arm(self, index, snap):
        if any(d in self.fail_adds for d in set(snap.dirs) - self.armed.get(index, set())):
            self.armed.pop(index, None)
            raise self.error
        self.armed[index] = set(snap.dirs)
        return False  # fake content never moves between a read and a watch

    def disarm(self, index):
        self.armed.pop(index, None)

    def read(self):
        return {self.pending.pop(0)} if self.pending else set()

    def close(self):
        self.closed = True


class FakeSystem:
    def __init__(self, inotify_fails=False):
        self.next_pid = 100
        self.spawned = []          # (pid, env)
        self.sent = []             # (pid, signo, group)
        self.alive_groups = set()
        self.pending = []
        self.content = {}          # root -> digest
        self.entries = {}          # root -> {name: digest}, where a test wants many names
        self.helpers = []
        self.threads = []
        self.inotify_fails = inotify_fails
        self.hashes = 0
        self.spawn_failures = 0
        self.env_limit = None      # spawning with a larger environment fails with E2BIG
        self.hash_failures = 0
        self.fail_adds = ()
        self.fail_error = None
        self.subdirs = {}          # root -> more directories its snapshot read

    def _pid(self):
        self.next_pid += 1
        return self.next_pid

    def spawn_app(self, argv, env, previous=0):
        if self.spawn_failures:
            self.spawn_failures -= 1
            raise SpawnError(126, "app: cannot start now: Resource temporarily unavailable", transient=True)
        if self.env_limit is not None and sum(len(k) + len(v) for k, v in env.items()) > self.env_limit:
            raise SpawnError(126, "app: cannot execute: Argument list too long", error=errno.E2BIG)
        pid = self._pid()
        self.spawned.append((pid, env))
        self.alive_groups.add(pid)
        return pid

    def send(self, pid, signo, group):
        self.sent.append((pid, signo, group))
        return True

    def group_alive(self, pgid):
        return pgid in self.alive_groups

    def reap(self):
        reaped, self.pending = self.pending, []
        return reaped

    def snapshot(self, root, only, include, exclude):
        if self.hash_failures:
            self.hash_failures -= 1
            raise OSError(errno.EMFILE, "Too many open files")
        self.hashes += 1
        digest = self.content.get(root, MISSING)
        unreadable = ("secret.key",) if digest.startswith("unreadable") else ()
        entries = {} if digest == MISSING else self.entries.get(root, {"key": digest})
        if root in self.entries and digest != MISSING:
            entries = {name: d + digest for name, d in entries.items()}  # every name changes
        if digest == MISSING:
            return Snapshot(MISSING, {}, (), False)  # as a deleted directory: nothing to watch
        return Snapshot(digest, entries, unreadable, True, (root, *self.subdirs.get(root, ())))

    def helper(self, purpose, command, env, timeout, now):
        helper = FakeHelper(self._pid(), purpose, command, env, timeout, now)
        self.helpers.append(helper)
        self.alive_groups.add(helper.pid)
        return helper

    def watcher(self, include, exclude):
        if self.inotify_fails:
            raise OSError(24, "Too many open files")
        self.the_watcher = FakeWatcher(self.fail_adds, self.fail_error)
        return self.the_watcher

    def pinned_mount(self, path):
        return False

    def isdir(self, root):
        return root in self.content

    def poll_signature(self, root, only):
        return ("kubelet", self.content.get(root))

    def start_thread(self, target, *args):
        self.threads.append((target, args))


class Harness:
    """A Supervisor on the fake OS, driven by hand: events in, `drain()` runs the loop."""

    def __init__(self, system=None, **options):
        options.setdefault("command", ("app",))
        self.settings = Settings(**options)
        self.sys = system or FakeSystem()
        for path in self.settings.watches:
            self.sys.content.setdefault(path, "v1")
        self.now = [1000.0]
        self.events = queue.SimpleQueue()
        self.log_stream = io.StringIO()
        self.sup = Supervisor(self.settings, Log(10, "text", self.log_stream), self.sys,
                              clock=lambda: self.now[0], events=self.events)
        self.code = self.sup.prepare()
        if self.settings.watches:
            self.advance(0.05)  # the watches are set up shortly after the app started
        self.drain()

    @property
    def app(self):
        return self.sup.app

    @property
    def changes(self):
        return self.sup.changes

    @property
    def child(self):
        return self.sup.app.pid

    @property
    def helper(self):
        changes = self.sup.changes
        command = changes.command or changes.probation.command or changes.modes.command
        return command.helper if command is not None else None

    @property
    def exit_code(self):
        return self.sup.app.code if self.sup.finished() else None

    def drain(self):
        for _ in range(50):
            self.sup.loop.step(block=False)
            if self.events.empty():
                return

    def advance(self, seconds):
        self.now[0] += seconds
        self.drain()

    def signal(self, signo):
        self.events.put(("signal", signo))
        self.drain()

    def exit(self, pid, status):
        self.sys.alive_groups.discard(pid)
        self.sys.pending.append((pid, status))
        self.events.put(("reap",))
        self.drain()

    def note(self, note, index=0):
        """What the inotify watcher would say next (watcher.COMMIT, CHANGE, GONE, ...); the loop
        reads it from the watcher's fd."""
        self.sys.the_watcher.pending.append((note, index))
        self.events.put(("fd", FakeWatcher.fd, 1))

    def swap(self, content, index=0):
        self.sys.content[self.settings.watches[index]] = content
        self.note(COMMIT, index)
        self.drain()

    def webhook_result(self, ok, detail="", index=-1):
        """What the webhook thread does when it is done: post its result."""
        _target, args = self.sys.threads[index]
        args[-1](ok, detail)
        self.drain()

    def log(self):
        return self.log_stream.getvalue()


class FsSystem(FakeSystem):
    """Fake processes on real files, for --stage, which copies and publishes real directories.
    It records what the app was started or signalled on: DEST's app.conf at that moment."""

    def __init__(self, dest):
        super().__init__()
        self.dest = dest
        self.ran = []             # (how, content) each time the app was started or signalled

    def _app_sees(self):
        try:
            with open(os.path.join(self.dest, "app.conf")) as fh:
                return fh.read()
        except OSError:
            return None

    def spawn_app(self, argv, env, previous=0):
        pid = super().spawn_app(argv, env, previous)
        self.ran.append(("start", self._app_sees()))
        return pid

    def send(self, pid, signo, group):
        if signo == signal.SIGHUP and pid in [p for p, _ in self.spawned]:
            self.ran.append(("signal", self._app_sees()))
        return super().send(pid, signo, group)

    def helper(self, purpose, command, env, timeout, now):
        if purpose == "reload":  # exec mode: the reload command makes the app read its config
            self.ran.append(("reload", self._app_sees()))
        return super().helper(purpose, command, env, timeout, now)

    def snapshot(self, root, only=None, include=(), exclude=()):
        self.hashes += 1
        return real_snapshot(root, only, include, exclude)

    isdir = staticmethod(os.path.isdir)

    def poll_signature(self, root, only):
        return ("kubelet", os.readlink(os.path.join(root, "..data")))


class StagedHarness(Harness):
    """A Supervisor with `--stage SRC:DEST` over real directories, processes faked."""

    def __init__(self, tmp_path, payload=None, **options):
        self.volume = KubeletVolume(tmp_path / "src", payload or {"app.conf": "v1"})
        dest = str(tmp_path / "dest")
        options.setdefault("min_uptime", 10.0)
        super().__init__(FsSystem(dest), stage=((self.volume.path, dest),),
                         watches=(self.volume.path,), **options)

    def swap(self, content, index=0):
        if self.volume.write({"app.conf": content}):
            self.note(COMMIT, index)
            self.drain()

    def published(self):
        return self.sys._app_sees()
