"""The bare watchdog floor: watchdog's stock inotify observer, one schedule per directory.

    watchdog_observer.py PID DIR...

SIGUSR1 to PID when watchdog reports `..data_tmp` moved to `..data`; no hashing.
"""
import os
import signal
import sys

from watchdog.observers import Observer

pid = int(sys.argv[1])


class Handler:
    def dispatch(self, event):
        if event.event_type == "moved" and os.path.basename(event.dest_path) == "..data":
            os.kill(pid, signal.SIGUSR1)


signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # the observer's threads inherit it
observer = Observer()
for path in sys.argv[2:]:
    observer.schedule(Handler(), path)
observer.start()
print("watching", flush=True)
signal.sigwait({signal.SIGTERM})
os._exit(0)
