"""Checks across options that click cannot express, and the Settings they make.

Every failure is a click.UsageError: one line on stderr and exit code 2, before anything starts.
"""
from __future__ import annotations

import os

import click

from . import settings as st


def _check_useless(options: dict) -> None:
    """Options that contradict each other, or that nothing would use: one line, exit 2. One set
    through its CFGSUP_* variable counts like one on the command line (an image that sets
    CFGSUP_WEBHOOK for every mode is as wrong as the command line would be)."""
    if options["verbose"] and options["quiet"]:
        raise click.UsageError("-v/--verbose and -q/--quiet contradict each other: give one of them")
    mode, watching = options["on_change"], bool(options["watches"] or options["stage"])
    app, sidecar = bool(options["command"]), not options["command"]
    needs = (
        (("on_change", "validate", "allow_missing", "poll", "debounce", "include", "exclude"),
         watching, "--watch PATH or --stage SRC:DEST"),
        (("reload_signal",), mode == "signal", "--on-change signal"),
        (("reload_command",), mode == "exec", "--on-change exec"),
        (("webhooks", "webhook_method", "webhook_retries", "webhook_timeout"), mode == "http",
         "--on-change http"),
        (("change_exit_code",), mode == "exit", "--on-change exit"),
        (("command_timeout",), bool(options["validate"] or options["verify"]) or mode == "exec",
         "--validate, --verify or --on-change exec"),
        (("restart_backoff",), options["on_exit"] == "restart" or (watching and mode == "restart"),
         "--on-exit restart or --on-change restart"),
        (("ready_delay",), bool(options["health_addr"]), "--health-addr"),
        # nothing to roll back to without a stage
        (("min_uptime", "verify", "verify_timeout", "keep"), bool(options["stage"]), "--stage SRC:DEST"),
        (("splay",), watching, "--watch PATH or --stage SRC:DEST"),
        # sidecar mode: no app of ours to restart, wait for or stop, unless there is a target
        (("on_exit", "expect_exit", "rewrite"), app, "a COMMAND (sidecar mode has no app of its own)"),
        (("target",), sidecar, "sidecar mode (no COMMAND)"),
        (("stop_signal", "stop_timeout", "group"), app or bool(options["target"]), "a COMMAND or --target NAME"),
        (("probe_hold",), sidecar and mode == "probe" and not options["target"],
         "--on-change probe in sidecar mode without --target"),
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


def _check_sidecar(options: dict, mode: str) -> None:
    """No COMMAND: sidecar mode. It acts on a process of another container (--target), over
    HTTP, or through /healthz; a mode that needs an app of its own makes no sense there."""
    if options["stage"]:
        raise click.UsageError("--stage needs a COMMAND: a rollback needs to see the app exit")
    if not options["watches"]:
        raise click.UsageError("no command given, and no --watch: cfgsup [OPTIONS] -- COMMAND [ARGS]... "
                               "(or, as a sidecar with no command, --watch PATH)")
    if mode == "exit":
        raise click.UsageError("--on-change exit in sidecar mode would only restart cfgsup's own "
                               "container: use --on-change restart --target NAME")
    if mode in ("signal", "restart") and not options["target"]:
        default = " (the default)" if mode == "restart" else ""
        raise click.UsageError(f"--on-change {mode}{default} needs --target NAME in sidecar mode (no "
                               f"COMMAND): the process to {'signal' if mode == 'signal' else 'restart'}")


def settings_from(options: dict) -> st.Settings:
    """Cross-option checks click cannot express; raises click.UsageError."""
    mode = options["on_change"]
    if not options["command"]:
        _check_sidecar(options, mode)
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
    sources = [src for src, _dest in options["stage"]]
    for src, dest in options["stage"]:
        problem = _access_problem(src)
        if problem is _MISSING:
            raise click.UsageError(f"--stage: {src!r} does not exist")
        if problem:
            raise click.UsageError(f"--stage: {src!r} cannot be accessed: {problem}")
        if not os.path.isdir(src):
            raise click.UsageError(f"--stage: {src!r} is not a directory (stage a mounted volume)")
    for path in options["watches"]:
        if os.path.abspath(path) in map(os.path.abspath, sources):
            raise click.UsageError(f"{path!r} is both --watch and a --stage SRC: --stage watches it")
    dests = [os.path.abspath(dest) for _src, dest in options["stage"]]
    if len(set(dests)) != len(dests):
        raise click.UsageError("two --stage pairs publish into the same DEST")
    for flag in ("validate", "reload_command", "verify"):
        if options[flag] is not None:
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
    for name in ("rewrite", "watches", "include", "exclude", "webhooks", "stage"):
        values[name] = tuple(values[name])
    values["watches"] += tuple(sources)  # a staged SRC is watched like any other path
    return st.Settings(**values)


def _refuse_special(path: str) -> None:
    """A FIFO or device as the watched path would block start-up or be read without end."""
    from .tree import special_kind

    kind = special_kind(path)
    if kind:
        raise click.UsageError(f"watched path {path!r} is {kind}: only directories and regular "
                               f"files can be watched")
