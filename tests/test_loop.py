"""The event loop itself: timers, fds, the wake-up pipe, waits bounded for the OS."""
from __future__ import annotations

import os
import signal

from supervisor.loop import MAX_WAIT, Loop, Timers


def test_timers_fire_in_order_and_a_cancelled_one_never():
    now = [0.0]
    timers = Timers(lambda: now[0])
    fired = []
    timers.set("b", 2, lambda: fired.append("b"))
    timers.set("a", 1, lambda: (fired.append("a"), timers.cancel("c")))
    timers.set("c", 1.5, lambda: fired.append("c"))
    assert timers.next() == 1
    now[0] = 3
    timers.fire()
    assert fired == ["a", "b"] and timers.next() is None


def test_a_timer_reset_by_an_earlier_callback_waits_for_its_new_time():
    now = [0.0]
    timers = Timers(lambda: now[0])
    fired = []
    timers.set("a", 1, lambda: timers.set("b", 5, lambda: fired.append("late b")))
    timers.set("b", 2, lambda: fired.append("b"))
    now[0] = 3
    timers.fire()
    assert fired == [] and timers.when("b") == 8


def test_fds_are_polled_and_their_callback_runs():
    loop = Loop()
    r, w = os.pipe()
    seen = []
    try:
        loop.add_fd(r, seen.append)
        os.write(w, b"x")
        loop.step()
        assert seen and loop.timers.next() is None
        loop.remove_fd(r)
        assert r not in loop.fds
    finally:
        os.close(r)
        os.close(w)


def test_a_very_long_timer_never_overflows_poll():
    loop = Loop()
    loop.timers.set("far", 10 * 365 * 86400, lambda: None)
    calls = []

    class Poller:
        def poll(self, timeout_ms):
            calls.append(timeout_ms)
            return []

    loop.poller = Poller()
    loop.step()
    assert calls == [MAX_WAIT * 1000]


def test_signals_arrive_through_the_wake_up_pipe():
    loop = Loop()
    got = []
    loop.on("signal", got.append)
    loop.on("reap", lambda: got.append("reap"))
    old = signal.getsignal(signal.SIGUSR1)
    try:
        loop.install_signals({signal.SIGUSR1, signal.SIGCHLD})
        os.kill(os.getpid(), signal.SIGUSR1)
        loop.step()
        assert got == [signal.SIGUSR1]
    finally:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGUSR1, old)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTTIN, signal.SIG_DFL)
        signal.signal(signal.SIGTTOU, signal.SIG_DFL)
        os.close(loop.wake_r)
        os.close(loop.wake_w)


def test_a_signal_whose_byte_a_full_pipe_dropped_is_not_lost():
    """A storm of signals can fill the wake-up pipe; the interpreter drops the bytes that do not
    fit. A TERM among them must still reach the loop."""
    loop = Loop()
    got = []
    loop.on("signal", got.append)
    loop.on("reap", lambda: None)
    old = signal.getsignal(signal.SIGTERM)
    try:
        loop.install_signals({signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD})
        for size in (4096, 1):  # a storm's worth of HUP bytes, until the pipe takes no more
            try:
                while True:
                    os.write(loop.wake_w, bytes([signal.SIGHUP]) * size)
            except BlockingIOError:
                pass
        os.kill(os.getpid(), signal.SIGTERM)  # its byte does not fit
        for _ in range(20):
            loop.timers.set("tick", 0.05, lambda: None)  # no step waits long, fix or not
            loop.step()
            if signal.SIGTERM in got:
                break
        assert signal.SIGTERM in got
    finally:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGTERM, old)
        for signo in (signal.SIGHUP, signal.SIGCHLD, signal.SIGTTIN, signal.SIGTTOU):
            signal.signal(signo, signal.SIG_DFL)
        os.close(loop.wake_r)
        os.close(loop.wake_w)
