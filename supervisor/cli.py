"""The `cfgsup` command: parse and check options into Settings, run the loop, exit with its code.

Every option also reads the environment variable CFGSUP_<OPTION> (e.g. CFGSUP_STOP_TIMEOUT).
Any bad input is one line on stderr and exit code 2, before anything is started.
"""
from __future__ import annotations

import os
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
@option("--health-addr", type=ADDRESS, default=None,
              help="Serve /healthz, /readyz and /metrics on HOST:PORT.")
@option("--ready-delay", type=SECONDS, default="0",
              help="Seconds after each (re)start during which /readyz still answers 503.")
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


def _check_useless(options: dict) -> None:
    """Options that contradict each other, or that nothing would use: one line, exit 2. One set
    through its CFGSUP_* variable counts like one on the command line (an image that sets
    CFGSUP_WEBHOOK for every mode is as wrong as the command line would be)."""
    if options["verbose"] and options["quiet"]:
        raise click.UsageError("-v/--verbose and -q/--quiet contradict each other: give one of them")
    mode, watching = options["on_change"], bool(options["watches"])
    needs = (
        (("on_change", "validate", "allow_missing", "poll", "debounce", "include", "exclude"),
         watching, "--watch PATH"),
        (("reload_signal",), mode == "signal", "--on-change signal"),
        (("reload_command",), mode == "exec", "--on-change exec"),
        (("webhooks", "webhook_method", "webhook_retries", "webhook_timeout"), mode == "http",
         "--on-change http"),
        (("change_exit_code",), mode == "exit", "--on-change exit"),
        (("command_timeout",), bool(options["validate"]) or mode == "exec",
         "--validate or --on-change exec"),
        (("restart_backoff",), options["on_exit"] == "restart" or (watching and mode == "restart"),
         "--on-exit restart or --on-change restart"),
        (("ready_delay",), bool(options["health_addr"]), "--health-addr"),
    )
    for names, used, what in needs:
        for name in names if not used else ():
            if name in options["_given"]:
                flag, envvar = options["_given"][name]
                origin = f" (set by {envvar})" if envvar else ""
                raise click.UsageError(f"{flag}{origin} does nothing without {what}")


_MISSING = object()


def _access_problem(path: str):
    """Why cfgsup could not watch `path`, in the OS's words; _MISSING if it does not exist (a
    dangling link included); None if it can be watched. A directory must be listable and
    searchable, a regular file readable. What is inside a directory is not looked at here:
    an unreadable file in it is a warning and part of the digest, not a usage error."""
    import stat

    try:
        st_mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return _MISSING
    except OSError as exc:
        return exc.strerror + _who_cannot(path, exc)
    doing = "read the file"
    try:
        if stat.S_ISDIR(st_mode):
            doing = "list the directory"
            with os.scandir(path):
                pass
            doing = "search the directory"
            os.stat(os.path.join(path, "."))  # needs search (x) permission on the directory
        elif stat.S_ISREG(st_mode):
            os.close(os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK))
    except OSError as exc:
        return exc.strerror + _who_cannot(path, exc, doing)
    return None


def _who_cannot(path: str, exc: OSError, doing: str = "") -> str:
    """For a permission error: which directory on the way cannot be searched (or else what
    `doing` on the path itself was refused), and for which uid."""
    import errno

    if exc.errno != errno.EACCES:
        return ""
    uid = os.geteuid()
    here, steps = os.path.abspath(path), []
    while True:
        steps.append(here)
        parent = os.path.dirname(here)
        if parent == here:
            break
        here = parent
    for directory in reversed(steps[1:]):  # from / down to the path's own directory
        if not os.access(directory, os.X_OK, effective_ids=os.access in os.supports_effective_ids):
            return f" (uid {uid} cannot search {directory})"
    return f" (uid {uid} cannot {doing})" if doing else ""


def _settings(options: dict) -> st.Settings:
    """Cross-option checks click cannot express; raises click.UsageError."""
    if not options["command"]:
        raise click.UsageError("no command given: cfgsup [OPTIONS] -- COMMAND [ARGS]...")
    mode = options["on_change"]
    if mode == "exec" and not options["reload_command"]:
        raise click.UsageError("--on-change exec needs --reload-command CMD")
    if mode == "http" and not options["webhooks"]:
        raise click.UsageError("--on-change http needs at least one --webhook URL")
    if mode == "probe" and not options["health_addr"]:
        raise click.UsageError("--on-change probe needs --health-addr HOST:PORT (the probe reads /healthz)")
    if options["poll"] is not None and options["poll"] <= 0:
        raise click.UsageError("--poll must be more than 0 seconds")
    if options["webhook_timeout"] <= 0:
        raise click.UsageError("--webhook-timeout must be more than 0 seconds")
    for path in options["watches"]:
        problem = _access_problem(path)
        if problem is _MISSING:
            if not options["allow_missing"]:
                raise click.UsageError(f"watched path {path!r} does not exist (use --allow-missing to wait for it)")
        elif problem:
            raise click.UsageError(f"watched path {path!r} cannot be accessed: {problem}")
        _refuse_special(path)
    for flag in ("validate", "reload_command"):
        if options[flag]:
            import shlex

            try:
                if not shlex.split(options[flag]):
                    raise ValueError("empty command")
            except ValueError as exc:
                raise click.UsageError(f"--{flag.replace('_', '-')}: {exc}") from None
    _check_useless(options)
    # Click's parameter names are the Settings field names; only a few need converting.
    values = {name: options[name] for name in st.Settings._fields if name in options}
    values.update(
        command=tuple(options["command"]),
        expect_exit=frozenset(options["expect_exit"]),
        log_level=10 if options["verbose"] else 30 if options["quiet"] else 20,
    )
    for name in ("rewrite", "watches", "include", "exclude", "webhooks"):
        values[name] = tuple(values[name])
    return st.Settings(**values)


def _refuse_special(path: str) -> None:
    """A FIFO or device as the watched path would block start-up or be read without end."""
    from .tree import special_kind

    kind = special_kind(path)
    if kind:
        raise click.UsageError(f"watched path {path!r} is {kind}: only directories and regular "
                               f"files can be watched")


def parse(argv: list[str]) -> st.Settings | int:
    """Settings, or an exit code when there is nothing to run (--help, --version, bad input)."""
    try:
        result = command.main(argv, prog_name="cfgsup", standalone_mode=False)
        if not isinstance(result, dict):
            return 0  # --help or --version printed
        return _settings(result)
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
