"""/metrics: the published state as prometheus_client metric families, in text form.

`import prometheus_client` (or any module of it) runs the package's __init__, which imports its
exposition module and with it ssl, http.server, urllib.request, wsgiref and gzip: 11 MiB of RSS
measured, most of it OpenSSL. Its metric families (`metrics_core`), value formatting (`utils`)
and OpenMetrics formatter (`openmetrics.exposition`) need none of that, so they are loaded on
their own (see `_prometheus`). The OpenMetrics text, which Prometheus asks for first, is
prometheus_client's own. Its Prometheus text 0.0.4 formatter lives in that heavy exposition
module, so the 0.0.4 answer for every other client (curl, older scrapers) is rendered here from
the same families, and tests pin it byte for byte to prometheus_client's.
"""
from __future__ import annotations

import sys

OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
TEXT = "text/plain; version=0.0.4; charset=utf-8"

_modules = None  # (metrics_core, utils, openmetrics exposition) once loaded


def _prometheus():
    """prometheus_client's light modules, without running the package's __init__.

    While they import, the package is a bare module object (its spec, no code run) so their
    relative imports resolve; afterwards it is taken out again, and a later plain
    `import prometheus_client` runs the real __init__, which reuses these same modules. Only
    the health thread gets here, and no other thread of cfgsup imports prometheus_client."""
    global _modules
    if _modules is None:
        import importlib

        names = ("prometheus_client.metrics_core", "prometheus_client.utils",
                 "prometheus_client.openmetrics.exposition")
        if "prometheus_client" in sys.modules:  # imported in full already: nothing to save
            _modules = tuple(importlib.import_module(name) for name in names)
            return _modules
        import importlib.util

        spec = importlib.util.find_spec("prometheus_client")
        if spec is None or spec.submodule_search_locations is None:
            raise ImportError("prometheus_client is not installed")
        bare = importlib.util.module_from_spec(spec)
        sys.modules["prometheus_client"] = bare
        try:
            _modules = tuple(importlib.import_module(name) for name in names)
        except Exception:  # noqa: BLE001 - a layout this does not know: import it in full below
            _modules = None
        finally:
            if sys.modules.get("prometheus_client") is bare:
                del sys.modules["prometheus_client"]
        if _modules is None:
            import prometheus_client  # noqa: F401 - with ssl and all, but /metrics still works

            _modules = tuple(importlib.import_module(name) for name in names)
    return _modules


def families(state: dict, core) -> list:
    """The metric families for a published state (`core` is prometheus_client.metrics_core)."""
    s = state
    actions = core.CounterMetricFamily("cfgsup_actions", "Actions taken on changes.",
                                       labels=["kind", "result"])
    for (kind, result), count in sorted(s["actions"].items()):
        actions.add_metric([kind, result], count)
    config = core.InfoMetricFamily("cfgsup_config", "Digest the app runs with, per watch.",
                                   labels=["watch", "digest", "watcher"])
    for path, digest, mode in s["watches"]:
        config.add_metric([_utf8(path), digest, mode], {})
    return [
        core.CounterMetricFamily("cfgsup_changes_detected", "Content changes detected.",
                                 value=s["changes"]),
        actions,
        core.CounterMetricFamily("cfgsup_validation_rejections", "Changes rejected by --validate.",
                                 value=s["rejections"]),
        core.CounterMetricFamily("cfgsup_rollbacks", "Staged configurations rolled back after "
                                 "the app failed on them.", value=s["rollbacks"]),
        core.GaugeMetricFamily("cfgsup_config_held", "1 while the app runs on other content than "
                               "the watched one, which failed validation or probation.",
                               value=int(s["held"])),
        core.GaugeMetricFamily("cfgsup_probation", "1 while a staged configuration is on probation.",
                               value=int(s["probation"])),
        core.CounterMetricFamily("cfgsup_child_restarts", "Times the app was started again.",
                                 value=s["restarts"]),
        core.CounterMetricFamily("cfgsup_orphans_reaped", "Processes reaped other than the app.",
                                 value=s["orphans"]),
        core.GaugeMetricFamily("cfgsup_child_up", "1 while the app runs.", value=int(s["child_up"])),
        core.GaugeMetricFamily("cfgsup_last_change_timestamp_seconds",
                               "Unix time of the last content change.", value=s["last_change"]),
        core.GaugeMetricFamily("cfgsup_last_apply_success_timestamp_seconds",
                               "Unix time of the last successful apply.", value=s["last_apply"]),
        config,
    ]


