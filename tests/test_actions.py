"""Helper commands and webhooks, with real processes and real local servers."""
from __future__ import annotations

import os
import select
import shlex
import signal
import sys
import time

import psutil
import pytest

from conftest import wait_until
from supervisor.actions import TAIL_BYTES, Helper
from supervisor.child import SpawnError


def _rss() -> int:
    return psutil.Process().memory_info().rss


def drive(helper: Helper, timeout: float = 60.0):
    """Run a helper as the loop does: poll its fd, drain on POLLIN/POLLHUP, stop polling at the
    end of its output, reap it; then (status, tail, peak RSS while it ran)."""
    poller = select.poll()
    poller.register(helper.fd, select.POLLIN)
    polled, peak = True, _rss()
    deadline = time.monotonic() + timeout
    try:
        while True:
            assert time.monotonic() < deadline, f"helper {helper.argv} still running after {timeout}s"
            for _fd, _events in poller.poll(50):
                if not helper.drain() and polled:
                    poller.unregister(helper.fd)
                    polled = False
            peak = max(peak, _rss())
            pid, status = os.waitpid(helper.pid, os.WNOHANG)
            if pid:
                return status, helper.tail(), peak
    finally:
        helper.close()


def helper(command, timeout=60.0) -> Helper:
    return Helper("validate", command, dict(os.environ), timeout, time.monotonic())


def test_500_mb_of_output_keeps_memory_bounded_and_the_last_line():
    before = _rss()
    h = helper(shlex.join(["sh", "-c", "yes filler-line | head -c 500000004; echo LAST LINE"]))
    status, tail, peak = drive(h)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert h.total == 500_000_004 + len("LAST LINE\n")  # all of it went through the pipe
    assert tail.endswith("filler-line | LAST LINE")
    assert peak - before < 16 * 1024 * 1024, f"RSS grew by {(peak - before) >> 20} MiB"


DAEMON = """
import os, signal, sys, time
signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # so that it sees EPIPE, and tells us
chunk, written, end = b"daemon output\\n" * 4096, 0, time.monotonic() + 60
while time.monotonic() < end:
    try:
        written += os.write(1, chunk)
    except BrokenPipeError:
        with open(sys.argv[1], "w") as fh:
            fh.write(str(written))
        sys.exit(0)
"""


def test_a_daemon_left_behind_cannot_grow_memory(tmp_path):
    """A reload command that starts a daemon writing to its stdout forever: once the command is
    reaped the pipe is closed, and the daemon's next write fails instead of growing memory."""
    script, marker = tmp_path / "daemon.py", tmp_path / "epipe"
    script.write_text(DAEMON)
    daemon = shlex.join([sys.executable, str(script), str(marker)])
    h = helper(shlex.join(["sh", "-c", f"{daemon} & echo helper done"]))
    try:
        status, tail, _peak = drive(h)
        assert os.WEXITSTATUS(status) == 0
        # The tail ends wherever the daemon's output was when the helper was reaped: maybe in
        # the middle of one of its lines.
        last = tail.split(" | ")[-1]
        assert last and ("helper done".startswith(last) or "daemon output".startswith(last)), tail
        assert h.fd == -1  # closed once reaped
        written = int(wait_until(lambda: marker.exists() and marker.read_text(), timeout=10,
                                 what="the daemon's EPIPE"))
        assert written >= 0
    finally:
        try:
            os.killpg(h.pid, signal.SIGKILL)  # the daemon is in the helper's process group
        except ProcessLookupError:
            pass


def test_a_daemon_writing_while_the_helper_runs_is_drained_into_the_tail_only():
    h = helper(shlex.join(["sh", "-c", "yes flood | head -c 20000004 & wait; echo end"]))
    status, tail, _peak = drive(h)
    assert os.WEXITSTATUS(status) == 0 and tail.endswith("flood | end")
    assert len(h._tail) <= TAIL_BYTES and h.total > 20_000_000


def test_the_tail_is_the_last_lines():
    h = helper(shlex.join(["sh", "-c", "i=0; while [ $i -lt 2000 ]; do i=$((i+1)); echo line $i; done"]))
    _status, tail, _peak = drive(h)
    assert tail == " | ".join(f"line {i}" for i in range(1993, 2001))


def test_a_cut_first_line_is_dropped_and_one_long_line_is_kept():
    cut = helper(shlex.join(["sh", "-c", "head -c 10000 /dev/zero | tr '\\0' x; echo; echo end"]))
    assert drive(cut)[1] == "end"
    long = helper(shlex.join(["sh", "-c", "head -c 10000 /dev/zero | tr '\\0' y"]))
    assert drive(long)[1] == "y" * 2048


def test_non_utf8_and_control_characters_never_reach_the_log_line_raw():
    h = helper(shlex.join(["printf", "ok\\n\\377\\376bad \\033[31mred\\r\\nlast\\0x\\n"]))
    _status, tail, _peak = drive(h)
    assert tail == "ok | \ufffd\ufffdbad \ufffd[31mred | last\ufffdx"


