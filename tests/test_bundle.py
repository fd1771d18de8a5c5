"""The PyInstaller bundle on this host: every feature works from it (the real-process tests run
again against it, so a module PyInstaller missed shows up as a failing feature), plus what only
the bundle has: its NEEDS file, its tarball, a clean environment for the app, TLS webhooks."""
from __future__ import annotations

import glob
import os
import re
import socket
import subprocess
import sys
import tarfile
import threading
from importlib.metadata import version

import pytest

from conftest import Running
from kubelet import KubeletVolume

HERE = os.path.dirname(os.path.abspath(__file__))
# Test files that are not about starting cfgsup, or that need the bundle themselves. test_nginx
# exercises nothing test_watch does not (validate, signal), and is flaky on its own: an old nginx
# worker can still answer after a reload.
NOT_AGAIN = {"test_bundle.py", "test_containers.py", "test_benchmarks.py", "test_examples.py",
             "test_nginx.py"}


def real_process_test_files() -> list[str]:
    """Every test file that starts cfgsup (today's and tomorrow's): they use CFGSUP or run_cfgsup."""
    found = []
    for path in sorted(glob.glob(os.path.join(HERE, "test_*.py"))):
        if os.path.basename(path) in NOT_AGAIN:
            continue
        with open(path) as fh:
            text = fh.read()
        if re.search(r"\b(CFGSUP|run_cfgsup)\b", text):
            found.append(path)
    return found


def test_every_real_process_test_passes_against_the_bundle(bundle_dir):
    files = real_process_test_files()
    assert any(f.endswith("test_watch.py") for f in files) and any(f.endswith("test_kubernetes.py") for f in files)
    env = dict(os.environ, CFGSUP_TEST_COMMAND=os.path.join(bundle_dir, "cfgsup"))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *files],
                          cwd=os.path.dirname(HERE), env=env, capture_output=True, timeout=900)
    out = proc.stdout.decode(errors="replace")
    assert proc.returncode == 0, out[-6000:] + proc.stderr.decode(errors="replace")[-2000:]
    assert re.search(r"\d+ passed", out)


def test_needs_file_names_glibc_and_libz(bundle_dir):
    with open(os.path.join(bundle_dir, "NEEDS")) as fh:
        lines = [line.split() for line in fh if not line.startswith("#")]
    kinds = {}
    for kind, value in lines:
        kinds.setdefault(kind, []).append(value)
    assert re.fullmatch(r"2\.\d+", kinds["glibc"][0])
    assert kinds["interpreter"][0].startswith("/lib")
    # libz: the bootloader's own dependency, resolved before the bundle's folder is searched
    assert {"libc.so.6", "libz.so.1"} <= set(kinds["library"])


def test_tarball_holds_the_same_folder(bundle_dir):
    dist = os.path.dirname(bundle_dir)
    tarballs = glob.glob(os.path.join(dist, f"cfgsup-{version('cfgsup')}-linux-{os.uname().machine}.tar.gz"))
    assert len(tarballs) == 1
    with tarfile.open(tarballs[0]) as tar:
        names = set(tar.getnames())
        assert {"cfgsup/cfgsup", "cfgsup/NEEDS"} <= names
        assert tar.getmember("cfgsup/cfgsup").mode & 0o111


def test_version_comes_from_the_bundled_metadata(bundle_dir):
    proc = subprocess.run([os.path.join(bundle_dir, "cfgsup"), "--version"], capture_output=True, timeout=30)
    assert proc.returncode == 0 and proc.stdout.decode().strip() == f"cfgsup {version('cfgsup')}"


@pytest.mark.parametrize("value", [None, "/opt/app/lib"])
def test_the_app_gets_the_library_path_it_would_have_had(bundle_dir, value):
    env = dict(os.environ)
    env.pop("LD_LIBRARY_PATH", None)
    if value:
        env["LD_LIBRARY_PATH"] = value
    proc = subprocess.run([os.path.join(bundle_dir, "cfgsup"), "-q", "--", "sh", "-c",
                           'echo "path=${LD_LIBRARY_PATH-unset} orig=${LD_LIBRARY_PATH_ORIG-unset}"'],
                          env=env, capture_output=True, timeout=30)
    assert proc.returncode == 0
    assert proc.stdout.decode().strip() == f"path={value or 'unset'} orig=unset"


def test_https_webhook_reaches_tls_from_the_bundle(bundle_dir, tmp_path):
    """ssl is imported only for an https:// webhook: a plain-TCP peer makes the TLS handshake
    fail, a logged and bounded failure that only a working ssl module can produce."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    volume = KubeletVolume(tmp_path / "config", {"app.conf": "v1"})
    running = Running([os.path.join(bundle_dir, "cfgsup"), "--watch", volume.path, "--on-change", "http",
                       "--webhook", f"https://127.0.0.1:{port}/-/reload", "--webhook-retries", "0",
                       "--", "sh", "-c", "echo ready; exec sleep 60"])
    try:
        running.wait_line(r"^ready$")
        running.wait_line(r"INFO watching")
        volume.write({"app.conf": "v2"})
        line = running.wait_line(r"ERROR called the webhook\(s\) for app\.conf .*failed: (.*)\)$").group(1)
        assert re.search(r"ssl|SSL|TLS|wrong version", line), line
        assert "Traceback" not in running.text() and "ModuleNotFoundError" not in running.text()
    finally:
        running.kill_all()
        server.close()
