"""Starting and signalling processes: the app and the short helper commands (validate, reload).

Every process starts with posix_spawn in its own process group, with an empty blocked-signal mask
and every disposition at its default, and only fds 0, 1, 2 (everything else cfgsup holds is
close-on-exec). posix_spawn reports exec failures (not found, not executable) to us directly,
which gives 127/126.

posix_spawn is called through ctypes rather than os.posix_spawnp: glibc sets its two internal
signals (32 and 33) to SIG_IGN in the child unless they are in the spawn's "default" set, ignored
dispositions survive exec, and os.posix_spawnp builds that set with sigaddset(), which refuses
them. Here the set is written bit by bit. Without ctypes, os.posix_spawnp is the fallback.
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


# Every signal whose disposition the child resets, as raw numbers: 1 to NSIG-1 (the real-time
# signals and glibc's internal 32 and 33 included), except KILL and STOP, which cannot be set.
_ALL_SIGNALS = tuple(s for s in range(1, signal.NSIG) if s not in (signal.SIGKILL, signal.SIGSTOP))
_SPAWN_FLAGS = 0x02 | 0x04 | 0x08  # POSIX_SPAWN_SETPGROUP | SETSIGDEF | SETSIGMASK (glibc, musl)
_libc = None


def _load_libc():
    """The C library's posix_spawn functions, with their argument types; None without ctypes."""
    global _libc
    if _libc is None:
        try:
            import ctypes
        except ImportError:
            _libc = False
            return None
        try:
            lib = ctypes.CDLL(None, use_errno=True)
        except OSError:
            _libc = False
            return None
        P, I = ctypes.c_void_p, ctypes.c_int
        for name, args in (
            ("posix_spawnattr_init", [P]), ("posix_spawnattr_destroy", [P]),
            ("posix_spawnattr_setflags", [P, ctypes.c_short]),
            ("posix_spawnattr_setpgroup", [P, I]),
            ("posix_spawnattr_setsigmask", [P, P]), ("posix_spawnattr_setsigdefault", [P, P]),
            ("posix_spawn_file_actions_init", [P]), ("posix_spawn_file_actions_destroy", [P]),
            ("posix_spawn_file_actions_addopen", [P, I, ctypes.c_char_p, I, ctypes.c_uint]),
            ("posix_spawn_file_actions_adddup2", [P, I, I]),
            ("posix_spawnp", [P, ctypes.c_char_p, P, P, P, P]),
        ):
            func = getattr(lib, name, None)
            if func is None:  # a C library without it: use os.posix_spawnp
                _libc = False
                return None
            func.argtypes, func.restype = args, I
        _libc = (ctypes, lib)
    return _libc or None


def _c_strings(ctypes, items):
    encoded = [os.fsencode(item) for item in items]
    if any(b"\0" in item for item in encoded):
        raise ValueError("embedded null byte")
    return (ctypes.c_char_p * (len(encoded) + 1))(*encoded, None)


def _posix_spawnp(argv, env, file_actions) -> int:
    """posix_spawnp(3) with its own process group, an empty mask and every signal at default."""
    loaded = _load_libc()
    if loaded is None:  # no ctypes in this Python: signals 32 and 33 stay ignored in the child
        return os.posix_spawnp(argv[0], argv, env, file_actions=list(file_actions), setpgroup=0,
                               setsigmask=(), setsigdef=RESET_IN_CHILD)
    ctypes, lib = loaded
    c_argv = _c_strings(ctypes, argv)
    c_env = _c_strings(ctypes, [f"{key}={value}" for key, value in env.items()])
    bits = ctypes.sizeof(ctypes.c_ulong) * 8
    empty, default = (ctypes.c_ulong * (1024 // bits))(), (ctypes.c_ulong * (1024 // bits))()
    for signo in _ALL_SIGNALS:  # sigset_t's layout on Linux: bit signo-1, in unsigned longs
        default[(signo - 1) // bits] |= 1 << ((signo - 1) % bits)
    # Opaque C structs (336 and 80 bytes in glibc): room to spare, aligned for pointers.
    attr, actions = (ctypes.c_void_p * 128)(), (ctypes.c_void_p * 64)()
    pid = ctypes.c_int()
    lib.posix_spawnattr_init(attr)
    lib.posix_spawn_file_actions_init(actions)
    try:
        for call in (lib.posix_spawnattr_setflags(attr, _SPAWN_FLAGS),
                     lib.posix_spawnattr_setpgroup(attr, 0),
                     lib.posix_spawnattr_setsigmask(attr, empty),
                     lib.posix_spawnattr_setsigdefault(attr, default)):
            if call:
                raise OSError(call, os.strerror(call))
        for action in file_actions:
            if action[0] == os.POSIX_SPAWN_OPEN:
                _, fd, path, flags, mode = action
                rc = lib.posix_spawn_file_actions_addopen(actions, fd, os.fsencode(path), flags, mode)
            else:
                _, fd, target = action
                rc = lib.posix_spawn_file_actions_adddup2(actions, fd, target)
            if rc:
                raise OSError(rc, os.strerror(rc))
        rc = lib.posix_spawnp(ctypes.byref(pid), c_argv[0], actions, attr, c_argv, c_env)
    finally:
        lib.posix_spawn_file_actions_destroy(actions)
        lib.posix_spawnattr_destroy(attr)
    if rc:
        raise OSError(rc, os.strerror(rc))
    return pid.value


def _shown(name: str, limit: int = 120) -> str:
    """A command name fit for one bounded log line: no control characters, not too long."""
    if not name.isprintable():
        name = name.encode("unicode_escape", "backslashreplace").decode("ascii")
    return name if len(name) <= limit else f"{name[:limit - 30]}...{name[-20:]} ({len(name)} characters)"


def _spawn(argv, env, file_actions=()):
    name = argv[0]
    shown = _shown(name)
    if not name:
        raise SpawnError(127, "empty command name")
    if "\0" in name:
        raise SpawnError(127, f"{shown}: command name contains a NUL byte (no file can have it)")
    try:
        return _posix_spawnp(argv, env, file_actions)
    except ValueError:  # NUL in an argument or a variable: never from a real command line
        raise SpawnError(126, f"{shown}: an argument or environment variable contains a NUL byte") from None
    except FileNotFoundError:
        if "/" in name and os.path.islink(name):
            raise SpawnError(127, f"{shown}: a symlink to a missing file ({_shown(os.readlink(name))})") from None
        raise SpawnError(127, f"{shown}: command not found") from None
    except NotADirectoryError:
        raise SpawnError(127, f"{shown}: command not found (a part of the path is not a directory)") from None
    except PermissionError:
        if "/" in name and os.path.isdir(name):
            raise SpawnError(126, f"{shown}: is a directory") from None
        raise SpawnError(126, f"{shown}: permission denied (not executable)") from None
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:  # no file can have that name: as good as not found
            raise SpawnError(127, f"{shown}: command not found (name too long: {exc.strerror})") from None
        if exc.errno in (errno.EAGAIN, errno.ENOMEM):
            raise SpawnError(126, f"{shown}: cannot start now: {exc.strerror}", transient=True) from None
        if exc.errno == errno.ENOEXEC:
            raise SpawnError(126, f"{shown}: cannot execute (not a program and no #! line)") from None
        raise SpawnError(126, f"{shown}: cannot execute: {exc.strerror}", error=exc.errno) from None


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
