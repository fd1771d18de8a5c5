"""The health port: HTTP answers, slow and idle clients, bounds, deadlines, metrics, imports."""
from __future__ import annotations

import json
import os
import select
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import APP, wait_until
from supervisor import health, http1, metrics

STATE = {
    "child_up": True, "child_started": 0.0, "stopping": None, "ready_delay": 0.0,
    "unhealthy": None, "changes": 2, "actions": {("signal", "done"): 1, ("signal", "rejected"): 1},
    "rejections": 1, "rollbacks": 0, "held": False, "probation": False,
    "restarts": 0, "orphans": 3, "last_change": 1700000000.25,
    "last_apply": 1700000000.5, "watches": [("/etc/config", "ab" * 16, "inotify")],
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def exchange(port: int, data: bytes, half_close: bool = False, timeout: float = 2.0) -> bytes:
    """Send `data`, read until the server closes; every step bounded by `timeout`."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    return b"".join(chunks)


def split(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    version, status, _ = lines[0].split(" ", 2)
    assert version in ("HTTP/1.0", "HTTP/1.1")  # Prometheus answers a 1.0 request in kind
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(status), headers, body


def get(port: int, path: str, accept: str | None = None, timeout: float = 2.0):
    extra = f"Accept: {accept}\r\n" if accept else ""
    return split(exchange(port, f"GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode(), timeout=timeout))


class Served:
    def __init__(self, state, **options):
        sock = health.bind("127.0.0.1", 0)
        self.port = sock.getsockname()[1]
        get_state = state if callable(state) else (lambda: state)
        self.server = health.HealthServer(sock, get_state, **options)
        self.thread = threading.Thread(target=self.server.serve, daemon=True)
        self.thread.start()


@pytest.fixture
def serve():
    started: list[Served] = []

    def start(state=STATE, **options) -> Served:
        started.append(Served(state, **options))
        return started[-1]

    yield start
    for served in started:
        served.server.close()
        served.thread.join(timeout=5)
        assert not served.thread.is_alive(), "serve() did not return after close()"


def ended(sock: socket.socket) -> bool:
    """Whether the server has closed this connection (EOF or reset), without blocking."""
    sock.setblocking(False)
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return True
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


# ---- HTTP ------------------------------------------------------------------------------------

@pytest.mark.parametrize("request_bytes, status, body", [
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 200, b"ok\n"),
    (b"GET /healthz HTTP/1.0\r\n\r\n", 200, b"ok\n"),                       # no Host in 1.0
    (b"GET /readyz?verbose=1 HTTP/1.1\r\nHost: x\r\n\r\n", 200, b"ok\n"),
    (b"GET http://pod:9102/healthz HTTP/1.1\r\nHost: pod\r\n\r\n", 200, b"ok\n"),  # absolute form
    (b"GET /healthz HTTP/1.1\nHost: x\n\n", 200, b"ok\n"),                  # bare LF line ends
    (b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 200, b""),
    (b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", 404, b"not found\n"),
    (b"GET /healthz/ HTTP/1.1\r\nHost: x\r\n\r\n", 404, b"not found\n"),
    (b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc", 405, b"method not allowed\n"),
    (b"DELETE /metrics HTTP/1.0\r\n\r\n", 405, b"method not allowed\n"),
    (b"GET /healthz HTTP/2.0\r\n\r\n", 505, b"http version not supported\n"),
    (b"garbage\r\n\r\n", 400, b"bad request\n"),
    (b"GET /healthz\r\n\r\n", 400, b"bad request\n"),                       # HTTP/0.9
    (b"GET  /healthz HTTP/1.1\r\n\r\n", 400, b"bad request\n"),
    (b"GET /healthz HTTP/1.1\r\nno colon\r\n\r\n", 400, b"bad request\n"),
    (b"GET /healthz HTTP/1.1\r\nHost : x\r\n\r\n", 400, b"bad request\n"),
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", 400, b"bad request\n"),
    (b"GET /healthz HTTP/1.1\r\nX: \xff\xfe\r\n\r\n", 400, b"bad request\n"),
    (b"GET /h\xc3\xa9 HTTP/1.1\r\n\r\n", 400, b"bad request\n"),
    (b"GET * HTTP/1.1\r\n\r\n", 400, b"bad request\n"),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400, b"bad request\n"),  # TLS hello
])
def test_answers(serve, request_bytes, status, body):
    served = serve()
    got_status, headers, got_body = split(exchange(served.port, request_bytes))
    assert (got_status, got_body) == (status, body)
    assert headers["Connection"] == "close"
    assert headers["Date"].endswith(" GMT")
    if status == 405:
        assert headers["Allow"] == "GET, HEAD"
    if request_bytes.startswith(b"HEAD"):
        assert headers["Content-Length"] == "3"  # what GET would send
    else:
        assert headers["Content-Length"] == str(len(body))


def test_verdicts_reach_the_client(serve):
    served = serve(dict(STATE, child_up=False))
    assert get(served.port, "/healthz")[0::2] == (503, b"the app is not running\n")
    served = serve(dict(STATE, stopping="restart"))
    assert get(served.port, "/readyz")[0::2] == (503, b"the app is being stopped (restart)\n")
    assert get(served.port, "/healthz")[0] == 200


def test_a_state_that_cannot_be_read_is_a_500_and_the_server_goes_on(serve):
    states = iter([{}, STATE])
    served = serve(lambda: next(states))
    assert get(served.port, "/healthz")[0::2] == (500, b"internal error (KeyError)\n")
    assert get(served.port, "/healthz")[0] == 200


def test_head_too_large_is_431(serve):
    served = serve()
    big = b"GET /healthz HTTP/1.1\r\n" + b"X-Filler: " + b"a" * 20000 + b"\r\n\r\n"
    assert split(exchange(served.port, big, half_close=True))[0] == 431
    # A head that never ends is cut off at the cap too, whatever the client goes on sending.
    with socket.create_connection(("127.0.0.1", served.port), timeout=2) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nX: " + b"a" * (http1.MAX_HEAD + 10))
        assert sock.recv(65536).startswith(b"HTTP/1.1 431 ")
    assert get(served.port, "/healthz")[0] == 200


def test_half_closed_clients(serve):
    served = serve()
    assert split(exchange(served.port, b"GET /readyz HTTP/1.0\r\n\r\n", half_close=True))[0] == 200
    # The client stopped sending before its head was complete: it still gets an answer.
    assert split(exchange(served.port, b"GET /readyz HTTP/1.0\r\n", half_close=True))[0] == 400
    assert exchange(served.port, b"", half_close=True) == b""  # said nothing: closed, no answer


def test_reset_mid_answer_and_mid_request(serve):
    served = serve(dict(STATE, watches=[(f"/w/{i}", "ab" * 16, "inotify") for i in range(20000)]))
    for data in (b"GET /metrics HTTP/1.1\r\n\r\n", b"GET /metr"):
        for _ in range(5):
            sock = socket.create_connection(("127.0.0.1", served.port), timeout=2)
            sock.sendall(data)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()  # RST, while the server writes or reads
    assert get(served.port, "/healthz")[0] == 200
    assert served.thread.is_alive()


REQUEST_LINES = st.builds(
    lambda m, t, v: f"{m} {t} {v}".encode(),
    st.sampled_from(["GET", "HEAD", "POST", "get", "G\x00T", ""]),
    st.sampled_from(["/healthz", "/readyz", "/metrics", "/", "*", "http://x", "//", "/%00", ""]),
    st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/9.9", "HTTP/1", "http/1.1", "HTTP/1.1 x"]),
)
HEADERS = st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=5)


def test_fuzz_every_input_gets_one_well_formed_answer(serve):
    served = serve(deadline=1.0)

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.one_of(
        st.binary(min_size=1, max_size=3000),
        st.builds(lambda line, heads, end: line + b"\r\n" + b"\r\n".join(heads) + end,
                  REQUEST_LINES, HEADERS, st.sampled_from([b"\r\n\r\n", b"\n\n", b"\r\n", b""])),
    ))
    def check(data):
        raw = exchange(served.port, data, half_close=True)
        status, headers, body = split(raw)
        assert status in (200, 400, 404, 405, 431, 505)
        assert headers["Connection"] == "close"
        assert len(body) in (0, int(headers["Content-Length"]))

    check()
    assert get(served.port, "/healthz")[0] == 200


# ---- slow, idle and too many clients ------------------------------------------------------------

def test_a_silent_connection_is_closed_at_the_deadline(serve):
    served = serve(deadline=0.5)
    sock = socket.create_connection(("127.0.0.1", served.port), timeout=5)
    start = time.monotonic()
    assert sock.recv(1) == b""  # the server's FIN, not our timeout
    assert time.monotonic() - start >= 0.4
    sock.close()


def test_the_deadline_is_for_the_whole_connection_not_per_read(serve):
    served = serve(deadline=0.5)
    with socket.create_connection(("127.0.0.1", served.port), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
        for _ in range(100):  # one byte every 0.1 s, for at most 10 s
            if select.select([sock], [], [], 0.1)[0]:
                break
            sock.sendall(b"a")
        assert sock.recv(65536).startswith(b"HTTP/1.1 408 ")


def test_connections_beyond_the_bound_push_out_the_oldest(serve):
    served = serve(max_connections=64, deadline=60.0)
    conns = [socket.create_connection(("127.0.0.1", served.port), timeout=5) for _ in range(100)]
    try:
        assert get(served.port, "/healthz", timeout=2)[0] == 200
        # 100 idle + the probe through a table of 64: the first 37 made room, oldest first.
        wait_until(lambda: all(ended(c) for c in conns[:37]), what="the oldest closed")
        assert not any(ended(c) for c in conns[37:])
    finally:
        for sock in conns:
            sock.close()


def test_a_client_that_never_reads_is_cut_off_and_delays_nobody(serve):
    # About 6 MB of metrics: more than the kernel buffers between the two ends hold (about 3 MB).
    state = dict(STATE, watches=[(f"/w/{i:04d}/" + "x" * 250, "ab" * 16, "inotify") for i in range(20000)])
    served = serve(state, deadline=1.0)
    full = len(metrics.render(state)[0])
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a tiny window, never read
    sock.settimeout(5)
    sock.connect(("127.0.0.1", served.port))
    try:
        sock.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
        wait_until(lambda: served.server.conns, what="the connection accepted")
        assert get(served.port, "/healthz")[0] == 200  # while that answer is stuck
        wait_until(lambda: not served.server.conns, what="the stuck connection dropped")
        received = 0
        try:
            while chunk := sock.recv(65536):
                received += len(chunk)
        except ConnectionResetError:
            pass
        assert received < full  # cut off: the server did not wait for this reader
    finally:
        sock.close()


def test_a_flood_of_connects_does_not_lock_probes_out(serve):
    served = serve(deadline=60.0)
    flood: list[socket.socket] = []
    stop = threading.Event()

    def connect_forever():
        while not stop.is_set() and len(flood) < 3000:
            try:
                flood.append(socket.create_connection(("127.0.0.1", served.port), timeout=5))
            except OSError:
                pass

    flooder = threading.Thread(target=connect_forever, daemon=True)
    flooder.start()
    try:
        wait_until(lambda: len(flood) > 200, what="the flood under way")
        for _ in range(20):
            assert get(served.port, "/healthz", timeout=2)[0] == 200
    finally:
        stop.set()
        flooder.join(timeout=10)
        for sock in flood:
            sock.close()


OUT_OF_FDS = r"""
import resource, socket, sys, threading
from supervisor import health
resource.setrlimit(resource.RLIMIT_NOFILE, (40, 40))
sock = health.bind("127.0.0.1", 0)
threading.Thread(target=health.HealthServer(sock, lambda: {"unhealthy": None, "child_up": True,
    "stopping": None, "child_started": 0.0, "ready_delay": 0.0}, deadline=60.0).serve, daemon=True).start()
print(sock.getsockname()[1], flush=True)
sys.stdin.read()
"""


def test_running_out_of_fds_gives_back_the_oldest_connection(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", OUT_OF_FDS], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=os.path.dirname(os.path.dirname(__file__)))
    try:
        port = int(proc.stdout.readline())
        idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(60)]
        try:
            # 60 idle clients and a limit of 40 fds: the oldest make room for the probe.
            assert get(port, "/healthz", timeout=2)[0] == 200
            assert get(port, "/healthz", timeout=2)[0] == 200
        finally:
            for sock in idle:
                sock.close()
    finally:
        proc.kill()
        _, err = proc.communicate(timeout=10)
    assert "Traceback" not in err


def _tasks(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


class Trickler(threading.Thread):
    """A client that sends one byte of a never-ending header every 0.2 s until it is cut off."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.ended = threading.Event()
        self.stop = threading.Event()
        self.start()

    def run(self):
        self.sock.sendall(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
        while not self.stop.wait(0.2):
            try:
                self.sock.send(b"a")
            except OSError:
                break
            if ended(self.sock):
                break
            self.sock.setblocking(True)
        self.ended.set()


def test_idle_and_trickling_clients_do_not_hold_up_a_real_cfgsup(run_cfgsup):
    port = free_port()
    running = run_cfgsup("--health-addr", f"127.0.0.1:{port}", "--", *APP)
    running.wait_line(r"serving /healthz")
    wait_until(lambda: get(port, "/healthz")[0] == 200, what="healthy")
    threads = _tasks(running.pid)
    idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(50)]
    trickler = Trickler(port)
    try:
        for _ in range(5):  # each within the 2 s socket timeout, not after the idle ones
            assert get(port, "/healthz", timeout=2)[0::2] == (200, b"ok\n")
            assert get(port, "/readyz", timeout=2)[0] == 200
        assert _tasks(running.pid) == threads  # no thread per connection
        # Every one of them is closed by the server's deadline (3 s from accept), the trickler too.
        wait_until(lambda: all(ended(c) for c in idle), timeout=10, what="idle ones closed")
        assert trickler.ended.wait(10), "the trickling client was never cut off"
        more = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(100)]
        assert get(port, "/healthz", timeout=2)[0] == 200  # beyond the bound of 64
        assert _tasks(running.pid) == threads
        for sock in more:
            sock.close()
    finally:
        trickler.stop.set()
        for sock in idle:
            sock.close()


