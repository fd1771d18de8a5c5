"""HTTP /healthz, /readyz and /metrics for the kubelet and Prometheus.

One thread runs a `selectors` loop over non-blocking sockets: accept, read a request head,
answer, close. No client can hold up another: at most MAX_CONNECTIONS are open (a new one
pushes out the oldest), and each has DEADLINE seconds in all from accept to close, however it
trickles. With no connection open the thread sleeps in the selector with no timeout, so it adds
no wake-ups. It only reads the state snapshot the loop publishes (a dict replaced as a whole,
never mutated), so it never touches process state.
"""
from __future__ import annotations

import selectors
import socket
import struct
import time

from . import http1

MAX_CONNECTIONS = 64   # open at once; each costs an fd and at most a few KiB
DEADLINE = 3.0         # seconds from accept to close; a probe on a pod network needs milliseconds
DRAIN_MAX = 65536      # bytes read and dropped after the answer (a body, extra requests)
BACKLOG = 128          # waiting to be accepted; a burst beyond it retries its SYN
ACCEPT_PAUSE = 0.25    # seconds without accepting after the process ran out of fds
ACCEPT_BATCH = 16      # connections accepted per wake-up, between turns of the open ones

_READ, _WRITE, _DRAIN = "read", "write", "drain"
_RESET_ON_CLOSE = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST


