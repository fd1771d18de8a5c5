"""The `cfgsup` command: parse and check options into Settings, run the loop, exit with its code.

Every option also reads the environment variable CFGSUP_<OPTION> (e.g. CFGSUP_STOP_TIMEOUT).
Any bad input is one line on stderr and exit code 2, before anything is started.
"""
from __future__ import annotations

import sys

import click
from click.core import ParameterSource

from . import settings as st

USAGE_ERROR = 2


class _Parsed(click.ParamType):
    """A click type around one of the settings parsers (they raise ValueError with the message)."""

    def __init__(self, name, parse):
        self.name = name
        self.parse = parse

    def convert(self, value, param, ctx):
        if not isinstance(value, str):
            return value
        try:
            return self.parse(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def option(*decls, **attrs):
    """click.option whose environment variable is CFGSUP_<LONG OPTION NAME>, whatever the
    parameter is called in Python (--watch -> CFGSUP_WATCH, --signal -> CFGSUP_SIGNAL)."""
    long_name = next(d for d in decls if d.startswith("--"))
    attrs.setdefault("envvar", "CFGSUP_" + long_name[2:].upper().replace("-", "_"))
    attrs.setdefault("show_envvar", True)
    return click.option(*decls, **attrs)


def _help(ctx, _param, value):
    if value:
        click.echo(ctx.get_help())
        ctx.exit(0)


def _version(ctx, _param, value):
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            click.echo(f"cfgsup {version('cfgsup')}")
        except PackageNotFoundError:
            click.echo("cfgsup (not installed)")
        ctx.exit(0)


SIGNAL = _Parsed("SIGNAL", st.parse_signal)
REWRITE = _Parsed("FROM:TO", st.parse_rewrite)
SECONDS = _Parsed("SECONDS", st.parse_duration)
EXIT_CODE = _Parsed("CODE", st.parse_exit_code)
ADDRESS = _Parsed("HOST:PORT", st.parse_host_port)
STAGE = _Parsed("SRC:DEST", st.parse_stage)
URL = _Parsed("URL", lambda text: st.parse_url(text).url)
METHOD = _Parsed("METHOD", st.parse_method)


@click.command(
    # Options end at the first operand, as in dumb-init and POSIX utilities: what follows the
    # command's name is the command's (`cfgsup app --help` runs `app --help`).
    context_settings={"show_default": True, "allow_interspersed_args": False},
    # Our own -h/--help and --version: click's built-in ones translate their help text through
    # gettext on every start, which imports locale and costs PID 1 about a millisecond.
    add_help_option=False,
    help="Run COMMAND as a PID 1 that reaps, forwards signals, stops gracefully, and reloads "
         "or restarts it when watched ConfigMap/Secret content changes.\n\n"
         "Every option also reads CFGSUP_<OPTION>, e.g. CFGSUP_STOP_TIMEOUT=30.",
)
@option("-g", "--group", is_flag=True, help="Forward signals to the app's whole process group.")
@option("-r", "--rewrite", type=REWRITE, multiple=True, metavar="FROM:TO",
              help="Forward signal FROM as TO (TO=0 drops it). Repeatable.")
@option("-e", "--expect-exit", type=EXIT_CODE, multiple=True, metavar="CODE",
              help="Exit 0 when the app's exit code is CODE. Repeatable.")
@option("--stop-signal", type=SIGNAL, default="TERM", help="Signal cfgsup sends to stop the app.")
@option("--stop-timeout", type=SECONDS, default="10",
              help="Seconds from the stop signal to SIGKILL of the app's process group.")
@option("--on-exit", type=click.Choice(st.ON_EXIT_MODES), default="exit",
              help="When the app exits by itself: exit with its code, or restart it with backoff.")
@option("--restart-backoff", type=SECONDS, default="30",
              help="Longest delay between restarts with --on-exit restart.")
@option("--watch", "watches", multiple=True, metavar="PATH",
              help="Directory (or file) whose content is watched. Repeatable.")
@option("--allow-missing", is_flag=True,
              help="A watched path may be missing at start; its appearance is a change.")
@option("--poll", type=SECONDS, default=None,
              help="Poll every SECONDS instead of using inotify.")
@option("--debounce", type=SECONDS, default="0.2",
              help="Quiet time before hashing a plain (non-kubelet) directory after an event.")
@option("--include", multiple=True, metavar="GLOB", help="Only files matching GLOB count.")
@option("--exclude", multiple=True, metavar="GLOB", help="Files matching GLOB never count.")
@option("--on-change", type=click.Choice(st.ON_CHANGE_MODES), default="restart",
              help="What a content change does.")
@option("--signal", "reload_signal", type=SIGNAL, default="HUP",
              help="Signal sent to the app with --on-change signal.")
@option("--reload-command", metavar="CMD", help="Command run with --on-change exec.")
@option("--validate", metavar="CMD",
              help="Command run before acting on a change; non-zero rejects the change.")
@option("--command-timeout", type=SECONDS, default="30",
              help="Time limit for --validate and --reload-command.")
@option("--webhook", "webhooks", type=URL, multiple=True, metavar="URL",
              help="URL called with --on-change http. Repeatable.")
@option("--webhook-method", type=METHOD, default="POST", help="HTTP method for --webhook.")
@option("--webhook-retries", type=click.IntRange(0, 100), default=3,
              help="Retries per webhook, with doubling backoff.")
@option("--webhook-timeout", type=SECONDS, default="5",
              help="Time limit for each webhook request as a whole (connect, send, answer).")
@option("--change-exit-code", type=EXIT_CODE, default="0",
              help="Exit code with --on-change exit.")
@option("--stage", type=STAGE, multiple=True, metavar="SRC:DEST",
              help="Watch SRC and publish its content into DEST only once validated; roll back "
                   "a configuration the app fails on. Repeatable.")
@option("--min-uptime", type=SECONDS, default="10",
              help="A staged change passes probation once the app stayed up this long.")
@option("--verify", metavar="CMD", help="Command that must succeed once for a staged change to pass probation.")
@option("--verify-timeout", type=SECONDS, default="30",
              help="Time for --verify to succeed (retried every second) before a rollback.")
@option("--keep", type=click.IntRange(1, 100), default=3, help="Generations kept in each DEST.")
@option("--splay", type=SECONDS, default="0",
              help="Wait a random delay below SECONDS before applying each change.")
@option("--health-addr", type=ADDRESS, default=None,
              help="Serve /healthz, /readyz and /metrics on HOST:PORT.")
@option("--ready-delay", type=SECONDS, default="0",
              help="Seconds after each (re)start during which /readyz still answers 503.")
@option("--target", metavar="NAME",
              help="Sidecar mode: the app is the oldest process named NAME in the pod.")
@option("--probe-hold", type=SECONDS, default="60",
              help="Sidecar probe mode without --target: how long /healthz stays 503 after a change.")
@option("--log-format", type=click.Choice(st.LOG_FORMATS), default="text", help="Log line format.")
@option("-v", "--verbose", is_flag=True, help="Log debug detail.")
@option("-q", "--quiet", is_flag=True, help="Log warnings and errors only.")
@click.option("-h", "--help", is_flag=True, expose_value=False, is_eager=True, callback=_help,
              help="Show this message and exit.")
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_version,
              help="Show the version and exit.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def command(**options):
    # Which options the user gave, on the command line or through CFGSUP_*: for _check_useless.
    ctx = click.get_current_context()
    given = {}
    for param in ctx.command.params:
        source = ctx.get_parameter_source(param.name)
        if source in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT) and (
                not getattr(param, "is_flag", False) or options[param.name]):
            flag = next((o for o in param.opts if o.startswith("--")), param.name)
            given[param.name] = (flag, param.envvar if source == ParameterSource.ENVIRONMENT else None)
    return dict(options, _given=given)


def parse(argv: list[str]) -> st.Settings | int:
    """Settings, or an exit code when there is nothing to run (--help, --version, bad input)."""
    try:
        result = command.main(argv, prog_name="cfgsup", standalone_mode=False)
        if not isinstance(result, dict):
            return 0  # --help or --version printed
        from .usage import settings_from

        return settings_from(result)
    except click.exceptions.Abort:
        return USAGE_ERROR
    except click.ClickException as exc:
        click.echo(f"cfgsup: error: {exc.format_message()}", err=True)
        return USAGE_ERROR


def main(argv: list[str] | None = None) -> int:
    parsed = parse(sys.argv[1:] if argv is None else argv)
    if isinstance(parsed, int):
        return parsed
    from .supervise import run

    return run(parsed)
