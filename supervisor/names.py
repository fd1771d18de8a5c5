"""Lists of changed names, bounded wherever they go: environment variables and log lines.

One ConfigMap update can change thousands of keys. Unbounded, 8000 names made a CFGSUP_CHANGED
too long to exec the app with ("Argument list too long", the kernel's limit is 128 KiB per
string) and a 216 KB log line.
"""
from __future__ import annotations

ENV_LIMIT = 16 * 1024  # bytes of CFGSUP_CHANGED; whole names only, the rest counted
LOG_NAMES = 20         # names spelled out in a text log line
FIELD_NAMES = 100      # names in a JSON log field


def env(names) -> dict:
    """CFGSUP_CHANGED (comma-separated, at most ENV_LIMIT bytes), and CFGSUP_CHANGED_TRUNCATED
    (how many names were left out) when they do not all fit."""
    kept, size = [], 0
    for name in names:
        cost = len(name.encode("utf-8", "surrogateescape")) + (1 if kept else 0)
        if size + cost > ENV_LIMIT:
            break
        kept.append(name)
        size += cost
    values = {"CFGSUP_CHANGED": ",".join(kept)}
    if len(kept) < len(names):
        values["CFGSUP_CHANGED_TRUNCATED"] = str(len(names) - len(kept))
    return values


def text(names, default: str = "the change") -> str:
    """For a log message: the first few names, then how many more."""
    if not names:
        return default
    shown = ", ".join(names[:LOG_NAMES])
    if len(names) > LOG_NAMES:
        shown += f" (+{len(names) - LOG_NAMES} more)"
    return shown


def field(names) -> dict:
    """For structured log fields: `changed`, and `changed_more` when the list was cut."""
    fields = {"changed": list(names[:FIELD_NAMES])}
    if len(names) > FIELD_NAMES:
        fields["changed_more"] = len(names) - FIELD_NAMES
    return fields