def bind(host: str, port: int) -> socket.socket:
    """Bind early, before the app starts, so a taken port is a usage error and not a lost app."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


def verdicts(state: dict, now: float) -> tuple[tuple[int, str], tuple[int, str]]:
    """(/healthz, /readyz) as (status, body) for a published state."""
    if state["unhealthy"]:
        health = (503, state["unhealthy"])
    elif not state["child_up"]:
        health = (503, "the app is not running")
    else:
        health = (200, "ok")
    if state.get("sidecar"):  # no app of its own: ready once the watches are in place
        ready = (200, "ok") if state["watching"] else (503, "the watches are not in place yet")
    elif not state["child_up"]:
        ready = (503, "the app is not running")
    elif state["stopping"]:
        ready = (503, f"the app is being stopped ({state['stopping']})")
    elif now - state["child_started"] < state["ready_delay"]:
        ready = (503, "the app is starting")
    else:
        ready = (200, "ok")
    return health, ready


def respond(request, get_state, now: float) -> bytes:
    """The complete answer to a parsed request (an http1.Request, or the status of a bad one)."""
    if isinstance(request, int):
        return http1.answer(request, f"{http1.REASONS[request].lower()}\n".encode())
    head = request.method == "HEAD"
    if request.method not in ("GET", "HEAD"):
        return http1.answer(405, b"method not allowed\n", extra=(("Allow", "GET, HEAD"),))
    try:
        if request.path == "/metrics":
            from . import metrics

            body, kind = metrics.render(get_state(), request.headers.get("accept", ""))
            return http1.answer(200, body, kind, head)
        if request.path not in ("/healthz", "/readyz"):
            return http1.answer(404, b"not found\n", head_only=head)
        health, ready = verdicts(get_state(), now)
        status, text = health if request.path == "/healthz" else ready
        return http1.answer(status, text.encode("utf-8", "replace") + b"\n", head_only=head)
    except Exception as exc:  # noqa: BLE001 - a bad state or a broken import is an answer, not a crash
        return http1.answer(500, f"internal error ({type(exc).__name__})\n".encode(), head_only=head)


class _Conn:
    __slots__ = ("sock", "deadline", "phase", "data", "out", "dropped")

    def __init__(self, sock: socket.socket, deadline: float):
        self.sock = sock
        self.deadline = deadline
        self.phase = _READ
        self.data = bytearray()  # the request head so far
        self.out = memoryview(b"")  # what is left of the answer
        self.dropped = 0  # bytes drained after the answer


class HealthServer:
    """serve() is the thread body. close(), from another thread, makes it return (tests use it;
    cfgsup's thread is a daemon and ends with the process)."""

    def __init__(self, sock: socket.socket, get_state, *, max_connections: int = MAX_CONNECTIONS,
                 deadline: float = DEADLINE, clock=time.monotonic):
        self.listener = sock
        self.get_state = get_state
        self.max_connections = max_connections
        self.deadline = deadline
        self.clock = clock
        self.conns: dict[int, _Conn] = {}  # by fd, in accept order, which is deadline order
        self.selector = None
        self.paused_until: float | None = None  # accepting again then, after running out of fds
        self.closing = False

    def close(self) -> None:
        self.closing = True
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the selector (the listener turns readable)
        except OSError:
            pass

    def serve(self) -> None:
        """Thread body: returns only after close()."""
        self.selector = selectors.DefaultSelector()
        self.listener.setblocking(False)
        self.selector.register(self.listener, selectors.EVENT_READ, None)
        try:
            while not self.closing:
                listener_ready = False
                for key, _ in self.selector.select(self._timeout()):
                    if key.data is None:
                        listener_ready = True
                    elif key.data.sock is not None:  # not closed earlier in this batch
                        self._step(key.data)
                # New clients after the open ones had their turn, so that a flood of connects
                # cannot push out a probe whose request is already waiting to be read.
                if listener_ready:
                    self._accept()
                self._expire()
        finally:
            for conn in list(self.conns.values()):
                self._drop(conn, reset=True)
            self.selector.close()
            self.listener.close()

    def _timeout(self) -> float | None:
        """None (sleep until a client comes) unless a connection or a pause has a deadline."""
        wake = [t for t in (self._oldest_deadline(), self.paused_until) if t is not None]
        return max(0.0, min(wake) - self.clock()) if wake else None

    def _oldest_deadline(self) -> float | None:
        return next(iter(self.conns.values())).deadline if self.conns else None

    def _accept(self) -> None:
        for _ in range(ACCEPT_BATCH):  # then the open ones have a turn again
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError:
                if self.closing:
                    return
                if self.conns:  # out of fds: ours are the ones to give back, oldest first
                    self._drop(next(iter(self.conns.values())), reset=True)
                    continue
                # Out of fds or kernel memory, and none of it ours: the listener stays
                # readable, so stop asking for a moment instead of spinning (the waiting
                # clients stay in the backlog).
                self.selector.unregister(self.listener)
                self.paused_until = self.clock() + ACCEPT_PAUSE
                return
            if len(self.conns) >= self.max_connections:
                # The oldest has had the longest and is not done: a probe is answered in
                # milliseconds, so the oldest is the likeliest to be stuck, and a full table
                # of idle sockets can never lock a new probe out.
                self._drop(next(iter(self.conns.values())), reset=True)
            sock.setblocking(False)
            conn = _Conn(sock, self.clock() + self.deadline)
            try:
                self.selector.register(sock, selectors.EVENT_READ, conn)
            except (OSError, ValueError):
                sock.close()
                continue
            self.conns[sock.fileno()] = conn
            self._step(conn)  # the request is often there already

    def _step(self, conn: _Conn) -> None:
        try:
            if conn.phase == _WRITE:
                self._write(conn)
            elif conn.phase == _DRAIN:
                self._drain(conn)
            else:
                self._read(conn)
        except Exception:  # noqa: BLE001 - reset, broken pipe, or anything else one client
            self._drop(conn, reset=True)  # brought about: that client goes, the others stay

    def _read(self, conn: _Conn) -> None:
        try:
            chunk = conn.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        if not chunk:  # the client is done sending
            if conn.data:
                self._send(conn, http1.answer(400, b"bad request\n"))
            else:
                self._drop(conn)
            return
        searched = len(conn.data)
        conn.data += chunk
        end = http1.head_end(conn.data, searched)
        if end >= 0 and end <= http1.MAX_HEAD:
            request = http1.parse(conn.data[:end])
        elif len(conn.data) > http1.MAX_HEAD:
            request = 431
        else:
            return
        conn.data = bytearray()
        self._send(conn, respond(request, self.get_state, self.clock()))

    def _send(self, conn: _Conn, payload: bytes) -> None:
        conn.out = memoryview(payload)
        conn.phase = _WRITE
        self._write(conn)
        if conn.phase == _WRITE and conn.sock is not None:
            self.selector.modify(conn.sock, selectors.EVENT_WRITE, conn)

    def _write(self, conn: _Conn) -> None:
        try:
            sent = conn.sock.send(conn.out, socket.MSG_NOSIGNAL)
        except (BlockingIOError, InterruptedError):
            return
        conn.out = conn.out[sent:]
        if conn.out:
            return
        # All written. Half-close and read until the client closes, so that bytes it sent
        # after its head (a body) cannot make our close a reset that destroys the answer.
        conn.sock.shutdown(socket.SHUT_WR)
        conn.phase = _DRAIN
        self.selector.modify(conn.sock, selectors.EVENT_READ, conn)

    def _drain(self, conn: _Conn) -> None:
        try:
            chunk = conn.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        conn.dropped += len(chunk)
        if not chunk or conn.dropped > DRAIN_MAX:
            self._drop(conn)

    def _expire(self) -> None:
        now = self.clock()
        while self.conns:
            conn = next(iter(self.conns.values()))
            if conn.deadline > now:
                break
            if conn.phase == _READ and conn.data:
                self._last_word(conn)
            # A client that does not read its answer gets a reset: it frees the kernel's send
            # buffer at once instead of leaving it to retransmit into a zero window.
            self._drop(conn, reset=conn.phase == _WRITE)
        if self.paused_until is not None and self.paused_until <= now:
            self.paused_until = None
            self.selector.register(self.listener, selectors.EVENT_READ, None)

    def _last_word(self, conn: _Conn) -> None:
        """One try at telling a client that trickled part of a request why it is closed."""
        try:
            conn.sock.send(http1.answer(408, b"request timeout\n"), socket.MSG_NOSIGNAL)
        except OSError:
            pass

    def _drop(self, conn: _Conn, reset: bool = False) -> None:
        sock, conn.sock = conn.sock, None
        if sock is None:
            return
        self.conns.pop(sock.fileno(), None)
        try:
            self.selector.unregister(sock)
        except (KeyError, ValueError):
            pass
        if reset:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE)
            except OSError:
                pass
        sock.close()
