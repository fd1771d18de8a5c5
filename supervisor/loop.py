"""The one event loop: owns the app process, the helpers, the timers and every piece of state.

Signals arrive as bytes on a wake-up pipe (signal.set_wakeup_fd); watchdog, webhook and health
threads only `post` a small tuple on a queue, which also writes a byte to the pipe. The main
thread blocks in select() on the pipe until the next timer (no timer, no wake-up), then
dispatches. Only this module reaps, signals, spawns and logs.
"""
from __future__ import annotations

import contextlib
from _queue import Empty, SimpleQueue  # the C queue: `queue` would also import threading
import os
import signal
import time

from . import child as child_mod
from . import reaper
from .digest import MISSING, Snapshot, short, snapshot
from .logs import Log
from .settings import Settings

GROUP_POLL = 0.05      # while stopping: how often to look whether the app's group is empty
BACKOFF_START = 0.5    # --on-exit restart: first delay, doubled up to --restart-backoff
BACKOFF_RESET = 10.0   # ... and reset once the app stayed up this long
MISSING_POLL = 1.0     # how often a missing watched path is looked for (inotify mode)
WATCH_DELAY = 0.05     # from starting the app to setting up the watches
HASH_RETRY = 1.0       # after a transient failure to hash (out of fds or memory)
INSTANT = ("signal", "probe", "none")  # --on-change modes that are done as soon as applied


class System:
    """The OS boundary, one object so unit tests can hand the loop a fake."""

    spawn_app = staticmethod(child_mod.spawn_app)
    send = staticmethod(child_mod.send)
    group_alive = staticmethod(child_mod.group_alive)
    reap = staticmethod(reaper.reap_all)
    snapshot = staticmethod(snapshot)
    isdir = staticmethod(os.path.isdir)

    def helper(self, purpose, command, env, timeout, now):
        from .actions import Helper

        return Helper(purpose, command, env, timeout, now)

    def watcher(self, put, quiet_threads):
        from .watcher import InotifyWatcher

        return InotifyWatcher(put, quiet_threads)

    def pinned_mount(self, path):
        from .watcher import pinned_mount

        return pinned_mount(path)

    def poll_signature(self, root, only):
        from .watcher import poll_signature

        return poll_signature(root, only)

    def start_thread(self, target, *args):
        import threading

        thread = threading.Thread(target=target, args=args, daemon=True)
        with quiet_threads():
            thread.start()


@contextlib.contextmanager
def quiet_threads():
    """Threads started inside inherit a mask blocking every forwarded signal, so the kernel
    delivers process signals to the main thread, which is the one blocked in `events.get`."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, child_mod.FORWARDED | {signal.SIGCHLD})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class Watch:
    __slots__ = ("path", "root", "only", "current", "applied", "mode", "dirty", "poll_key", "failing")

    def __init__(self, path: str, root: str, only: str | None, snap: Snapshot):
        self.path = path          # as the user gave it
        self.root = root          # the directory we watch
        self.only = only          # for a watched file: its name inside root
        self.current = snap       # the content now (as last hashed)
        self.applied = snap       # the content the app was last brought up to date with
        self.mode = "pending"     # inotify | poll | missing, once watching has started
        self.dirty = False        # events arrived while an action was running
        self.poll_key = None      # last poll fingerprint
        self.failing = False      # the last hash failed for a transient reason


class Action:
    __slots__ = ("kind", "target", "changed", "started", "phase")

    def __init__(self, kind: str, target: list, changed: list, started: float):
        self.kind = kind          # the --on-change mode
        self.target = target      # Snapshot per watch: what this action brings the app to
        self.changed = changed    # top-level names that differ
        self.started = started
        self.phase = "start"      # validate | run | stop


class Stats:
    """Counters for logs and /metrics."""

    def __init__(self):
        self.changes = 0
        self.actions: dict = {}   # (kind, result) -> count
        self.rejections = 0
        self.restarts = 0
        self.orphans = 0
        self.last_change = 0.0
        self.last_apply = 0.0


def _reason(exc: BaseException) -> str:
    """An error for a log line: the OS's words where there are some ("Too many open files")."""
    return getattr(exc, "strerror", None) or str(exc)


