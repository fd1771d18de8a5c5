"""Log lines on stderr: `[cfgsup PID] LEVEL message`, or one JSON object per line.

Only the loop logs (never a signal handler). Callers pass names and digests, never file contents:
Secrets are mounted exactly like ConfigMaps.
"""
from __future__ import annotations

import os
import sys
import time

DEBUG, INFO, WARNING, ERROR = 10, 20, 30, 40
_NAMES = {DEBUG: "DEBUG", INFO: "INFO", WARNING: "WARNING", ERROR: "ERROR"}


class Log:
    def __init__(self, level: int = INFO, fmt: str = "text", stream=None):
        self.level = level
        self.fmt = fmt
        self.stream = stream if stream is not None else sys.stderr

    def debug(self, message: str, **fields) -> None:
        if self.level <= DEBUG:
            self._emit(DEBUG, message, fields)

    def info(self, message: str, **fields) -> None:
        if self.level <= INFO:
            self._emit(INFO, message, fields)

    def warning(self, message: str, **fields) -> None:
        if self.level <= WARNING:
            self._emit(WARNING, message, fields)

    def error(self, message: str, **fields) -> None:
        self._emit(ERROR, message, fields)

    def _emit(self, level: int, message: str, fields: dict) -> None:
        if self.fmt == "json":
            import json  # only paid for when JSON logs are asked for

            record = {
                "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z",
                "level": _NAMES[level].lower(),
                "pid": os.getpid(),
                "message": message,
            }
            record.update(fields)
            line = json.dumps(record, default=str, separators=(",", ":"))
        else:
            line = f"[cfgsup {os.getpid()}] {_NAMES[level]} {message}"
        try:
            self.stream.write(line + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass  # stderr gone: keep supervising, the app matters more than our log
