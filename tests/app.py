"""A test app: says `ready`, then reports every signal it gets, one line each.

    app.py [--ignore-term] [--grandchild] [--exit-on-term]
--ignore-term   ignore SIGTERM (and so does its grandchild)
--grandchild    start a grandchild in the same process group that also reports signals
"""
import os
import signal
import sys
import time

SKIP = {signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD}


def report(signo, _frame):
    name = signal.Signals(signo).name if signo in signal.Signals._value2member_map_ else str(signo)
    os.write(1, f"{ROLE} got {name}\n".encode())
    if signo in (signal.SIGTERM, signal.SIGINT) and "--ignore-term" not in sys.argv:
        sys.exit(0)


ROLE = "child"
if "--grandchild" in sys.argv and os.fork() == 0:
    ROLE = "grandchild"
for signo in signal.valid_signals():
    if signo not in SKIP:
        try:
            signal.signal(signo, report)
        except (OSError, ValueError):
            pass
if "--ignore-term" in sys.argv:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
os.write(1, f"{ROLE} ready pid={os.getpid()} changed={os.environ.get('CFGSUP_CHANGED', '')}\n".encode())
time.sleep(120)  # signal handlers run during the sleep; a test never needs the app longer
