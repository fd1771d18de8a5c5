"""The `cfgsup` entry point. Its first act blocks the signals cfgsup forwards.

As PID 1, the kernel discards any signal whose action is the default, so a TERM that arrives
while the interpreter is still importing click would be lost. Blocked signals stay pending
instead, and the loop collects them once its handlers are in place. What remains is the window
before any of cfgsup's code runs: the interpreter's own start-up (see the README).
"""
import signal

# Every catchable signal except the ones that describe a fault in cfgsup itself (child.py keeps
# the same list, and imports more than this first step may).
_KEEP = {signal.SIGKILL, signal.SIGSTOP, signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE,
         signal.SIGILL, signal.SIGTRAP, signal.SIGSYS}
signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals() - _KEEP)


def main():
    from .cli import main as cli_main

    return cli_main()