def test_no_wake_ups_once_the_clients_are_gone(run_cfgsup):
    port = free_port()
    running = run_cfgsup("--health-addr", f"127.0.0.1:{port}", "--", *APP)
    running.wait_line(r"serving /healthz")
    wait_until(lambda: get(port, "/healthz")[0] == 200, what="healthy")
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    assert sock.recv(1) == b""  # closed at its deadline; nothing is open any more
    sock.close()
    tasks = [f"/proc/{running.pid}/task/{tid}" for tid in os.listdir(f"/proc/{running.pid}/task")]

    def asleep():
        return all(open(f"{task}/stat").read().rsplit(")", 1)[1].split()[0] == "S" for task in tasks)

    def switches():
        return [open(f"{task}/status").read().split("voluntary_ctxt_switches:")[1].split()[0]
                for task in tasks]

    wait_until(asleep, what="every thread asleep")
    before = switches()
    # Proving that nothing happens takes a window of time: 2 s, with the last connection gone
    # (a connection's deadline is the server's only timer).
    start = time.monotonic()
    wait_until(lambda: time.monotonic() - start > 2.0, interval=0.5, what="the window")
    assert switches() == before


# ---- metrics ---------------------------------------------------------------------------------

def test_metrics_parse_in_both_formats(serve):
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
    from prometheus_client.parser import text_string_to_metric_families as parse_text

    served = serve()
    status, headers, body = get(served.port, "/metrics")
    assert status == 200 and headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in parse_text(body.decode()) for s in family.samples}
    assert samples[("cfgsup_changes_detected_total", ())] == 2
    assert samples[("cfgsup_actions_total", (("kind", "signal"), ("result", "rejected")))] == 1
    assert samples[("cfgsup_orphans_reaped_total", ())] == 3
    assert samples[("cfgsup_child_up", ())] == 1
    assert samples[("cfgsup_last_apply_success_timestamp_seconds", ())] == 1700000000.5
    assert samples[("cfgsup_config_info", (("digest", "ab" * 16), ("watch", "/etc/config"),
                                           ("watcher", "inotify")))] == 1
    prometheus_3 = ("application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,"
                    "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,"
                    "text/plain;version=0.0.4;q=0.3,*/*;q=0.2")
    status, headers, body = get(served.port, "/metrics", accept=prometheus_3)
    assert headers["Content-Type"] == metrics.OPENMETRICS
    families = {f.name: f for f in parse_om(body.decode())}
    assert families["cfgsup_config"].type == "info"
    assert families["cfgsup_changes_detected"].samples[0].value == 2
    head = split(exchange(served.port, b"HEAD /metrics HTTP/1.1\r\n\r\n"))
    assert head[2] == b"" and int(head[1]["Content-Length"]) == len(get(served.port, "/metrics")[2])


