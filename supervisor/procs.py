"""Every process cfgsup starts, and the one stop that ends them all.

`Stop` is the requested shutdown: set once (a TERM or INT, or the app's end), never cleared, and
consulted by every transition of the app's lifecycle and of the change pipeline. `Processes` is
the only way to start a process, and it refuses once the stop was requested, so "nothing starts
after a stop" holds by construction. It hands each reaped pid to whoever started it; anything
else reaped is an orphan.
"""
from __future__ import annotations

import os
import signal


class Stop:
    __slots__ = ("reason", "signo")

    def __init__(self):
        self.reason: str | None = None  # why: a signal's name, or what ended the app
        self.signo = 0                  # the signal that asked for it (0: not a signal)

    def __bool__(self) -> bool:
        return self.reason is not None

    def request(self, reason: str, signo: int = 0) -> bool:
        """True the first time only: a second TERM changes nothing (no new deadline)."""
        if self.reason is not None:
            return False
        self.reason, self.signo = reason, signo
        return True


class Refused(Exception):
    """A process asked for after the stop was requested."""


class Processes:
    def __init__(self, system, stop: Stop, log):
        self.sys = system
        self.stop = stop
        self.log = log
        self.owners: dict = {}  # pid -> on_exit(status), for every live process we started
        self.leftovers: set = set()  # groups of helpers that exited and left processes in them
        self.orphans = 0

    def spawn_app(self, argv, env, previous: int, on_exit) -> int:
        if self.stop:
            raise Refused
        pid = self.sys.spawn_app(argv, env, previous)
        self.owners[pid] = on_exit
        return pid

    def start_helper(self, purpose, command, env, timeout, now, on_exit):
        if self.stop:
            raise Refused
        helper = self.sys.helper(purpose, command, env, timeout, now)

        def exited(status, pid=helper.pid):
            if self.sys.group_alive(pid):  # it left processes behind in its group
                self.leftovers.add(pid)
            on_exit(status)

        self.owners[helper.pid] = exited
        return helper

    def kill_leftovers(self) -> None:
        """At the end: what helpers left running in their groups goes too. Only a group that
        still holds one of our own children (as a subreaper, cfgsup adopts them) is signalled:
        a group id that was given up may have been given to someone else since."""
        me = str(os.getpid())
        for pgid in sorted(self.leftovers):
            if any(ppid == me for ppid in _group_parents(pgid)):
                self.sys.send(pgid, signal.SIGKILL, True)
        self.leftovers.clear()

    def reap(self) -> bool:
        """Collect every exited child; True if an orphan was among them."""
        from .reaper import describe

        orphans = False
        for pid, status in self.sys.reap():
            owner = self.owners.pop(pid, None)
            if owner is not None:
                owner(status)
            else:
                orphans = True
                self.orphans += 1
                self.log.debug(f"reaped orphan {pid} ({describe(status)})", event="reap", orphan_pid=pid)
        return orphans

    def alive(self) -> bool:
        return bool(self.owners)


def _group_parents(pgid: int) -> list[str]:
    """The parent pids of the processes in group `pgid`, from /proc."""
    parents = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return parents
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                fields = fh.read().rpartition(b")")[2].split()
        except OSError:
            continue
        if len(fields) > 3 and fields[2] == str(pgid).encode():
            parents.append(fields[1].decode())
    return parents
