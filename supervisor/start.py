"""The process entry point (`cfgsup`, `python -m supervisor`, the bundle): block signals first,
then import and run the command line.

As PID 1, the kernel drops a signal that has no handler yet. A TERM that arrives while Python
still imports click would be lost, and the container would run on until the runtime's SIGKILL.
A blocked signal is never dropped: it stays pending until the loop has installed its handlers
and sets an empty mask (Loop.install_signals), and is handled then. Only the interpreter's own
start-up, before this module runs, remains a window in which a signal is lost.
"""
from __future__ import annotations

import signal


def block_signals() -> None:
    """Block every signal the loop will handle; the loop unblocks them with its handlers set."""
    from .child import FORWARDED  # os, signal and errno only: no cost worth a window

    signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED | {signal.SIGCHLD})


def main(argv: list[str] | None = None) -> int:
    block_signals()  # again in the bundle, where a PyInstaller runtime hook did it first
    from .cli import main as cli_main

    return cli_main(argv)