def test_a_watched_path_that_is_not_utf8_still_gives_valid_metrics(serve):
    # What argv gives for the bytes b"/etc/x\xffy": the invalid byte as a lone surrogate.
    served = serve(dict(STATE, watches=[(os.fsdecode(b"/etc/x\xffy"), "ab" * 16, "inotify")]))
    for accept in (None, "application/openmetrics-text"):
        status, _, body = get(served.port, "/metrics", accept=accept)
        assert status == 200 and 'watch="/etc/x\ufffdy"' in body.decode("utf-8")


@pytest.mark.parametrize("accept, openmetrics", [
    ("", False), ("*/*", False), ("text/plain;version=0.0.4", False),
    ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
     "text/plain;version=0.0.4;q=0.5,*/*;q=0.1", True),   # Prometheus 2
    ("Application/OpenMetrics-Text", True), ("application/openmetrics-text;q=0", False),
    ("application/openmetrics-text;q=zero", False), (";;,,;", False),
])
def test_format_follows_accept(accept, openmetrics):
    assert metrics.wants_openmetrics(accept) is openmetrics


def _odd_families():
    from prometheus_client import metrics_core as core

    counter = core.CounterMetricFamily("odd", 'back\\slash and\nnewline "quoted"', labels=["a", "b"])
    counter.add_metric(['quote " back \\ nl \n', "日本"], 1.5, created=1700000000.0)
    counter.add_metric(["", "x"], 0)
    gauge = core.GaugeMetricFamily("g", "g", labels=["v"])
    for i, value in enumerate((float("nan"), float("inf"), float("-inf"), 1e21, 12345678.0, -0.0, 7)):
        gauge.add_metric([str(i)], value, timestamp=1700000000.5 if i == 6 else None)
    histogram = core.GaugeHistogramMetricFamily("gh", "gh", buckets=[("1.0", 2), ("+Inf", 3)],
                                                gsum_value=4)
    return [counter, gauge, histogram,
            core.InfoMetricFamily("i", "i", value={"k": "v"}),
            core.UnknownMetricFamily("u", "u", value=3),
            core.HistogramMetricFamily("h", "h", buckets=[("1.0", 2), ("+Inf", 3)], sum_value=4),
            core.SummaryMetricFamily("s", "s", count_value=2, sum_value=3),
            core.StateSetMetricFamily("ss", "ss", value={"a": True, "b": False})]


