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


BACKOFF_START, BACKOFF_MAX = 0.5, 10.0  # between a webhook's retries: doubling, capped
CHANGED_MAX = 4096                     # bytes of names in X-Cfgsup-Changed
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~/")


def _one_line(exc: BaseException, limit: int = 200) -> str:
    text = " ".join((getattr(exc, "strerror", None) or str(exc) or type(exc).__name__).split())
    return text if len(text) <= limit else text[:limit] + "..."


def _quote(name: str) -> str:
    """A file name as UTF-8, percent-encoded but for RFC 3986's unreserved characters (and /).
    Names the file system could not decode (surrogate escapes) keep their original bytes."""
    try:
        raw = name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raw = name.encode("utf-8", "surrogatepass")
    return "".join(chr(b) if b in _UNRESERVED else f"%{b:02X}" for b in raw)


def changed_header(changed) -> str:
    """X-Cfgsup-Changed: the changed names, comma-separated and each percent-encoded (so always
    ASCII, and a comma in a name is %2C); at most CHANGED_MAX bytes, ending in `*` when cut."""
    names = changed.split(",") if isinstance(changed, str) else list(changed)
    kept, size = [], 0
    for name in names:
        quoted = _quote(name)
        if size + len(quoted) + 2 > CHANGED_MAX:
            kept.append("*")  # never a name: `*` in a name is %2A
            break
        kept.append(quoted)
        size += len(quoted) + 1
    return ",".join(kept)


def post_webhooks(urls, method: str, retries: int, timeout: float, changed, report) -> None:
    """Thread body: call every URL in turn, retrying each with backoff; then report(ok, detail)
    exactly once, whatever fails in here, so the action always finishes. `changed`: the changed
    names, a list or one comma-separated string."""
    ok, detail = False, "the webhook thread failed"
    try:
        ok, detail = _call_all(urls, method, retries, timeout, changed)
    except BaseException as exc:  # noqa: BLE001 - the action must finish, whatever broke
        detail = f"webhook failed: {_one_line(exc)}"
    try:
        report(ok, detail[:1000])
    except Exception:  # noqa: BLE001 - nobody left to tell; the loop's post() does not raise
        pass


def _call_all(urls, method: str, retries: int, timeout: float, changed) -> tuple[bool, str]:
    from .settings import parse_url
    from .webhook import request

    headers = {"User-Agent": "cfgsup", "X-Cfgsup-Changed": changed_header(changed)}
    failures = []
    for text in urls:
        try:
            url = parse_url(text)
        except ValueError as exc:
            failures.append(_one_line(exc))
            continue
        delay, last = BACKOFF_START, ""
        for attempt in range(retries + 1):
            try:
                status = request(url, method, headers, timeout)
                if 200 <= status < 300:
                    last = ""
                    break
                last = f"{url.shown} answered {status}"
            except Exception as exc:  # noqa: BLE001 - any failure is this attempt's
                last = f"{url.shown}: {_one_line(exc)}"
            if attempt < retries:
                time.sleep(delay)  # own thread: the loop keeps running meanwhile
                delay = min(delay * 2, BACKOFF_MAX)
        if last:
            failures.append(last + (f" ({retries + 1} attempts)" if retries else ""))
    return not failures, "; ".join(failures) or f"{len(urls)} webhook(s) answered 2xx"
