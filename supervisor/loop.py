"""The one event loop: it waits, fires timers and dispatches. It holds no process state itself.

Signals arrive as bytes on a wake-up pipe (signal.set_wakeup_fd); other threads `post` a small
tuple on a queue and write a byte to the same pipe; other fds (a helper's output, say) are polled
beside it. The loop sleeps in poll() until the next timer is due: no timer, no wake-up.
"""
from __future__ import annotations

from _queue import Empty, SimpleQueue  # the C queue: `queue` would also import threading
import os
import signal
import time

# poll() takes at most about 24.8 days; a longer timer simply costs one extra wake-up a day.
MAX_WAIT = 86400.0


class Timers:
    """Named one-shot timers, each with the callback it runs when due."""

    def __init__(self, clock):
        self.clock = clock
        self.due: dict = {}  # key -> (when, callback)

    def set(self, key, delay: float, callback) -> None:
        self.due[key] = (self.clock() + delay, callback)

    def set_at(self, key, when: float, callback) -> None:
        self.due[key] = (when, callback)

    def cancel(self, key) -> None:
        self.due.pop(key, None)

    def when(self, key) -> float | None:
        entry = self.due.get(key)
        return None if entry is None else entry[0]

    def __contains__(self, key) -> bool:
        return key in self.due

    def next(self) -> float | None:
        return min((when for when, _ in self.due.values()), default=None)

    def fire(self) -> None:
        now = self.clock()
        for key, entry in sorted(((k, e) for k, e in self.due.items() if e[0] <= now),
                                 key=lambda item: item[1][0]):
            if self.due.get(key) is entry:  # an earlier callback may have cancelled or reset it
                del self.due[key]
                entry[1]()


class Loop:
    def __init__(self, clock=time.monotonic, events: SimpleQueue | None = None):
        self.clock = clock
        self.timers = Timers(clock)
        self.events = events if events is not None else SimpleQueue()
        self.handlers: dict = {}   # event kind -> callable(*args)
        self.fds: dict = {}        # fd -> callable(poll events)
        self.after_step = []       # callables run after every batch (publishing state)
        self.wake_r = self.wake_w = None
        self.poller = None
        self.handled = [0] * signal.NSIG     # per signal: times its handler ran
        self.delivered = [0] * signal.NSIG   # ... and times the loop got it

    def on(self, kind: str, handler) -> None:
        self.handlers[kind] = handler

    # ---- signals and other threads ---------------------------------------------------------
    def install_signals(self, signals) -> None:
        """Signals reach the loop through the wake-up pipe: the interpreter's C-level handler
        writes each signal's number into it, from whichever thread the kernel picked. The
        Python-level handler does nothing; it exists so the signals are caught, not defaulted.
        They were blocked since the entry point (see start.py): unblocking them here delivers
        whatever arrived meanwhile into the pipe."""
        import select

        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        if self.poller is not None:
            self.poller.register(self.wake_r, select.POLLIN)

        handled, wake, nudge = self.handled, self.wake_w, b"\0"

        def caught(signo, _frame):
            # Counted, so a signal whose byte a full pipe dropped is still seen (_signals); and
            # a byte of no signal (0) after it, so the loop looks even if this ran just after it
            # read the pipe empty. Nothing else: no logging, no allocation worth the name.
            handled[signo] += 1
            try:
                os.write(wake, nudge)
            except OSError:
                pass  # full: the loop is woken anyway

        for signo in signals:
            try:
                signal.signal(signo, caught)
            except (OSError, ValueError):
                pass  # reserved by the C library
        # Our own terminal I/O must neither stop us nor be mistaken for a signal to forward.
        for signo in (signal.SIGTTIN, signal.SIGTTOU):
            signal.signal(signo, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_SETMASK, ())

    def post(self, event) -> None:
        """For other threads: hand the loop an event and wake it up."""
        self.events.put(event)
        if self.wake_w is not None:
            try:
                os.write(self.wake_w, b"\0")  # 0 is no signal: it only means "look at the queue"
            except BlockingIOError:
                pass  # the pipe is full of wake-ups already

    def add_fd(self, fd: int, callback) -> None:
        import select

        self.fds[fd] = callback
        self._poller().register(fd, select.POLLIN)

    def remove_fd(self, fd: int) -> None:
        if self.fds.pop(fd, None) is not None:
            self._poller().unregister(fd)

    def _poller(self):
        if self.poller is None:
            import select

            self.poller = select.poll()
            if self.wake_r is not None:
                self.poller.register(self.wake_r, select.POLLIN)
        return self.poller

    def wait(self, timeout: float | None) -> list:
        """Block until a signal, a posted event, a polled fd or the timeout; returns events."""
        ready = self._poller().poll(None if timeout is None else min(timeout, MAX_WAIT) * 1000)
        events = []
        for fd, mask in ready:
            if fd == self.wake_r:
                events.extend(self._signals())
            elif fd in self.fds:
                events.append(("fd", fd, mask))
        return events

    def _signals(self) -> list:
        data = b""
        try:
            while True:  # empty the pipe: a full one would drop the next signal's byte
                chunk = os.read(self.wake_r, 65536)
                if not chunk:
                    break
                data += chunk
        except BlockingIOError:
            pass
        delivered, handled = self.delivered, self.handled
        events = []
        for signo in data:
            if signo:
                delivered[signo] += 1
                if signo != signal.SIGCHLD:
                    events.append(("signal", signo))
        # A signal whose byte did not fit in a full pipe was still counted by the handler: it is
        # not lost (a TERM in a storm of HUPs must stop cfgsup). The handler may also run just
        # after we read its byte: then it only catches up with what was delivered.
        for signo in range(1, len(handled)):
            if handled[signo] > delivered[signo]:
                delivered[signo] = handled[signo]
                if signo != signal.SIGCHLD:
                    events.append(("signal", signo))
                elif signal.SIGCHLD not in data:
                    data += bytes((signal.SIGCHLD,))
        if signal.SIGCHLD in data:
            events.append(("reap",))  # one reap collects every exited child
        return events

    # ---- the loop --------------------------------------------------------------------------
    def step(self, block: bool = True) -> None:
        timeout = None
        due = self.timers.next()
        if due is not None:
            timeout = max(0.0, due - self.clock())
        batch = self.wait(timeout) if block else []
        try:
            while True:
                batch.append(self.events.get_nowait())
        except Empty:
            pass
        for event in batch:
            if event[0] == "fd":
                callback = self.fds.get(event[1])
                if callback is not None:
                    callback(event[2])
            else:
                self.handlers[event[0]](*event[1:])
        self.timers.fire()
        for callback in self.after_step:
            callback()

    def run(self, done) -> None:
        while not done():
            self.step()
