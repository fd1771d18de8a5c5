"""What a content change does, apart from the app itself (the loop owns the app).

Helper commands (`--validate`, `--reload-command`) run as processes the loop reaps like any
other child. Their output goes into a pipe whose read end the loop drains into a tail of a few
KiB (only the tail is ever logged), so however much a helper, or a daemon it leaves behind,
prints, cfgsup holds no more than that. The pipe is closed once the helper has been reaped: a
daemon still writing to it then gets EPIPE (or SIGPIPE) instead of filling memory. Webhooks run
on a short-lived thread that reports one result event back to the loop.
"""
from __future__ import annotations

import os
import shlex
import time

from .child import spawn_helper

TAIL_BYTES = 4096        # kept of a helper's output; only the tail is ever logged
READS_PER_DRAIN = 16     # 16 reads of 64 KiB at most per drain(): a flood cannot hold the loop
# Control characters (but tab) of a helper's output never reach a log line as they are.
_CONTROLS = {c: "\ufffd" for c in (*range(0x00, 0x09), *range(0x0a, 0x20), 0x7f)}


class Helper:
    """A validate or reload command in flight, and its output.

    For the loop: register `fd` (read end, non-blocking, close-on-exec) for POLLIN; call
    `drain()` on POLLIN or POLLHUP (False: end of output, unregister `fd`); once the helper is
    reaped, `tail()` drains what is left, closes the pipe and gives the last lines."""

    def __init__(self, purpose: str, command: str, env: dict, timeout: float, now: float,
                 spawn=spawn_helper):
        self.purpose = purpose
        self.argv = shlex.split(command)
        self.deadline = now + timeout
        self.timed_out = False
        self.total = 0                 # bytes of output seen
        self._tail = bytearray()
        self.fd, write_end = os.pipe2(os.O_CLOEXEC)
        try:
            os.set_blocking(self.fd, False)  # our end only: the helper's writes stay blocking
            self.pid = spawn(self.argv, env, write_end)
        except BaseException:
            os.close(self.fd)
            self.fd = -1
            raise
        finally:
            os.close(write_end)  # only the helper (and what it starts) holds the write end now

    def drain(self) -> bool:
        """Read what is there, keep the last TAIL_BYTES. False once the output has ended (every
        writer closed it) or the pipe is closed; True if more may come."""
        for _ in range(READS_PER_DRAIN):
            if self.fd < 0:
                return False
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                return True
            except OSError:
                return False
            if not chunk:
                return False
            self.total += len(chunk)
            if len(chunk) >= TAIL_BYTES:
                self._tail[:] = chunk[-TAIL_BYTES:]
            else:
                self._tail += chunk
                del self._tail[:-TAIL_BYTES]
        return True

    def tail(self, lines: int = 8, limit: int = 2048) -> str:
        """The last lines the command printed, for one log line. Drains what is left and closes
        the pipe (call it once the helper has been reaped)."""
        self.drain()
        self.close()
        data = bytes(self._tail[-limit:])
        cut = self.total > len(data)
        text = data.decode("utf-8", "replace").splitlines()
        if cut and len(text) > 1:
            text = text[1:]  # the first line is only the end of a longer one
        kept = [line.translate(_CONTROLS).strip() for line in text]
        return " | ".join([line for line in kept if line][-lines:])

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def post_webhooks(urls, method: str, retries: int, timeout: float, changed: str, report) -> None:
    """Thread body: call every URL, retrying each with backoff; report(ok, detail) once."""
    import http.client
    from urllib.parse import urlsplit

    failures = []
    for url in urls:
        parts = urlsplit(url)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        conn_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        delay = 0.5
        last = ""
        for attempt in range(retries + 1):
            try:
                conn = conn_class(parts.hostname, parts.port, timeout=timeout)
                try:
                    conn.request(method, path, body=b"" if method in ("POST", "PUT", "PATCH") else None,
                                 headers={"User-Agent": "cfgsup", "X-Cfgsup-Changed": changed})
                    status = conn.getresponse().status
                finally:
                    conn.close()
                if 200 <= status < 300:
                    last = ""
                    break
                last = f"{url} answered {status}"
            except (OSError, http.client.HTTPException) as exc:
                last = f"{url}: {exc or type(exc).__name__}"
            if attempt < retries:
                time.sleep(delay)  # own thread: the loop keeps running meanwhile
                delay = min(delay * 2, 10.0)
        if last:
            failures.append(last)
    report(not failures, "; ".join(failures) or f"{len(urls)} webhook(s) answered 2xx")