@pytest.mark.parametrize("which", ["state", "odd"])
def test_text_format_is_prometheus_clients_own_byte_for_byte(which):
    from prometheus_client.exposition import generate_latest
    from prometheus_client.utils import floatToGoString

    found = metrics.families(STATE, metrics._prometheus()[0]) if which == "state" else _odd_families()
    assert metrics.text_004(found, floatToGoString) == generate_latest(metrics._Families(found))


@pytest.mark.skipif(not os.environ.get("CI") and not shutil.which("promtool"),
                    reason="needs promtool (Debian's prometheus package)")
def test_promtool_accepts_the_metrics(serve):
    served = serve()
    body = get(served.port, "/metrics")[2]
    check = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr


PROMETHEUS = """
global: {{scrape_interval: 1s, scrape_timeout: 1s}}
scrape_configs:
  - job_name: cfgsup
    static_configs: [{{targets: ["127.0.0.1:{port}"]}}]
"""


@pytest.mark.skipif(not os.environ.get("CI") and not shutil.which("prometheus"),
                    reason="needs prometheus (Debian's prometheus package)")
def test_a_real_prometheus_scrapes_cfgsup(run_cfgsup, tmp_path):
    port, web = free_port(), free_port()
    (tmp_path / "config").mkdir()
    running = run_cfgsup("--health-addr", f"127.0.0.1:{port}", "--watch", str(tmp_path / "config"),
                         "--", *APP)
    running.wait_line(r"INFO watching")
    (tmp_path / "prometheus.yml").write_text(PROMETHEUS.format(port=port))
    prometheus = subprocess.Popen(
        ["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{web}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        def query(expr):
            raw = exchange(web, f"GET /api/v1/query?query={expr} HTTP/1.0\r\n\r\n".encode())
            status, _, body = split(raw)
            return json.loads(body)["data"]["result"] if status == 200 else []

        def scraped():
            try:
                return query("cfgsup_config_info")
            except OSError:
                return None  # Prometheus not listening yet

        result = wait_until(scraped, timeout=60, interval=0.5, what="a scrape stored")
        assert result[0]["metric"]["watch"] == str(tmp_path / "config")
        assert result[0]["metric"]["watcher"] == "inotify"
        assert query("up")[0]["value"][1] == "1"
    finally:
        os.killpg(prometheus.pid, 9)
        prometheus.wait(timeout=10)


# ---- what the health port costs --------------------------------------------------------------

LEAN = r"""
import json, socket, sys, threading
from supervisor import health
state = json.loads(sys.argv[1])
state["actions"] = {}
sock = health.bind("127.0.0.1", 0)
threading.Thread(target=health.HealthServer(sock, lambda: state).serve, daemon=True).start()
def get(request):
    with socket.create_connection(sock.getsockname(), timeout=5) as s:
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data.split(b"\r\n", 1)[0].split(b" ", 1)[1].decode()  # status and reason
answers = [get(b"GET /healthz HTTP/1.1\r\n\r\n"), get(b"GET /metrics HTTP/1.1\r\n\r\n"),
           get(b"GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text\r\n\r\n")]
loaded = {m: m in sys.modules for m in ("ssl", "_ssl", "http.client", "http.server",
                                        "urllib.request", "prometheus_client.exposition")}
import prometheus_client  # a full import afterwards still works, with the same families
full = prometheus_client.metrics_core is sys.modules["prometheus_client.metrics_core"]
print(json.dumps({"answers": answers, "loaded": loaded, "full": full}))
"""


def test_serving_health_and_metrics_imports_no_tls_or_http_client():
    state = dict(STATE, actions=None)
    out = subprocess.run([sys.executable, "-c", LEAN, json.dumps(state)], capture_output=True,
                         text=True, timeout=30, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["answers"] == ["200 OK"] * 3
    assert result["loaded"] == dict.fromkeys(result["loaded"], False)
    assert result["full"] is True


FALLBACK = r"""
import importlib.util, json, sys
real = importlib.util.module_from_spec
def not_a_package(spec):  # a prometheus_client whose modules cannot load without its __init__
    module = real(spec)
    del module.__path__
    return module
importlib.util.module_from_spec = not_a_package
from supervisor import metrics
state = json.loads(sys.argv[1])
state["actions"] = {}
body, kind = metrics.render(state)
print(json.dumps({"ssl": "ssl" in sys.modules, "kind": kind, "body": body.decode()}))
"""


def test_metrics_fall_back_to_the_full_import_when_the_light_one_fails():
    out = subprocess.run([sys.executable, "-c", FALLBACK, json.dumps(dict(STATE, actions=None))],
                         capture_output=True, text=True, timeout=30,
                         cwd=os.path.dirname(os.path.dirname(__file__)))
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["ssl"] is True  # the price of the fallback, and the sign that it was taken
    assert result["kind"] == metrics.TEXT and "cfgsup_orphans_reaped_total 3.0" in result["body"]


def test_a_real_cfgsup_maps_no_openssl_after_serving(run_cfgsup, tmp_path):
    port = free_port()
    (tmp_path / "app.conf").write_text("v1")
    running = run_cfgsup("--health-addr", f"127.0.0.1:{port}", "--watch", str(tmp_path), "--", *APP)
    running.wait_line(r"INFO watching")
    wait_until(lambda: get(port, "/healthz")[0] == 200, what="healthy")
    assert get(port, "/metrics")[0] == 200
    with open(f"/proc/{running.pid}/maps") as fh:
        maps = fh.read()
    assert "libssl" not in maps and "/_ssl." not in maps
