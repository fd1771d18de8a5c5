"""The process entry point (`cfgsup`, `python -m supervisor`, the bundle): block signals first,
then import and run the command line.

As PID 1, the kernel drops a signal that has no handler yet. A TERM that arrives while Python
still imports click would be lost, and the container would run on until the runtime's SIGKILL.
A blocked signal is never dropped: it stays pending until the loop has installed its handlers
and sets an empty mask (Loop.install_signals), and is handled then. Only the interpreter's own
start-up, before this module runs, remains a window in which a signal is lost.
"""
from __future__ import annotations

import os
import signal
import sys


def block_signals() -> None:
    """Block every signal the loop will handle; the loop unblocks them with its handlers set."""
    from .child import FORWARDED  # os, signal and errno only: no cost worth a window

    signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED | {signal.SIGCHLD})


def main(argv: list[str] | None = None) -> int:
    block_signals()  # again in the bundle, where a PyInstaller runtime hook did it first
    settings = parse_apart(sys.argv[1:] if argv is None else argv)
    if isinstance(settings, int):
        return settings
    from .supervise import run

    return run(settings)


def entry() -> None:
    """The `cfgsup` command and `python -m supervisor`: run, then exit at once."""
    exit_now(main())


def exit_now(code: int) -> None:
    """Exit without the interpreter's teardown (unloading every module costs PID 1 milliseconds
    at every stop, and nothing is left to clean: every line was flushed as it was written)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def parse_apart(argv: list[str]):
    """Settings, or an exit code, from a short-lived child that parses the command line: click
    and what it imports (inspect, typing, uuid...: about 3 MiB, which Python never gives back)
    then never enter the memory of PID 1, which stays up as long as the container. Meanwhile
    the parent imports what it runs with. The Settings come back marshalled (plain values
    only); usage errors, --help and --version are printed by the child, whose code is kept."""
    import marshal

    read, write = os.pipe2(os.O_CLOEXEC)
    try:
        pid = os.fork()
    except OSError:  # out of processes: parse here, at the cost of the memory
        os.close(read)
        os.close(write)
        from .cli import parse

        return parse(argv)
    if pid == 0:
        code = 70  # EX_SOFTWARE: nothing to say, unless parsing itself went wrong
        try:
            os.close(read)
            from .cli import parse

            result = parse(argv)
            if isinstance(result, int):
                code = result
            else:
                data = memoryview(marshal.dumps(tuple(result)))
                while data:
                    data = data[os.write(write, data):]
                code = 0
        finally:
            exit_now(code)
    os.close(write)
    # While the child parses: what the parent needs next, in parallel (the run's modules, and
    # the C library's posix_spawn that every start of the app goes through).
    from . import child, supervise  # noqa: F401

    child._load_libc()

    chunks = []
    while True:
        chunk = os.read(read, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(read)
    _, status = os.waitpid(pid, 0)
    if chunks:
        from .settings import Settings

        return Settings(*marshal.loads(b"".join(chunks)))
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code
