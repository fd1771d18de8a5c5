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
MAX_LINE = 4096  # characters; callers bound their lists (names.py), this is the last guard


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
            for key, value in fields.items():
                if value is not None and key not in record:  # cfgsup's own pid stays `pid`
                    record[key] = value
            line = json.dumps(record, default=str, separators=(",", ":"))
            if len(line) > MAX_LINE:  # never cut JSON in the middle: drop the fields instead
                record = {k: record[k] for k in ("time", "level", "pid")}
                record.update(message=message[:MAX_LINE // 2], truncated=True)
                line = json.dumps(record, default=str, separators=(",", ":"))
        else:
            line = f"[cfgsup {os.getpid()}] {_NAMES[level]} {message}"
            if len(line) > MAX_LINE:
                line = line[:MAX_LINE] + " [...]"
        try:
            self.stream.write(line + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass  # stderr gone: keep supervising, the app matters more than our log
