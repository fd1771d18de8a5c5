"""HTTP /healthz, /readyz and /metrics for the kubelet and Prometheus.

One thread blocked in accept (no periodic wake-up). It only reads the state snapshot the loop
publishes (a dict replaced as a whole, never mutated), so it never touches process state.
"""
from __future__ import annotations

import socket
import time


def bind(host: str, port: int) -> socket.socket:
    """Bind early, before the app starts, so a taken port is a usage error and not a lost app."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(16)
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
    if not state["child_up"]:
        ready = (503, "the app is not running")
    elif state["stopping"]:
        ready = (503, f"the app is being stopped ({state['stopping']})")
    elif now - state["child_started"] < state["ready_delay"]:
        ready = (503, "the app is starting")
    else:
        ready = (200, "ok")
    return health, ready


class _Collector:
    """prometheus_client collector reading the published state at scrape time."""

    def __init__(self, get_state):
        self.get_state = get_state

    def collect(self):
        from prometheus_client.core import (
            CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily,
        )

        s = self.get_state()
        yield CounterMetricFamily("cfgsup_changes_detected", "Content changes detected.", value=s["changes"])
        actions = CounterMetricFamily("cfgsup_actions", "Actions taken on changes.", labels=["kind", "result"])
        for (kind, result), count in sorted(s["actions"].items()):
            actions.add_metric([kind, result], count)
        yield actions
        yield CounterMetricFamily("cfgsup_validation_rejections", "Changes rejected by --validate.",
                                  value=s["rejections"])
        yield CounterMetricFamily("cfgsup_child_restarts", "Times the app was started again.",
                                  value=s["restarts"])
        yield CounterMetricFamily("cfgsup_orphans_reaped", "Processes reaped other than the app.",
                                  value=s["orphans"])
        yield GaugeMetricFamily("cfgsup_child_up", "1 while the app runs.", value=int(s["child_up"]))
        yield GaugeMetricFamily("cfgsup_last_change_timestamp_seconds",
                                "Unix time of the last content change.", value=s["last_change"])
        yield GaugeMetricFamily("cfgsup_last_apply_success_timestamp_seconds",
                                "Unix time of the last successful apply.", value=s["last_apply"])
        config = InfoMetricFamily("cfgsup_config", "Digest the app runs with, per watch.",
                                  labels=["watch", "digest", "watcher"])
        for path, digest, mode in s["watches"]:
            config.add_metric([path, digest, mode], {})
        yield config


class HealthServer:
    def __init__(self, sock: socket.socket, get_state):
        # Imported here, after the app has started: the bind above needs none of it.
        from http.server import BaseHTTPRequestHandler, HTTPServer

        from prometheus_client import CollectorRegistry, generate_latest

        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(get_state))

        class Handler(BaseHTTPRequestHandler):
            timeout = 5  # a stalled client must not hold the only health thread for long

            def do_GET(self):
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._answer(200, generate_latest(registry),
                                 "text/plain; version=0.0.4; charset=utf-8")
                    return
                health, ready = verdicts(get_state(), time.monotonic())
                verdict = {"/healthz": health, "/readyz": ready}.get(path)
                if verdict is None:
                    self._answer(404, b"not found\n")
                else:
                    self._answer(verdict[0], verdict[1].encode() + b"\n")

            def _answer(self, status, body, kind="text/plain; charset=utf-8"):
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass  # probes every few seconds would drown the app's logs

        self.server = HTTPServer(sock.getsockname()[:2], Handler, bind_and_activate=False)
        self.server.socket.close()
        self.server.socket = sock
        self.server.timeout = None

    def serve(self) -> None:
        """Thread body: one request at a time, blocking in accept between them."""
        while True:
            try:
                self.server.handle_request()
            except Exception:  # noqa: BLE001 - one bad request must not end the health thread
                continue
