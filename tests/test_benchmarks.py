"""The benchmark runs end to end in smoke mode, so it cannot rot. No timing is asserted here:
speed is measured by `python benchmarks/run.py` on a quiet machine, as ratios against peers."""
from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_benchmark_smoke_run(tmp_path):
    out = tmp_path / "results.md"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "run.py"), "--smoke",
                           "--out", str(out)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    for section in ("Change latency", "Start-up", "Memory", "Idle cost", "Reaping as PID 1", "Digest",
                    "Restart cycle", "Targets"):
        assert f"## {section}" in text, section
    # Correctness, not speed: every orphan was reaped, and inotify mode never woke up while idle.
    if "not available (needs root)" not in text or os.environ.get("CI"):
        assert "| 0 zombies left | yes | 0 |" in text
    assert "| no periodic wake-ups in inotify mode (idle) | yes | 0 wake-ups |" in text