def _signal_name(signo: int) -> str:
    try:
        return signal.Signals(signo).name
    except ValueError:
        return f"signal {signo}"


class Loop:
    def __init__(self, settings: Settings, log: Log, system: System | None = None,
                 clock=time.monotonic, events: SimpleQueue | None = None, health_socket=None):
        self.s = settings
        self.health_socket = health_socket
        self.state: dict | None = None  # published for the health thread; replaced, never mutated
        self.log = log
        self.sys = system or System()
        self.clock = clock
        self.events = events or SimpleQueue()  # events from other threads (see post)
        self.wake_r = self.wake_w = None        # the wake-up pipe (see install_signals)
        self.poller = None
        self.timers: dict[object, float] = {}
        self.child: int | None = None
        self.child_started = 0.0
        self.stopped_pgid = 0                  # group of the app that just exited, while stopping
        self.last_status: int | None = None
        self.stopping: str | None = None   # why we are stopping the app: signal|restart|change-exit
        self.exit_code: int | None = None
        self.backoff = 0.0
        self.watches: list[Watch] = []
        self.watcher = None
        self.action: Action | None = None
        self.helper = None
        self.rejected: tuple | None = None
        self.unhealthy: str | None = None  # probe mode: why /healthz fails
        self.stats = Stats()

    # ---- set-up -------------------------------------------------------------------------
    def install_signals(self) -> None:
        """Signals reach the loop through the wake-up pipe: the interpreter's C-level handler
        writes each signal's number into it, from whichever thread the kernel picked, and the
        loop reads the numbers. The Python-level handlers do nothing; they exist so that the
        signals are caught rather than left to their default action."""
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)

        def caught(_signo, _frame):
            pass

        for signo in child_mod.FORWARDED | {signal.SIGCHLD}:
            try:
                signal.signal(signo, caught)
            except (OSError, ValueError):
                pass  # reserved by the C library
        # Our own terminal I/O must neither stop us nor be mistaken for a signal to forward.
        for signo in (signal.SIGTTIN, signal.SIGTTOU):
            signal.signal(signo, signal.SIG_IGN)
        # Start with nothing blocked, whatever our parent left us with.
        signal.pthread_sigmask(signal.SIG_SETMASK, ())

    def post(self, event) -> None:
        """For other threads: hand the loop an event and wake it up."""
        self.events.put(event)
        if self.wake_w is not None:
            try:
                os.write(self.wake_w, b"\0")  # 0 is no signal: it only means "look at the queue"
            except BlockingIOError:
                pass  # the pipe is full of wake-ups already

    def wait(self, timeout: float | None) -> list:
        """Block until a signal, a posted event or the timeout; the signals as events."""
        if self.poller is None:
            import select

            self.poller = select.poll()
            self.poller.register(self.wake_r, select.POLLIN)
        if not self.poller.poll(None if timeout is None else timeout * 1000):
            return []
        data = b""
        try:
            while True:  # empty the pipe: a full one would drop the next signal's byte
                chunk = os.read(self.wake_r, 65536)
                if not chunk:
                    break
                data += chunk
        except BlockingIOError:
            pass
        events = [("signal", signo) for signo in data if signo and signo != signal.SIGCHLD]
        if signal.SIGCHLD in data:
            events.append(("reap",))  # one reap collects every exited child
        return events

    def add_watches(self) -> None:
        for path in self.s.watches:
            root, only = os.path.abspath(path), None
            if os.path.islink(path) or (os.path.exists(path) and not os.path.isdir(path)):
                # A file, or a kubelet link (`key -> ..data/key`, maybe a directory): watch the
                # directory holding it, where the ..data swap happens; a watch on the file or
                # link itself would see nothing (or die) at the first update.
                root, only = os.path.dirname(root), os.path.basename(root)
            snap = self.sys.snapshot(root, only, self.s.include, self.s.exclude)
            self.watches.append(Watch(path, root, only, snap))
            self._warn_unreadable(self.watches[-1], ())
            if self.sys.pinned_mount(path):
                self.log.warning(
                    f"{path} is a mount of its own (a Kubernetes subPath mount or a single-file bind "
                    f"mount): such mounts never receive ConfigMap/Secret updates. Mount the whole "
                    f"volume as a directory and watch that directory instead.",
                    event="subpath", watch=path)

    def run(self) -> int:
        self.install_signals()
        try:
            self.add_watches()  # hash before the app starts: that is the content it starts with
        except OSError as exc:
            self.log.error(f"cannot read the watched paths: {_reason(exc)}", event="usage")
            return 2
        if not self.start_child(first=True):
            return self.exit_code
        if self.health_socket is not None:
            self.start_health()
        if self.watches:
            # The app gets the CPU for its first moments, not our watchdog import (tens of ms);
            # and an app that is already gone needs no watches. What changes meanwhile is caught
            # by the refresh once the watches are in place.
            self.timers["start-watching"] = self.clock() + WATCH_DELAY
        while self.exit_code is None:
            self.step()
        self.close()
        return self.exit_code

    def close(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
            self.watcher = None

    # ---- the loop -----------------------------------------------------------------------
    def step(self, block: bool = True) -> None:
        timeout = None
        if self.timers:
            timeout = max(0.0, min(self.timers.values()) - self.clock())
        batch = self.wait(timeout) if block else []
        try:
            while True:
                batch.append(self.events.get_nowait())
        except Empty:
            pass
        changed = set()
        for event in batch:
            kind = event[0]
            if kind == "fs":
                if event[2]:
                    changed.add(event[1])  # a kubelet swap is a commit: act at once
                else:
                    self.timers[("debounce", event[1])] = self.clock() + self.s.debounce
            else:
                self.dispatch(event)
        if changed:
            self.refresh(changed)
        self.fire_timers()
        if self.state is not None:
            self.publish()

    def start_health(self) -> None:
        from .health import HealthServer

        self.publish()
        server = HealthServer(self.health_socket, lambda: self.state)
        self.sys.start_thread(server.serve)
        host, port = self.health_socket.getsockname()[:2]
        self.log.info(f"serving /healthz /readyz /metrics on {host}:{port}", event="health")

    def publish(self) -> None:
        """Hand the health thread a fresh, immutable view of the state."""
        st = self.stats
        self.state = {
            "child_up": self.child is not None,
            "child_started": self.child_started,
            "stopping": self.stopping,
            "ready_delay": self.s.ready_delay,
            "unhealthy": self.unhealthy,
            "changes": st.changes,
            "actions": dict(st.actions),
            "rejections": st.rejections,
            "restarts": st.restarts,
            "orphans": st.orphans,
            "last_change": st.last_change,
            "last_apply": st.last_apply,
            "watches": [(w.path, w.applied.digest, w.mode) for w in self.watches],
        }

    def dispatch(self, event) -> None:
        kind = event[0]
        if kind == "signal":
            self.on_signal(event[1])
        elif kind == "reap":
            self.on_reap()
        elif kind == "gone":
            self.on_gone(event[1])
        elif kind == "webhook":
            self.on_webhook(event[1], event[2])

    def fire_timers(self) -> None:
        now = self.clock()
        for name in [n for n, due in self.timers.items() if due <= now]:
            if self.timers.pop(name, None) is None:
                continue
            if name == "kill":
                self.on_stop_deadline()
            elif name == "group":
                self.on_group_poll()
            elif name == "respawn":
                self.respawn_after_exit()
            elif name == "helper":
                self.on_helper_deadline()
            elif name == "poll":
                self.on_poll()
            elif name == "start-watching":
                self.start_watching()
            elif name[0] == "debounce":
                self.refresh({name[1]})

    # ---- signals and the app ------------------------------------------------------------
    def on_signal(self, signo: int) -> None:
        target = self.s.rewritten(signo)
        name = _signal_name(signo)
        if target == 0:
            self.log.debug(f"dropped {name} (--rewrite)", event="signal", signal=name)
            return
        if self.child is not None:
            self.log.debug(f"forwarding {_signal_name(target)} to {self.child}", event="signal",
                           signal=_signal_name(target), pid=self.child)
            self.sys.send(self.child, target, self.s.group)
        if signo in (signal.SIGTERM, signal.SIGINT):
            self.log.info(f"received {name}, stopping (timeout {self.s.stop_timeout:g}s)",
                          event="stop", signal=name)
            if self.child is None:
                self.exit_code = self.final_code(128 + signo)
                return
            self.stopping = "signal"
            self.timers.setdefault("kill", self.clock() + self.s.stop_timeout)

    def start_child(self, changed=(), first=False) -> bool:
        env = dict(os.environ)
        if changed:
            env["CFGSUP_CHANGED"] = ",".join(changed)
        try:
            self.child = self.sys.spawn_app(list(self.s.command), env, self.stopped_pgid)
        except child_mod.SpawnError as exc:
            if exc.transient and not first:  # out of processes or memory: try again, backing off
                self.backoff = self.next_backoff(0.0)
                self.log.warning(f"{exc}; retrying in {self.backoff:g}s", event="spawn-failed",
                                 command=self.s.command[0])
                self.timers["respawn"] = self.clock() + self.backoff
                return False
            self.log.error(str(exc), event="spawn-failed", command=self.s.command[0])
            self.exit_code = exc.code
            return False
        self.child_started = self.clock()
        if not first:
            self.stats.restarts += 1
        self.log.debug(f"started {self.s.command[0]} as pid {self.child}", event="start", pid=self.child)
        return True

    def stop_child(self, reason: str) -> None:
        """Stop the app's whole group: stop signal now, SIGKILL at the deadline."""
        self.stopping = reason
        if self.child is None:
            self.after_stop()
            return
        self.log.info(f"stopping pid {self.child} with {_signal_name(self.s.stop_signal)} ({reason})",
                      event="stop", reason=reason, pid=self.child)
        self.sys.send(self.child, self.s.stop_signal, True)
        self.timers["kill"] = self.clock() + self.s.stop_timeout

    def on_stop_deadline(self) -> None:
        pgid = self.child if self.child is not None else self.stopped_pgid
        self.log.warning(f"pid {pgid} did not stop within {self.s.stop_timeout:g}s: SIGKILL to its group",
                         event="kill", pid=pgid)
        self.sys.send(pgid, signal.SIGKILL, True)
        if self.child is None:
            self.after_stop()

    def on_group_poll(self) -> None:
        if self.sys.group_alive(self.stopped_pgid) and "kill" in self.timers:
            self.timers["group"] = self.clock() + GROUP_POLL
        else:
            self.timers.pop("kill", None)
            self.after_stop()

    def on_reap(self) -> None:
        orphans = False
        for pid, status in self.sys.reap():
            if pid == self.child:
                self.on_child_exit(status)
            elif self.helper is not None and pid == self.helper.pid:
                self.on_helper_exit(status)
            else:
                orphans = True
                self.stats.orphans += 1
                self.log.debug(f"reaped orphan {pid} ({reaper.describe(status)})", event="reap", pid=pid)
        if orphans and "group" in self.timers:
            self.on_group_poll()  # the app's lingering group may just have emptied: look now

    def on_child_exit(self, status: int) -> None:
        pid, self.child = self.child, None
        self.last_status = status
        self.stopped_pgid = pid
        uptime = self.clock() - self.child_started
        self.log.info(f"pid {pid} {reaper.describe(status)}", event="exit", pid=pid,
                      code=reaper.exit_code(status))
        if self.stopping:
            # The app is gone; give the rest of its group until the deadline, then SIGKILL it.
            if self.sys.group_alive(pid):
                self.timers["group"] = self.clock() + GROUP_POLL
            else:
                self.timers.pop("kill", None)
                self.after_stop()
        elif self.s.on_exit == "restart":
            self.backoff = self.next_backoff(uptime)
            self.log.info(f"restarting in {self.backoff:g}s (--on-exit restart)", event="backoff",
                          delay=self.backoff)
            self.timers["respawn"] = self.clock() + self.backoff
        else:
            self.exit_code = self.final_code(reaper.exit_code(status))

    def next_backoff(self, uptime: float) -> float:
        """0.5 s, doubling up to --restart-backoff; back to the start once the app stayed up."""
        if uptime >= BACKOFF_RESET or not self.backoff:
            return min(BACKOFF_START, self.s.restart_backoff)
        return min(self.backoff * 2, self.s.restart_backoff)

    def respawn_after_exit(self) -> None:
        if self.child is not None or self.exit_code is not None:
            return
        restarting = self.action is not None and self.action.phase == "stop"
        if self.start_child(self.action.changed if restarting else ()) and restarting:
            self.finish_action("done")  # a restart for a change whose first start attempt failed

    def after_stop(self) -> None:
        reason, self.stopping = self.stopping, None
        self.timers.pop("group", None)
        if reason == "signal":
            code = reaper.exit_code(self.last_status) if self.last_status is not None else 143
            self.exit_code = self.final_code(code)
        elif reason == "change-exit":
            self.exit_code = self.s.change_exit_code
            self.finish_action("done")
        elif reason == "restart":
            self.timers.pop("respawn", None)
            if self.start_child(self.action.changed if self.action else ()):
                self.finish_action("done")

    def final_code(self, code: int) -> int:
        return 0 if code in self.s.expect_exit else code

    # ---- watching -----------------------------------------------------------------------
    def start_watching(self) -> None:
        if self.s.poll is None:
            try:
                self.watcher = self.sys.watcher(self.post, quiet_threads)
            except Exception as exc:  # noqa: BLE001 - whatever breaks in watchdog, poll instead
                self.log.warning(f"inotify unavailable ({_reason(exc)}); polling every "
                                 f"{MISSING_POLL:g}s instead", event="watcher", mode="poll")
        for index, watch in enumerate(self.watches):
            self.attach(index, watch)
        self.log.info("watching " + ", ".join(f"{w.path} ({w.mode})" for w in self.watches),
                      event="watching")
        # Anything that changed between the first hash and the watches being in place.
        self.refresh(set(range(len(self.watches))))

    def attach(self, index: int, watch: Watch) -> None:
        """Put a watch on inotify if we can; else it is polled (or looked for, while missing)."""
        if self.watcher is None:
            watch.mode = "poll"
            watch.poll_key = self.sys.poll_signature(watch.root, watch.only)
        elif not self.sys.isdir(watch.root):
            watch.mode = "missing"
        else:
            try:
                self.watcher.add(index, watch.root, watch.only)
                watch.mode = "inotify"
            except Exception as exc:  # noqa: BLE001 - the watch limit (ENOSPC), or anything else
                reason = _reason(exc)
                if not any(w.mode == "inotify" for w in self.watches):
                    # Nothing is on inotify yet: give it up whole (and whatever it half made).
                    self.watcher.abandon()
                    self.watcher = None
                    self.log.warning(f"inotify unavailable ({reason}); polling every "
                                     f"{self.poll_interval():g}s instead", event="watcher", mode="poll")
                else:
                    self.log.warning(f"cannot watch {watch.path} with inotify ({reason}); "
                                     f"polling it every {self.poll_interval():g}s", event="watcher",
                                     mode="poll")
                watch.mode = "poll"
                watch.poll_key = self.sys.poll_signature(watch.root, watch.only)
        if watch.mode != "inotify":
            self.timers.setdefault("poll", self.clock() + self.poll_interval())

    def poll_interval(self) -> float:
        return self.s.poll if self.s.poll is not None else MISSING_POLL

    def on_poll(self) -> None:
        changed = set()
        for index, watch in enumerate(self.watches):
            if watch.mode == "missing":
                if self.sys.isdir(watch.root):
                    self.attach(index, watch)
                    changed.add(index)
            elif watch.mode == "poll":
                key = self.sys.poll_signature(watch.root, watch.only)
                if key != watch.poll_key:
                    kubelet_swap = isinstance(key, tuple) and key[:1] == ("kubelet",)
                    watch.poll_key = key
                    if kubelet_swap:
                        changed.add(index)
                    else:
                        self.timers[("debounce", index)] = self.clock() + self.s.debounce
        if any(w.mode != "inotify" for w in self.watches):
            self.timers["poll"] = self.clock() + self.poll_interval()
        if changed:
            self.refresh(changed)

    def on_gone(self, index: int) -> None:
        watch = self.watches[index]
        if self.watcher is not None:
            self.watcher.remove(index)
        watch.mode = "missing"
        self.log.warning(f"{watch.path} was deleted; waiting for it to come back", event="watcher",
                         watch=watch.path)
        self.timers.setdefault("poll", self.clock() + self.poll_interval())
        self.refresh({index})

    # ---- deciding on content ------------------------------------------------------------
    def refresh(self, indices) -> None:
        """Re-hash the given watches; act if the content differs from what the app has."""
        for index in indices:
            watch = self.watches[index]
            if self.action is not None:
                watch.dirty = True  # hashed once the running action is over
                continue
            try:
                snap = self.sys.snapshot(watch.root, watch.only, self.s.include, self.s.exclude)
            except OSError as exc:  # out of fds or memory: keep what we know, look again soon
                if not watch.failing:
                    self.log.warning(f"cannot hash {watch.path} now ({_reason(exc)}); "
                                     f"retrying every {HASH_RETRY:g}s", event="hash-failed",
                                     watch=watch.path)
                watch.failing = True
                self.timers[("debounce", index)] = self.clock() + HASH_RETRY
                continue
            if watch.failing:
                watch.failing = False
                self.log.info(f"{watch.path} can be hashed again", event="hash-ok", watch=watch.path)
            if snap.digest == watch.current.digest:
                self.log.debug(f"{watch.path}: event without content change", event="no-change",
                               watch=watch.path)
                continue
            self._warn_unreadable(watch, watch.current.unreadable, snap)
            watch.current = snap
        self.consider()

    def _warn_unreadable(self, watch: Watch, before, snap: Snapshot | None = None) -> None:
        snap = snap or watch.current
        fresh = [name for name in snap.unreadable if name not in before]
        if fresh:
            self.log.warning(f"{watch.path}: cannot read {', '.join(fresh)} (counted as unreadable "
                             f"until it can be read)", event="unreadable", watch=watch.path, names=fresh)

    def consider(self) -> None:
        if self.action is not None or self.stopping or self.exit_code is not None:
            return
        if any(w.current.digest == MISSING and w.applied.digest != MISSING for w in self.watches):
            return  # a watched path vanished: keep the app as it is until it is back
        target = tuple(w.current.digest for w in self.watches)
        if target == tuple(w.applied.digest for w in self.watches) or target == self.rejected:
            return
        changed, notes = [], []
        for watch in self.watches:
            if watch.current.digest == watch.applied.digest:
                continue
            old, new = watch.applied.entries, watch.current.entries
            names = sorted(n for n in old.keys() | new.keys() if old.get(n) != new.get(n))
            changed.extend(names)
            notes.append((f"change in {watch.path}: {', '.join(names) or '(nothing visible)'} "
                          f"{short(watch.applied.digest)} -> {short(watch.current.digest)}",
                          dict(event="change", watch=watch.path, changed=names,
                               old=short(watch.applied.digest), new=short(watch.current.digest))))
        self.stats.changes += 1
        self.stats.last_change = time.time()
        self.action = Action(self.s.on_change, [w.current for w in self.watches], changed, self.clock())
        if not self.s.validate and self.action.kind in INSTANT:
            self.apply()  # the signal first: the app is waiting for it, the log lines are not
            for message, fields in notes:
                self.log.info(message, **fields)
            self.finish_action("done")
            return
        for message, fields in notes:
            self.log.info(message, **fields)
        if self.s.validate:
            self.action.phase = "validate"
            self.run_helper("validate", self.s.validate)
        else:
            self.apply()

    def apply(self) -> None:
        action = self.action
        action.phase = "run"
        kind = action.kind
        if kind == "restart":
            action.phase = "stop"
            self.stop_child("restart")
        elif kind == "exit":
            action.phase = "stop"
            self.stop_child("change-exit")
        elif kind == "signal":
            if self.child is not None:
                self.sys.send(self.child, self.s.reload_signal, self.s.group)
        elif kind == "exec":
            self.run_helper("reload", self.s.reload_command)
        elif kind == "http":
            from .actions import post_webhooks

            try:
                self.sys.start_thread(
                    post_webhooks, self.s.webhooks, self.s.webhook_method, self.s.webhook_retries,
                    self.s.webhook_timeout, ",".join(action.changed),
                    lambda ok, detail: self.post(("webhook", ok, detail)),
                )
            except RuntimeError as exc:  # no thread to be had: count it, keep the app
                self.post(("webhook", False, f"cannot start a thread: {exc}"))
        elif kind == "probe":
            self.unhealthy = (f"configuration changed ({', '.join(action.changed) or 'content'}); "
                              f"waiting for the kubelet to restart the container")
        # signal, probe and none are done at once: the caller finishes them (INSTANT)

    def finish_action(self, result: str, detail: str = "") -> None:
        action, self.action = self.action, None
        if action is None:
            return
        took = self.clock() - action.started
        key = (action.kind, result)
        self.stats.actions[key] = self.stats.actions.get(key, 0) + 1
        if result == "rejected":
            self.stats.rejections += 1
            self.rejected = tuple(s.digest for s in action.target)
            self.log.error(f"validation rejected the change, nothing applied: {detail}",
                           event="rejected", took=round(took, 4))
        else:
            for watch, snap in zip(self.watches, action.target):
                watch.applied = snap
            self.rejected = None
            if result == "done":
                self.stats.last_apply = time.time()
            what = {"restart": "restarted the app", "signal": f"sent {_signal_name(self.s.reload_signal)}",
                    "exec": "ran the reload command", "http": "called the webhook(s)",
                    "exit": "stopped the app to exit", "probe": "failing /healthz",
                    "none": "did nothing (--on-change none)"}[action.kind]
            log = self.log.info if result == "done" else self.log.error
            log(f"{what} for {', '.join(action.changed) or 'the change'} in {took * 1000:.1f} ms"
                + (f" ({result}: {detail})" if result != "done" else ""),
                event="action", action=action.kind, result=result, changed=action.changed,
                took=round(took, 4), detail=detail or None,
                signal=_signal_name(self.s.reload_signal) if action.kind == "signal" else None)
        # Whatever arrived meanwhile is folded into one follow-up on the newest content.
        dirty = {i for i, w in enumerate(self.watches) if w.dirty}
        for index in dirty:
            self.watches[index].dirty = False
        self.refresh(dirty)

    # ---- helper commands and webhooks ----------------------------------------------------
    def run_helper(self, purpose: str, command: str) -> None:
        env = dict(os.environ)
        env["CFGSUP_CHANGED"] = ",".join(self.action.changed)
        if self.child is not None:
            env["CFGSUP_CHILD_PID"] = str(self.child)
        try:
            self.helper = self.sys.helper(purpose, command, env, self.s.command_timeout, self.clock())
        except (child_mod.SpawnError, ValueError, OSError) as exc:
            self.helper_done(purpose, False, str(exc))
            return
        self.timers["helper"] = self.helper.deadline

    def on_helper_deadline(self) -> None:
        if self.helper is not None:
            self.helper.timed_out = True
            self.sys.send(self.helper.pid, signal.SIGKILL, True)

    def on_helper_exit(self, status: int) -> None:
        helper, self.helper = self.helper, None
        self.timers.pop("helper", None)
        ok = os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        if helper.timed_out:
            detail = f"timed out after {self.s.command_timeout:g}s"
        else:
            detail = reaper.describe(status)
        tail = helper.tail()
        if not ok and tail:
            detail += f"; output: {tail}"
        self.helper_done(helper.purpose, ok, detail)

    def helper_done(self, purpose: str, ok: bool, detail: str) -> None:
        if purpose == "validate":
            if ok:
                self.log.debug("validation passed", event="validated")
                kind = self.action.kind
                self.apply()  # a restart of an app that is already down may finish in here
                if kind in INSTANT:
                    self.finish_action("done")
            else:
                self.finish_action("rejected", detail)
        else:
            self.finish_action("done" if ok else "failed", detail)

    def on_webhook(self, ok: bool, detail: str) -> None:
        self.finish_action("done" if ok else "failed", detail)


def run(settings: Settings) -> int:
    """Run the app under cfgsup until it is over; returns cfgsup's exit code."""
    log = Log(settings.log_level, settings.log_format)
    child_mod.seal_inherited_fds()
    if os.getpid() != 1:
        error = reaper.become_subreaper()
        if error:
            log.debug(f"cannot become a child subreaper ({error}); orphans go to the real init")
    health_socket = None
    if settings.health_addr:
        from .health import bind

        try:
            health_socket = bind(*settings.health_addr)
        except OSError as exc:
            log.error(f"cannot serve health on {settings.health_addr[0]}:{settings.health_addr[1]}: "
                      f"{_reason(exc)}", event="usage")
            return 2
    return Loop(settings, log, health_socket=health_socket).run()
