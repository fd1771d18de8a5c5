"""The app of the latency rows: says `ready`, then `got <monotonic time>` for each SIGUSR1.

It waits in sigtimedwait with the signal blocked, so the time printed is when the signal arrived,
not when a handler got round to running. TERM (or 600 s without a signal) ends it.
"""
import signal
import sys
import time

signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1, signal.SIGTERM})
print("ready", flush=True)
while True:
    info = signal.sigtimedwait({signal.SIGUSR1, signal.SIGTERM}, 600)
    if info is None or info.si_signo == signal.SIGTERM:
        sys.exit(0)
    print(f"got {time.monotonic()}", flush=True)
