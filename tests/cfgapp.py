"""A test app that reads its config at start (and on HUP) and says what it serves.

    cfgapp.py DIR
reads DIR/app.conf: prints `serving <content> pid=<pid>`; content with `crash` in it makes it
exit 3 at once, as an app does that cannot run on its config; on HUP it reads it again and
prints `reloaded <content>` (or exits 3 on a crashing one). It exits 0 on TERM.
"""
import os
import signal
import sys
import time

CONF = os.path.join(sys.argv[1], "app.conf")


def load(verb):
    try:
        with open(CONF) as fh:
            content = fh.read().strip()
    except OSError as exc:
        content = f"unreadable ({exc.strerror})"
    if "crash" in content:
        os.write(1, f"crashing on {content}\n".encode())
        os._exit(3)
    os.write(1, f"{verb} {content} pid={os.getpid()}\n".encode())


def on_hup(_signo, _frame):
    load("reloaded")


signal.signal(signal.SIGHUP, on_hup)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
load("serving")
deadline = time.monotonic() + 120  # a test never needs the app longer
while time.monotonic() < deadline:
    time.sleep(deadline - time.monotonic())
