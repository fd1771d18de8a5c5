"""One HTTP/1.1 request over a socket, with one deadline for the whole of it (for --on-change http).

Not http.client: it imports ssl even for http:// (4.4 MiB of RSS in PID 1), and its timeout
applies to each socket operation, so a server trickling its answer could hold a request for
minutes. Here every operation gets only the time left until the request's deadline: name
lookup, connect, TLS handshake, send, status line, headers and body together. ssl is imported
only for https://. The request has no body (Content-Length: 0 where the method expects one) and
asks the server to close the connection; the answer's body is read up to 64 KiB and ignored.
"""
from __future__ import annotations

import socket
import time

MAX_HEAD = 16384   # status line and headers of an answer
MAX_BODY = 65536   # read and thrown away, so that the server sees a clean close


class WebhookError(Exception):
    """A request that failed, with a one-line reason."""


class _Deadline:
    def __init__(self, timeout: float):
        self.timeout = timeout
        self.end = time.monotonic() + timeout

    def left(self) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            raise self.expired()
        return left

    def expired(self) -> WebhookError:
        return WebhookError(f"no complete answer within {self.timeout:g}s (--webhook-timeout)")


def request(url, method: str, headers: dict, timeout: float) -> int:
    """Send `method url` (a settings.Url) with `headers` (ASCII values); the answer's status."""
    deadline = _Deadline(timeout)
    lines = [f"{method} {url.target} HTTP/1.1", f"Host: {url.host_header}"]
    for name, value in headers.items():
        if not value.isascii() or "\r" in value or "\n" in value:
            raise WebhookError(f"header {name} is not one line of ASCII")
        lines.append(f"{name}: {value}")
    if method not in ("GET", "HEAD"):
        lines.append("Content-Length: 0")
    lines.append("Connection: close")
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")
    try:
        sock = _connect(url, deadline)
        try:
            if url.scheme == "https":
                sock = _tls(sock, url.host, deadline)
            sock.settimeout(deadline.left())
            sock.sendall(data)  # one timeout for the whole call (Python >= 3.5)
            status, rest, length = _read_head(sock, deadline)
            if method != "HEAD" and status not in (204, 304):
                _drain(sock, rest, length, deadline)
            return status
        finally:
            sock.close()
    except TimeoutError:
        raise deadline.expired() from None


def _addresses(host: str, port: int, deadline: _Deadline) -> list:
    """getaddrinfo within the deadline. getaddrinfo itself cannot be given a timeout, so a name
    (not an address) is looked up on a thread of its own, which is left to the resolver's own
    timeouts if the deadline passes first."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except OSError:
            continue
        return socket.getaddrinfo(host, port, family, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST)
    import threading

    result: list = []

    def lookup():
        try:
            result.append(socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM))
        except Exception as exc:  # noqa: BLE001 - handed to the waiting thread
            result.append(exc)

    thread = threading.Thread(target=lookup, name="cfgsup-resolve", daemon=True)
    thread.start()
    thread.join(deadline.left())
    if not result:
        raise WebhookError(f"cannot resolve {host} within {deadline.timeout:g}s (--webhook-timeout)")
    if isinstance(result[0], Exception):
        raise result[0]
    return result[0]


def _connect(url, deadline: _Deadline) -> socket.socket:
    error: OSError | None = None
    for family, kind, proto, _name, address in _addresses(url.host, url.port, deadline):
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(deadline.left())
            sock.connect(address)
            return sock
        except OSError as exc:
            sock.close()
            if isinstance(exc, TimeoutError):
                raise
            error = exc  # refused or unreachable: try the next address
        except BaseException:
            sock.close()
            raise
    raise error or WebhookError(f"no address for {url.host}")


def _tls(sock: socket.socket, host: str, deadline: _Deadline):
    import ssl

    context = ssl.create_default_context()
    sock.settimeout(deadline.left())
    tls = context.wrap_socket(sock, server_hostname=host, do_handshake_on_connect=False)
    try:
        tls.settimeout(deadline.left())
        tls.do_handshake()
    except BaseException:
        tls.close()
        raise
    return tls


def _status(head: bytes) -> int:
    line = head.split(b"\n", 1)[0].strip()
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or len(parts[1]) != 3 or not parts[1].isdigit():
        raise WebhookError("the answer is not HTTP/1")
    return int(parts[1])


def _read_head(sock, deadline: _Deadline):
    """(status, bytes after the headers, body length: an int, "chunked" or None)."""
    buf = b""
    while True:
        ends = [(i, n) for i, n in ((buf.find(b"\r\n\r\n"), 4), (buf.find(b"\n\n"), 2)) if i >= 0]
        if ends:
            index, size = min(ends)
            head, buf = buf[:index], buf[index + size:]
            status = _status(head)
            if 100 <= status < 200 and status != 101:
                continue  # an interim answer (103 Early Hints...): the real one follows
            return status, buf, _body_length(head)
        if len(buf) > MAX_HEAD:
            raise WebhookError(f"the answer's headers are longer than {MAX_HEAD // 1024} KiB")
        sock.settimeout(deadline.left())
        chunk = sock.recv(4096)
        if not chunk:
            if b"\n" in buf:  # a status line, then the server closed: the status stands
                return _status(buf), b"", 0
            raise WebhookError("the server closed the connection without answering")
        buf += chunk


def _body_length(head: bytes):
    for line in head.split(b"\n")[1:]:
        name, _, value = line.partition(b":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == b"transfer-encoding" and b"chunked" in value:
            return "chunked"
        if name == b"content-length" and value.isdigit():
            return int(value)
    return None


def _drain(sock, got: bytes, length, deadline: _Deadline) -> None:
    """Read the body (up to MAX_BODY, within the deadline) and forget it; the status is in, so
    nothing that happens here fails the request."""
    seen, last = len(got), got[-5:]
    try:
        while seen < MAX_BODY:
            if (isinstance(length, int) and seen >= length) or (length == "chunked" and last.endswith(b"0\r\n\r\n")):
                return
            sock.settimeout(deadline.left())
            chunk = sock.recv(16384)
            if not chunk:
                return
            seen, last = seen + len(chunk), (last + chunk)[-5:]
    except (OSError, WebhookError):
        pass
