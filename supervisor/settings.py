"""Every option as one frozen value, and the parsers that turn option text into it.

The parsers raise ValueError with a message fit to show the user as it is; cli.py turns that
into one line on stderr and exit code 2.
"""
from __future__ import annotations

import signal
from typing import NamedTuple

ON_EXIT_MODES = ("exit", "restart")
ON_CHANGE_MODES = ("restart", "signal", "exec", "http", "exit", "probe", "none")
LOG_FORMATS = ("text", "json")


class Settings(NamedTuple):
    """Immutable. A NamedTuple rather than a frozen dataclass: it costs PID 1 a few ms less at
    every container start."""
    command: tuple[str, ...]
    # PID 1 core
    group: bool = False
    stop_signal: int = signal.SIGTERM
    stop_timeout: float = 10.0
    rewrite: tuple[tuple[int, int], ...] = ()
    expect_exit: frozenset[int] = frozenset()
    on_exit: str = "exit"
    restart_backoff: float = 30.0
    log_level: int = 20  # 10 debug, 20 info, 30 warning
    log_format: str = "text"
    # config watching
    watches: tuple[str, ...] = ()
    allow_missing: bool = False
    poll: float | None = None
    debounce: float = 0.2
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    # reload actions
    on_change: str = "restart"
    reload_signal: int = signal.SIGHUP
    reload_command: str | None = None
    validate: str | None = None
    command_timeout: float = 30.0
    webhooks: tuple[str, ...] = ()
    webhook_method: str = "POST"
    webhook_retries: int = 3
    webhook_timeout: float = 5.0
    change_exit_code: int = 0
    # Kubernetes
    health_addr: tuple[str, int] | None = None
    ready_delay: float = 0.0

    def rewritten(self, signo: int) -> int:
        """The signal to forward for `signo` (0: drop it)."""
        for src, dst in self.rewrite:
            if src == signo:
                return dst
        return signo


def _signal_number(name: str) -> int:
    upper = name.upper()
    if not upper.startswith("SIG"):
        upper = "SIG" + upper
    for base, sign in (("SIGRTMIN+", 1), ("SIGRTMAX-", -1)):
        if upper.startswith(base) and upper[len(base):].isdigit():
            anchor = signal.SIGRTMIN if sign > 0 else signal.SIGRTMAX
            number = anchor + sign * int(upper[len(base):])
            if signal.SIGRTMIN <= number <= signal.SIGRTMAX:
                return number
            raise ValueError(f"signal {name!r} is outside the real-time range")
    try:
        return int(getattr(signal.Signals, upper))
    except AttributeError:
        raise ValueError(f"unknown signal {name!r}") from None


def parse_signal(text: str, allow_zero: bool = False) -> int:
    """`HUP`, `SIGHUP`, `hup`, `1`, `RTMIN+2` -> signal number. 0 only where it means "drop"."""
    text = text.strip()
    if text.isdigit():
        number = int(text)
        if number == 0 and allow_zero:
            return 0
        if number in signal.valid_signals():
            return number
        raise ValueError(f"unknown signal number {text!r}")
    if not text:
        raise ValueError("empty signal name")
    return _signal_number(text)


def parse_rewrite(text: str) -> tuple[int, int]:
    """`FROM:TO` for --rewrite; TO may be 0 to drop the signal."""
    src, sep, dst = text.partition(":")
    if not sep:
        raise ValueError(f"--rewrite takes FROM:TO, got {text!r}")
    return parse_signal(src), parse_signal(dst, allow_zero=True)


# The longest duration any option takes. The OS's waits stop at about 24.8 days (poll() counts
# milliseconds in 32 bits); a longer value is refused at start rather than overflowing later.
MAX_DURATION = 24 * 86400.0


def parse_duration(text: str, what: str = "duration") -> float:
    """Seconds as a non-negative number: `10`, `0.5`, `1.5s`, `200ms`, `2m`, `1h`, `1d`."""
    raw = text.strip().lower()
    scale = 1.0
    for suffix, factor in (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0), ("d", 86400.0)):
        if raw.endswith(suffix):
            raw, scale = raw[: -len(suffix)], factor
            break
    try:
        value = float(raw) * scale
    except ValueError:
        raise ValueError(f"{what} must be a number of seconds, got {text!r}") from None
    if value < 0 or value != value or value == float("inf"):
        raise ValueError(f"{what} must be a finite, non-negative number of seconds, got {text!r}")
    if value > MAX_DURATION:
        raise ValueError(f"{what} must be at most 24 days (24d), got {text!r}")
    return value


def parse_exit_code(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"exit code must be a whole number 0-255, got {text!r}") from None
    if not 0 <= value <= 255:
        raise ValueError(f"exit code must be 0-255, got {text!r}")
    return value


def parse_host_port(text: str) -> tuple[str, int]:
    """`HOST:PORT`, `:PORT` (all interfaces) or `[::1]:PORT`."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"address must be HOST:PORT with a port 1-65535, got {text!r}")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)