def _utf8(text: str) -> str:
    """A path as valid UTF-8: bytes that are not (kept as surrogates from argv) become U+FFFD,
    since a scraper rejects the whole exposition for one invalid label value."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def wants_openmetrics(accept: str) -> bool:
    """Whether an Accept header lists OpenMetrics text (with a q above 0), as Prometheus does."""
    for media_range in accept.split(","):
        kind, *params = (part.strip() for part in media_range.split(";"))
        if kind.lower() != "application/openmetrics-text":
            continue
        q = next((p[2:] for p in params if p.lower().startswith("q=")), "1")
        try:
            if float(q) > 0:
                return True
        except ValueError:
            continue
    return False


def render(state: dict, accept: str = "") -> tuple[bytes, str]:
    """(body, Content-Type) of /metrics for a published state and the request's Accept."""
    core, utils, openmetrics = _prometheus()
    found = families(state, core)
    if wants_openmetrics(accept):
        return openmetrics.generate_latest(_Families(found)), OPENMETRICS
    return text_004(found, utils.floatToGoString), TEXT


class _Families:
    """The one method prometheus_client's formatters call on a registry."""

    def __init__(self, found: list):
        self.found = found

    def collect(self):
        return iter(self.found)


# Prometheus text 0.0.4 knows fewer types than OpenMetrics: how each is written there.
_TEXT_TYPES = {"info": "gauge", "stateset": "gauge", "gaugehistogram": "histogram",
               "unknown": "untyped"}
_TEXT_SUFFIX = {"counter": "_total", "info": "_info"}
# Samples OpenMetrics has and 0.0.4 does not: each becomes a gauge family of its own, after.
_OPENMETRICS_ONLY = ("_created", "_gsum", "_gcount")


def text_004(found: list, number) -> bytes:
    """Families in Prometheus text format 0.0.4; `number` formats a value as Go does."""
    out: list[str] = []
    for family in found:
        name = family.name + _TEXT_SUFFIX.get(family.type, "")
        _help_and_type(out, name, family.documentation, _TEXT_TYPES.get(family.type, family.type))
        moved: dict[str, list[str]] = {}
        for sample in family.samples:
            suffix = next((x for x in _OPENMETRICS_ONLY if sample.name == family.name + x), None)
            line = _sample_line(sample, number)
            if suffix is None:
                out.append(line)
            else:
                moved.setdefault(suffix, []).append(line)
        for suffix in sorted(moved):
            _help_and_type(out, family.name + suffix, family.documentation, "gauge")
            out.extend(moved[suffix])
    return "".join(out).encode("utf-8")


def _help_and_type(out: list, name: str, documentation: str, kind: str) -> None:
    text = documentation.replace("\\", "\\\\").replace("\n", "\\n")
    out.append(f"# HELP {name} {text}\n# TYPE {name} {kind}\n")


def _sample_line(sample, number) -> str:
    labels = ""
    if sample.labels:
        pairs = (f'{key}="{_label_value(value)}"' for key, value in sorted(sample.labels.items()))
        labels = "{" + ",".join(pairs) + "}"
    stamp = "" if sample.timestamp is None else f" {int(float(sample.timestamp) * 1000):d}"
    return f"{sample.name}{labels} {number(sample.value)}{stamp}\n"


def _label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
