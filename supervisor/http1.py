"""The little of HTTP/1.0 and 1.1 the health port speaks: one request head in, one answer out.

Written here rather than taken from http.server, which imports http.client and with it ssl:
OpenSSL alone is 4.4 MiB of RSS in a PID 1 that never speaks TLS. Every answer closes the
connection, so there is no keep-alive, pipelining or request body to handle.
"""
from __future__ import annotations

import time

MAX_HEAD = 8192  # bytes of request line and headers; a kubelet probe sends about 150

REASONS = {
    200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
    408: "Request Timeout", 431: "Request Header Fields Too Large",
    500: "Internal Server Error", 503: "Service Unavailable", 505: "HTTP Version Not Supported",
}

# RFC 9110 token characters (methods and header names).
_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789"
                   "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class Request:
    __slots__ = ("method", "path", "headers")

    def __init__(self, method: str, path: str, headers: dict[str, str]):
        self.method = method
        self.path = path        # without the query string
        self.headers = headers  # lower-case names; repeated fields joined with ", "


def head_end(data: bytes | bytearray, start: int = 0) -> int:
    """Index just past the blank line that ends a request head, or -1. Bare LF line ends are
    accepted as RFC 9112 allows; `start` lets a caller skip what it already searched."""
    start = max(0, start - 3)
    crlf = data.find(b"\r\n\r\n", start)
    lf = data.find(b"\n\n", start)
    ends = [i + n for i, n in ((crlf, 4), (lf, 2)) if i >= 0]
    return min(ends) if ends else -1


def parse(head: bytes | bytearray) -> Request | int:
    """A request head (up to and including its blank line) as a Request, or the status code
    that answers it: 400 for anything malformed, 505 for an HTTP version other than 1.x."""
    # latin-1 maps every byte to one character, so decoding never fails; non-ASCII is refused below.
    lines = bytes(head).decode("latin-1").split("\n")
    lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        return 400
    parts = lines[0].split(" ")
    if len(parts) != 3:
        return 400
    method, target, version = parts
    if not method or not set(method) <= _TOKEN:
        return 400
    if (len(version) != 8 or not version.startswith("HTTP/") or version[6] != "."
            or not version[5].isdigit() or not version[7].isdigit()):
        return 400
    if version[5] != "1":
        return 505
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        # No space before the colon, no obsolete line folding, nothing outside visible ASCII.
        if not colon or not name or not set(name) <= _TOKEN or not _printable(value):
            return 400
        name = name.lower()
        value = value.strip(" \t")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    path = _path(target)
    if path is None:
        return 400
    return Request(method, path, headers)


def _printable(text: str) -> bool:
    return all(" " <= ch <= "~" or ch == "\t" for ch in text)


def _path(target: str) -> str | None:
    """The path of an origin-form (`/healthz?x`) or absolute-form (`http://host/healthz`) target."""
    lower = target[:8].lower()
    if lower.startswith("http://") or lower.startswith("https://"):
        rest = target[target.index("//") + 2:]
        slash = rest.find("/")
        target = rest[slash:] if slash >= 0 else "/"
    if not target.startswith("/") or not all("!" <= ch <= "~" for ch in target):
        return None
    return target.split("?", 1)[0].split("#", 1)[0]


def answer(status: int, body: bytes, content_type: str = "text/plain; charset=utf-8",
           head_only: bool = False, extra: tuple[tuple[str, str], ...] = ()) -> bytes:
    """A complete response that closes the connection. HEAD gets the same headers, no body."""
    lines = [
        f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}",
        f"Date: {http_date(time.time())}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in extra),
        "", "",
    ]
    head = "\r\n".join(lines).encode("latin-1")
    return head if head_only else head + body


def http_date(now: float) -> str:
    """RFC 9110's IMF-fixdate, without strftime's locale-dependent names."""
    t = time.gmtime(now)
    return (f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year} "
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT")
