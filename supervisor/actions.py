"""What a content change does, apart from the app itself (the loop owns the app).

Helper commands (`--validate`, `--reload-command`) run as processes the loop reaps like any
other child; their output goes to an anonymous memory file so the loop never blocks on a pipe,
and only a short tail of it is ever logged. Webhooks run on a short-lived thread that reports
one result event back to the loop.
"""
from __future__ import annotations

import os
import shlex
import time

from .child import spawn_helper


class Helper:
    """A validate or reload command in flight."""

    def __init__(self, purpose: str, command: str, env: dict, timeout: float, now: float,
                 spawn=spawn_helper):
        self.purpose = purpose
        self.argv = shlex.split(command)
        self.output = os.memfd_create(f"cfgsup-{purpose}")
        self.deadline = now + timeout
        self.timed_out = False
        try:
            self.pid = spawn(self.argv, env, self.output)
        except Exception:
            os.close(self.output)
            raise

    def tail(self, lines: int = 8, limit: int = 2048) -> str:
        """The last lines the command printed, for a log line. Closes the output."""
        try:
            size = os.fstat(self.output).st_size
            data = os.pread(self.output, limit, max(0, size - limit))
        except OSError:
            data = b""
        finally:
            self.close()
        text = data.decode("utf-8", "replace").strip().splitlines()[-lines:]
        return " | ".join(line.strip() for line in text if line.strip())

    def close(self) -> None:
        if self.output >= 0:
            os.close(self.output)
            self.output = -1


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
