"""The bare watchdog floor: watchdog's stock inotify observer, one schedule per directory.

    watchdog_observer.py PID DIR...

SIGUSR1 to PID when watchdog reports `..data_tmp` moved to `..data`; no hashing. It subscribes
to the events cfgsup subscribes to (no open, access or close-without-write), where this watchdog
can filter them (4.0 and later).
"""
import os
import signal
import sys

from watchdog import events
from watchdog.observers import Observer

NAMES = ("FileCreatedEvent", "DirCreatedEvent", "FileDeletedEvent", "DirDeletedEvent", "FileMovedEvent",
         "DirMovedEvent", "FileModifiedEvent", "FileClosedEvent", "FileAttribEvent", "DirAttribEvent")
FILTER = [getattr(events, name) for name in NAMES if hasattr(events, name)]

pid = int(sys.argv[1])


class Handler:
    def dispatch(self, event):
        if event.event_type == "moved" and os.path.basename(event.dest_path) == "..data":
            os.kill(pid, signal.SIGUSR1)


signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # the observer's threads inherit it
observer = Observer()
for path in sys.argv[2:]:
    try:
        observer.schedule(Handler(), path, event_filter=FILTER)
    except TypeError:  # a watchdog without event_filter
        observer.schedule(Handler(), path)
observer.start()
print("watching", flush=True)
signal.sigwait({signal.SIGTERM})
os._exit(0)
