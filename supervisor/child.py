"""Starting and signalling processes: the app and the short helper commands (validate, reload).

Every process starts with posix_spawn in its own process group, with an empty blocked-signal mask
and default dispositions, and only fds 0, 1, 2 (everything else cfgsup holds is close-on-exec).
posix_spawn reports exec failures (not found, not executable) to us directly, which gives 127/126.
"""
from __future__ import annotations

import errno
import os
import signal

# Signals that cfgsup forwards to the app. Not forwarded: KILL/STOP (cannot be caught), CHLD
# (ours), the synchronous fault signals (they describe a fault in cfgsup itself), PIPE/XFSZ (raised
# by cfgsup's own writes) and TTIN/TTOU (raised by cfgsup's own terminal I/O; cfgsup ignores them).
NOT_FORWARDED = {
    signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD,
    signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL, signal.SIGTRAP, signal.SIGSYS,
    signal.SIGPIPE, signal.SIGXFSZ, signal.SIGTTIN, signal.SIGTTOU,
}
FORWARDED = frozenset(s for s in signal.valid_signals() if s not in NOT_FORWARDED)
# Dispositions reset to default in every spawned process (cfgsup ignores PIPE/XFSZ/TTIN/TTOU and
# ignored dispositions would otherwise survive exec).
RESET_IN_CHILD = tuple(s for s in signal.valid_signals() if s not in (signal.SIGKILL, signal.SIGSTOP))


class SpawnError(Exception):
    """The command could not be started; `code` is the shell's code for it (127 or 126).
    `transient`: out of processes or memory, worth another try later."""

    def __init__(self, code: int, message: str, transient: bool = False, error: int = 0):
        super().__init__(message)
        self.code = code
        self.transient = transient
        self.errno = error  # the OS's error number, where there is one (E2BIG: env too large)


def _spawn(argv, env, file_actions=()):
    try:
        return os.posix_spawnp(
            argv[0], argv, env,
            file_actions=list(file_actions),
            setpgroup=0,
            setsigmask=(),
            setsigdef=RESET_IN_CHILD,
        )
    except FileNotFoundError:
        raise SpawnError(127, f"{argv[0]}: command not found") from None
    except NotADirectoryError:
        raise SpawnError(127, f"{argv[0]}: command not found") from None
    except PermissionError:
        raise SpawnError(126, f"{argv[0]}: permission denied (not executable)") from None
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.ENOMEM):
            raise SpawnError(126, f"{argv[0]}: cannot start now: {exc.strerror}", transient=True) from None
        if exc.errno == errno.ENOEXEC:
            raise SpawnError(126, f"{argv[0]}: cannot execute (not a program and no #! line)") from None
        raise SpawnError(126, f"{argv[0]}: cannot execute: {exc.strerror}", error=exc.errno) from None


def spawn_app(argv, env, previous: int = 0) -> int:
    """Start the app. When cfgsup (or the app it replaces, `previous`) holds the terminal on
    stdin, the new app's group takes it over, so that Ctrl-C and friends reach the app; a cfgsup
    started in the background leaves the terminal to whoever has it."""
    try:
        foreground = os.tcgetpgrp(0) in (os.getpgrp(), previous)
    except OSError:
        foreground = False  # no controlling terminal: the normal case in a container
    pid = _spawn(argv, env)
    if foreground:
        try:
            os.tcsetpgrp(0, pid)  # cfgsup ignores SIGTTOU, so this never stops cfgsup itself
        except OSError:
            pass
    return pid


def spawn_helper(argv, env, output_fd: int) -> int:
    """Start a helper command with stdin from /dev/null and stdout+stderr into `output_fd`."""
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_DUP2, output_fd, 1),
        (os.POSIX_SPAWN_DUP2, output_fd, 2),
    ]
    return _spawn(argv, env, actions)


def send(pid: int, signo: int, group: bool) -> bool:
    """Signal the process (or its group, whose id is its pid). False if it is already gone."""
    try:
        if group:
            os.killpg(pid, signo)
        else:
            os.kill(pid, signo)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return False


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def seal_inherited_fds() -> None:
    """Mark every fd above 2 that cfgsup inherited close-on-exec, so no child ever gets one."""
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        return
    for fd in fds:
        if fd > 2:
            try:
                os.set_inheritable(fd, False)
            except OSError:
                pass  # the fd listdir itself used, already closed