def test_a_helper_that_cannot_start_leaves_no_fd_behind():
    before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(SpawnError):
        helper("no-such-helper-xyz")
    assert len(os.listdir("/proc/self/fd")) == before


def test_the_read_end_is_non_blocking_and_close_on_exec_and_drain_after_close_is_false():
    h = helper("true")
    try:
        assert not os.get_blocking(h.fd) and not os.get_inheritable(h.fd)
    finally:
        drive(h)
    assert h.drain() is False and h.tail() == ""


# ---- webhooks --------------------------------------------------------------------------------
import json  # noqa: E402
import queue  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import threading  # noqa: E402

from supervisor.actions import changed_header, post_webhooks  # noqa: E402

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class Server:
    """A local server: each connection's request head is recorded, then `answer(conn, index)`
    decides what the client gets. Every thread it starts is bounded and joined on close()."""

    def __init__(self, answer, tls=None):
        self.answer, self.tls = answer, tls
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.url = f"http{'s' if tls else ''}://127.0.0.1:{self.port}"
        self.requests: list[bytes] = []
        self.done = threading.Event()
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self):
        while not self.done.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self.threads.append(thread)
            thread.start()

    def _serve(self, conn):
        try:
            conn.settimeout(5)
            if self.tls:
                conn = self.tls.wrap_socket(conn, server_side=True)
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 65536:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                head += chunk
            self.requests.append(head)
            self.answer(conn, len(self.requests) - 1, self)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self):
        self.done.set()
        self.sock.close()
        for thread in self.threads:
            thread.join(timeout=10)


@pytest.fixture
def serve():
    servers = []

    def start(answer, tls=None):
        servers.append(Server(answer, tls))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def call(urls, timeout=2.0, retries=0, changed="a.conf", method="POST", wait=30.0):
    """post_webhooks on its own thread, as the loop runs it: (ok, detail, seconds taken). Fails
    unless report() is called exactly once and the thread ends."""
    results: queue.Queue = queue.Queue()
    thread = threading.Thread(target=post_webhooks, daemon=True,
                              args=(urls, method, retries, timeout, changed,
                                    lambda ok, detail: results.put((ok, detail))))
    started = time.monotonic()
    thread.start()
    try:
        ok, detail = results.get(timeout=wait)
    except queue.Empty:
        raise AssertionError(f"no report within {wait}s") from None
    took = time.monotonic() - started
    thread.join(timeout=5)
    assert not thread.is_alive() and results.empty()
    assert "\n" not in detail
    return ok, detail, took


def test_a_server_trickling_its_headers_is_bounded_by_the_timeout(serve):
    def trickle(conn, _index, server):
        conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
        for _ in range(300):  # one byte every 0.1 s: a per-read timeout never fires
            if server.done.wait(0.1):
                return
            conn.sendall(b"a")

    server = serve(trickle)
    ok, detail, took = call([server.url + "/"], timeout=1.0, wait=15)
    assert not ok and "within 1s" in detail
    assert took < 1.0 + 5  # the timeout plus generous slack for a loaded machine


def test_a_server_that_never_answers_is_bounded_by_the_timeout(serve):
    server = serve(lambda conn, _index, srv: srv.done.wait(30))
    ok, detail, took = call([server.url + "/"], timeout=0.5, retries=1, wait=15)
    assert not ok and "within 0.5s" in detail and "(2 attempts)" in detail
    assert took < 2 * 0.5 + BACKOFF_SLACK


BACKOFF_SLACK = 0.5 + 5  # the one backoff between two attempts, plus slack


def test_unicode_names_are_percent_encoded_in_the_header(serve):
    server = serve(lambda conn, _index, _srv: conn.sendall(OK))
    ok, detail, _took = call([server.url + "/-/reload?x=1"], changed="日本.conf,b c,\udcff")
    assert ok, detail
    head = server.requests[0].decode("ascii")
    assert head.startswith("POST /-/reload?x=1 HTTP/1.1\r\n")
    assert "\r\nX-Cfgsup-Changed: %E6%97%A5%E6%9C%AC.conf,b%20c,%FF\r\n" in head
    assert f"\r\nHost: 127.0.0.1:{server.port}\r\n" in head
    assert "\r\nContent-Length: 0\r\n" in head and "\r\nConnection: close\r\n" in head


def test_changed_header_is_ascii_bounded_and_unambiguous():
    assert changed_header(["a,b", "*", "ok.conf"]) == "a%2Cb,%2A,ok.conf"
    many = changed_header([f"key-{i:05}" for i in range(10000)])
    assert len(many) <= 4096 and many.endswith(",*") and many.isascii()
    assert changed_header("\ud800") == "%ED%A0%80"  # even a lone surrogate is encodable


