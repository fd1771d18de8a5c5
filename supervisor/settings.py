"""Every option as one frozen value, and the parsers that turn option text into it.

The parsers raise ValueError with a message fit to show the user as it is; cli.py turns that
into one line on stderr and exit code 2.
"""
from __future__ import annotations

import signal
from collections import namedtuple

ON_EXIT_MODES = ("exit", "restart")
URL_SCHEMES = {"http": 80, "https": 443}
ON_CHANGE_MODES = ("restart", "signal", "exec", "http", "exit", "probe", "none")
LOG_FORMATS = ("text", "json")


# Every option as (name, default); `command` has none. A namedtuple rather than a frozen dataclass
# or typing.NamedTuple: PID 1 pays for neither dataclasses nor typing at every container start.
_FIELDS = (
    ("command", None),
    # PID 1 core
    ("group", False),
    ("stop_signal", signal.SIGTERM),
    ("stop_timeout", 10.0),
    ("rewrite", ()),
    ("expect_exit", frozenset()),
    ("on_exit", "exit"),
    ("restart_backoff", 30.0),
    ("log_level", 20),  # 10 debug, 20 info, 30 warning
    ("log_format", "text"),
    # config watching
    ("watches", ()),
    ("allow_missing", False),
    ("poll", None),
    ("debounce", 0.2),
    ("include", ()),
    ("exclude", ()),
    # reload actions
    ("on_change", "restart"),
    ("reload_signal", signal.SIGHUP),
    ("reload_command", None),
    ("validate", None),
    ("command_timeout", 30.0),
    ("webhooks", ()),
    ("webhook_method", "POST"),
    ("webhook_retries", 3),
    ("webhook_timeout", 5.0),
    ("change_exit_code", 0),
    # safe apply (--stage)
    ("stage", ()),  # (SRC, DEST); every SRC is in `watches` too
    ("min_uptime", 10.0),
    ("verify", None),
    ("verify_timeout", 30.0),
    ("keep", 3),
    ("splay", 0.0),
    # Kubernetes
    ("health_addr", None),
    ("ready_delay", 0.0),
    # sidecar mode (no command)
    ("target", None),
    ("probe_hold", 60.0),
)


class Settings(namedtuple("Settings", [n for n, _ in _FIELDS], defaults=[d for _, d in _FIELDS[1:]])):
    """Immutable: every option as one value."""

    __slots__ = ()

    @property
    def stage_sources(self) -> tuple[str, ...]:
        return tuple(src for src, _dest in self.stage)

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


def parse_stage(text: str) -> tuple[str, str]:
    """`SRC:DEST` for --stage: two directories (the last `:` splits them)."""
    src, sep, dest = text.rpartition(":")
    if not sep or not src or not dest:
        raise ValueError(f"--stage takes SRC:DEST (the mounted volume, the directory the app reads), got {text!r}")
    return src, dest


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


_HOST_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._")
_IPV6_CHARS = frozenset("0123456789abcdefABCDEF:.")
_TOKEN_CHARS = _HOST_CHARS | frozenset("!#$%&'*+^`|~")


# A checked --webhook URL, split the way the request needs it: as given (stripped, for
# Settings); http | https; the host (IPv6 without brackets); the port; the path and query for
# the request line, percent-encoded where needed; the Host header ([v6] and the port unless it
# is the default); and how log lines show it (without the query, which may hold a token).
Url = namedtuple("Url", "url scheme host port target host_header shown")


def parse_url(text: str) -> Url:
    """`http://HOST[:PORT][/PATH][?QUERY]` or https://; a host and a port 1-65535 are required."""
    raw = text.strip()
    scheme, sep, rest = raw.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in URL_SCHEMES:
        raise ValueError(f"URL {text!r}: not an http:// or https:// URL")
    rest = rest.partition("#")[0]
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    authority, target = rest[:cut], rest[cut:]
    if "@" in authority:
        raise ValueError(f"URL {text!r}: a user or password in a webhook URL is not supported "
                         f"(it would end up in log lines)")
    if authority.startswith("["):
        host, bracket, after = authority[1:].partition("]")
        if not bracket or ":" not in host or not set(host) <= _IPV6_CHARS:
            raise ValueError(f"URL {text!r}: bad IPv6 address in brackets")
        if after and not after.startswith(":"):
            raise ValueError(f"URL {text!r}: only :PORT may follow the address")
        port_text, shown_host = after[1:], f"[{host}]"
    else:
        host, _, port_text = authority.partition(":")
        shown_host = host
        if not host:
            raise ValueError(f"URL {text!r} has no host")
        if not set(host) <= _HOST_CHARS:
            raise ValueError(f"URL {text!r}: bad host name {host!r} (letters, digits, '-', '.', '_')")
    if not port_text:
        port = URL_SCHEMES[scheme]
    elif len(port_text) <= 5 and set(port_text) <= set("0123456789") and 0 < int(port_text) < 65536:
        port = int(port_text)
    else:
        raise ValueError(f"URL {text!r}: the port must be a number 1-65535, got {port_text!r}")
    if not target.startswith("/"):
        target = "/" + target
    # Spaces, control characters and non-ASCII would break the request line: percent-encode them.
    target = "".join(c if "!" <= c <= "~" else "".join(f"%{b:02X}" for b in c.encode("utf-8", "surrogatepass"))
                     for c in target)
    host_header = shown_host if port == URL_SCHEMES[scheme] else f"{shown_host}:{port}"
    path = target.partition("?")[0]
    return Url(raw, scheme, host, port, target, host_header,
               f"{scheme}://{host_header}{path}" + ("?..." if "?" in target else ""))


def parse_method(text: str) -> str:
    """An HTTP method name (a token): POST, PUT, GET..., upper-cased."""
    method = text.strip().upper()
    if not method or not set(method) <= _TOKEN_CHARS:
        raise ValueError(f"{text!r} is not an HTTP method name such as POST")
    return method