def test_a_server_that_resets_is_a_failure_with_one_line(serve):
    def reset(conn, _index, _srv):
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")

    server = serve(reset)
    ok, detail, _took = call([server.url + "/"])
    assert not ok and ("reset" in detail.lower() or "closed the connection" in detail), detail


def test_500_then_200_succeeds_on_a_retry(serve):
    def flaky(conn, index, _srv):
        conn.sendall(b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n" if index == 0 else OK)

    server = serve(flaky)
    ok, detail, _took = call([server.url + "/"], retries=2)
    assert ok, detail
    assert len(server.requests) == 2


def test_retries_exhausted_name_the_last_answer(serve):
    server = serve(lambda conn, _index, _srv: conn.sendall(b"HTTP/1.0 503 Busy\r\n\r\n"))
    ok, detail, _took = call([server.url + "/"], retries=1)
    assert not ok and detail == f"{server.url}/ answered 503 (2 attempts)"
    assert len(server.requests) == 2


def test_refused_and_names_with_several_addresses(serve):
    server = serve(lambda conn, _index, _srv: conn.sendall(OK))
    # localhost may resolve to ::1 first, where nothing listens: the next address is tried.
    ok, detail, _took = call([f"http://localhost:{server.port}/"])
    assert ok, detail
    free = socket.create_server(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    ok, detail, _took = call([f"http://127.0.0.1:{port}/"])
    assert not ok and "Connection refused" in detail


def test_an_exception_anywhere_finishes_the_action_as_failed_without_a_traceback(capsys):
    ok, detail, _took = call(["http://127.0.0.1:1/"], changed=None)  # not names at all
    assert not ok and detail.startswith("webhook failed: ")
    ok, detail, _took = call(["http://127.0.0.1:99999/"])  # a URL that escaped the CLI's check
    assert not ok and "1-65535" in detail
    assert "Traceback" not in capsys.readouterr().err


def test_head_and_get_send_no_content_length_and_read_no_body(serve):
    server = serve(lambda conn, _index, _srv: conn.sendall(b"HTTP/1.1 204 No Content\r\n\r\n"))
    for method in ("GET", "HEAD"):
        ok, detail, _took = call([server.url + "/"], method=method)
        assert ok, detail
    assert [r.split(b" ")[0] for r in server.requests] == [b"GET", b"HEAD"]
    assert all(b"Content-Length" not in r for r in server.requests)


def test_http_webhooks_import_neither_http_client_nor_ssl(serve):
    server = serve(lambda conn, _index, _srv: conn.sendall(OK))
    code = ("import json, sys; from supervisor.actions import post_webhooks; got = [];"
            f"post_webhooks([{server.url + '/'!r}], 'POST', 0, 5.0, 'a', lambda ok, d: got.append(ok));"
            "print(json.dumps([got, sorted(m for m in ('ssl', 'http.client') if m in sys.modules)]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [[True], []]


needs_openssl = pytest.mark.skipif(not os.environ.get("CI") and not shutil.which("openssl"),
                                   reason="needs the openssl command to make a certificate")


@needs_openssl
def test_https_verifies_the_certificate_within_the_same_deadline(serve, tmp_path, monkeypatch):
    import ssl

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=60)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = serve(lambda conn, _index, _srv: conn.sendall(OK), tls=context)
    ok, detail, _took = call([server.url + "/"])
    assert not ok and "certificate verify failed" in detail  # not trusted yet
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    ok, detail, _took = call([server.url + "/"])
    assert ok, detail
    # A TLS server that never finishes the handshake is held to the timeout too.
    silent = socket.create_server(("127.0.0.1", 0))
    try:
        ok, detail, took = call([f"https://127.0.0.1:{silent.getsockname()[1]}/"], timeout=0.5, wait=15)
        assert not ok and "within 0.5s" in detail and took < 0.5 + 5
    finally:
        silent.close()


def test_a_unicode_file_name_is_acted_on_and_the_next_change_too(run_cfgsup, serve, tmp_path):
    """Issue 9.2 end to end: the header once killed the webhook thread, and with it every later
    change. Both changes are now called, and the name arrives percent-encoded."""
    server = serve(lambda conn, _index, _srv: conn.sendall(OK))
    config = tmp_path / "config"
    config.mkdir()
    running = run_cfgsup("--watch", str(config), "--on-change", "http", "--webhook",
                         server.url + "/-/reload", "--", "sleep", "300")
    running.wait_line(r"watching ")
    (config / "日本.conf").write_text("v1\n")
    running.wait_line(r"called the webhook\(s\) for 日本\.conf in ")
    mark = running.mark()
    (config / "b.conf").write_text("v1\n")
    running.wait_line(r"called the webhook\(s\) for b\.conf in ", start=mark)
    assert b"\r\nX-Cfgsup-Changed: %E6%97%A5%E6%9C%AC.conf\r\n" in server.requests[0]
    assert b"\r\nX-Cfgsup-Changed: b.conf\r\n" in server.requests[1]
    assert "Traceback" not in running.text()
