"""Option parsing: every bad input is one line on stderr and exit 2, with nothing started."""
from __future__ import annotations

import signal
import subprocess

import pytest

from conftest import CFGSUP
from supervisor import cli
from supervisor.settings import parse_duration, parse_host_port, parse_signal, parse_url


@pytest.mark.parametrize("argv, needle", [
    ([], "no command given"),
    (["--"], "no command given"),
    (["--no-such-option", "--", "true"], "No such option"),
    (["--stop-signal", "NOPE", "--", "true"], "unknown signal 'NOPE'"),
    (["--stop-signal", "99", "--", "true"], "unknown signal number '99'"),
    (["--signal", "SIGFOO", "--", "true"], "unknown signal"),
    (["--stop-timeout", "-1", "--", "true"], "non-negative"),
    (["--stop-timeout", "soon", "--", "true"], "must be a number"),
    (["--restart-backoff", "nan", "--", "true"], "non-negative"),
    (["--stop-timeout", "1e300", "--", "true"], "at most 24 days"),
    (["--command-timeout", "2073601", "--watch", ".", "--validate", "true", "--", "true"], "at most"),
    (["--watch", ".", "--on-change", "http", "--webhook", "http://h/", "--webhook-timeout", "0", "--", "true"],
     "--webhook-timeout must be more than 0"),
    (["--rewrite", "HUP", "--", "true"], "FROM:TO"),
    (["--rewrite", "HUP:NOPE", "--", "true"], "unknown signal"),
    (["-e", "256", "--", "true"], "0-255"),
    (["-e", "x", "--", "true"], "whole number"),
    (["--on-exit", "sometimes", "--", "true"], "sometimes"),
    (["--on-change", "explode", "--", "true"], "explode"),
    (["--watch", "/no/such/dir", "--", "true"], "does not exist"),
    (["--on-change", "exec", "--", "true"], "needs --reload-command"),
    (["--on-change", "http", "--", "true"], "needs at least one --webhook"),
    (["--on-change", "http", "--webhook", "ftp://x", "--", "true"], "http:// or https://"),
    (["--on-change", "http", "--webhook", "http://127.0.0.1:99999/", "--", "true"], "1-65535"),
    (["--on-change", "http", "--webhook", "http://", "--", "true"], "has no host"),
    (["--on-change", "http", "--webhook", "http://:8080/", "--", "true"], "has no host"),
    (["--on-change", "http", "--webhook", "http://h:0/", "--", "true"], "1-65535"),
    (["--on-change", "http", "--webhook", "http://h:http/", "--", "true"], "1-65535"),
    (["--on-change", "http", "--webhook", "http://[::1/", "--", "true"], "IPv6"),
    (["--on-change", "http", "--webhook", "http://a b/", "--", "true"], "bad host name"),
    (["--on-change", "http", "--webhook", "http://user:pw@h/", "--", "true"], "password"),
    (["--on-change", "http", "--webhook", "http://h/", "--webhook-method", "PO ST", "--", "true"],
     "HTTP method"),
    (["--on-change", "probe", "--", "true"], "needs --health-addr"),
    (["--poll", "0", "--", "true"], "more than 0"),
    (["--validate", "'unclosed", "--", "true"], "--validate"),
    (["--health-addr", "nohost", "--", "true"], "HOST:PORT"),
    # Longer than the OS's waits take (about 24.8 days): refused, never an OverflowError later.
    (["--stop-timeout", "2592000", "--", "true"], "at most 24 days"),
    (["--command-timeout", "1e7", "--", "true"], "at most 24 days"),
    (["--poll", "1e7", "--", "true"], "at most 24 days"),
    # safe apply: nothing to roll back to without a stage
    (["--min-uptime", "5", "--", "true"], "--min-uptime does nothing without --stage"),
    (["--verify", "true", "--", "true"], "--verify does nothing without --stage"),
    (["--verify-timeout", "5", "--", "true"], "does nothing without --stage"),
    (["--keep", "5", "--", "true"], "--keep does nothing without --stage"),
    (["--splay", "5", "--", "true"], "--splay does nothing without --watch"),
    (["--stage", "nocolon", "--", "true"], "SRC:DEST"),
    (["--stage", "/no/such/src:/tmp/dest", "--", "true"], "does not exist"),
    (["--stage", "/etc/hostname:/tmp/dest", "--", "true"], "is not a directory"),
    (["--watch", "/tmp", "--stage", "/tmp:/var/tmp/x", "--", "true"], "both --watch and a --stage SRC"),
    (["--stage", "/etc:/tmp/d", "--stage", "/usr:/tmp/d", "--", "true"], "same DEST"),
    (["--stage", "/etc:/tmp/d", "--verify", "", "--", "true"], "--verify: empty command"),
    # sidecar mode (no COMMAND)
    (["--watch", "/tmp"], "--on-change restart (the default) needs --target NAME in sidecar mode"),
    (["--watch", "/tmp", "--on-change", "signal"], "--on-change signal needs --target NAME"),
    (["--watch", "/tmp", "--on-change", "exit"], "would only restart cfgsup's own container"),
    (["--stage", "/etc:/tmp/d", "--on-change", "none"], "--stage needs a COMMAND"),
    (["--target", "nginx", "--", "true"], "--target does nothing without sidecar mode"),
    (["--watch", "/tmp", "--on-change", "none", "--on-exit", "restart"], "--on-exit does nothing without a COMMAND"),
    (["--watch", "/tmp", "--on-change", "none", "--stop-timeout", "3"], "--stop-timeout does nothing without a COMMAND or --target"),
    (["--watch", "/tmp", "--on-change", "signal", "--target", "x", "--probe-hold", "3"], "--probe-hold does nothing"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, argv, needle):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("cfgsup: error: ")
    assert needle in err


@pytest.mark.parametrize("argv, needle", [
    (["-q", "-v", "--", "true"], "-v/--verbose and -q/--quiet contradict each other"),
    (["--webhook", "http://h/", "--watch", ".", "--", "true"], "--webhook does nothing without --on-change http"),
    (["--webhook-timeout", "3", "--watch", ".", "--", "true"], "--webhook-timeout does nothing without --on-change http"),
    (["--webhook-retries", "0", "--watch", ".", "--", "true"], "--webhook-retries does nothing"),
    (["--webhook-method", "PUT", "--watch", ".", "--", "true"], "--webhook-method does nothing"),
    (["--reload-command", "true", "--watch", ".", "--", "true"], "--reload-command does nothing without --on-change exec"),
    (["--signal", "USR1", "--watch", ".", "--", "true"], "--signal does nothing without --on-change signal"),
    (["--signal", "HUP", "--watch", ".", "--on-change", "exec", "--reload-command", "x", "--", "true"],
     "--signal does nothing without --on-change signal"),
    (["--change-exit-code", "3", "--watch", ".", "--", "true"], "--change-exit-code does nothing without --on-change exit"),
    (["--command-timeout", "3", "--watch", ".", "--", "true"], "--command-timeout does nothing without --validate"),
    (["--restart-backoff", "3", "--", "true"], "--restart-backoff does nothing without --on-exit restart"),
    (["--ready-delay", "3", "--", "true"], "--ready-delay does nothing without --health-addr"),
    (["--on-change", "signal", "--", "true"], "--on-change does nothing without --watch PATH"),
    (["--validate", "true", "--", "true"], "--validate does nothing without --watch"),
    (["--allow-missing", "--", "true"], "--allow-missing does nothing without --watch"),
    (["--poll", "1", "--", "true"], "--poll does nothing without --watch"),
    (["--debounce", "1", "--", "true"], "--debounce does nothing without --watch"),
    (["--include", "*.conf", "--", "true"], "--include does nothing without --watch"),
    (["--exclude", "*.log", "--", "true"], "--exclude does nothing without --watch"),
])
def test_contradicting_and_useless_options_are_one_line_and_exit_2(capsys, argv, needle):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("cfgsup: error: ") and needle in err


def test_a_useless_option_from_the_environment_is_an_error_too(capsys, monkeypatch):
    monkeypatch.setenv("CFGSUP_WEBHOOK", "http://127.0.0.1:9090/-/reload")
    assert cli.main(["--watch", ".", "--on-change", "signal", "--", "true"]) == 2
    err = capsys.readouterr().err
    assert "--webhook (set by CFGSUP_WEBHOOK) does nothing without --on-change http" in err
    monkeypatch.setenv("CFGSUP_ON_CHANGE", "http")  # the image sets the mode that uses it: fine
    assert cli.parse(["--watch", ".", "--", "true"]).webhooks == ("http://127.0.0.1:9090/-/reload",)


def test_flags_set_false_in_the_environment_are_not_given(monkeypatch):
    monkeypatch.setenv("CFGSUP_VERBOSE", "false")
    monkeypatch.setenv("CFGSUP_ALLOW_MISSING", "0")
    assert cli.parse(["-q", "--", "true"]).log_level == 30


@pytest.mark.parametrize("argv", [
    ["--watch", ".", "--on-change", "signal", "--signal", "USR1", "--validate", "true", "--", "true"],
    ["--watch", ".", "--on-change", "exec", "--reload-command", "true", "--command-timeout", "3", "--", "true"],
    ["--watch", ".", "--on-change", "http", "--webhook", "http://h/", "--webhook-timeout", "1", "--", "true"],
    ["--watch", ".", "--on-change", "exit", "--change-exit-code", "3", "--", "true"],
    ["--watch", ".", "--restart-backoff", "5", "--", "true"],  # transient spawn failures on a restart
    ["--on-exit", "restart", "--restart-backoff", "5", "--", "true"],
    ["--health-addr", ":9102", "--ready-delay", "2", "--", "true"],
    ["--watch", ".", "--on-change", "restart", "--allow-missing", "--poll", "1", "--debounce", "1",
     "--include", "*.conf", "--exclude", "*.log", "--", "true"],
])
def test_options_with_the_mode_that_uses_them_are_fine(argv):
    assert not isinstance(cli.parse(argv), int)


def test_env_vars_feed_options(capsys, monkeypatch):
    monkeypatch.setenv("CFGSUP_STOP_TIMEOUT", "abc")
    assert cli.main(["--", "true"]) == 2
    assert "--stop-timeout" in capsys.readouterr().err
    monkeypatch.setenv("CFGSUP_STOP_TIMEOUT", "7")
    monkeypatch.setenv("CFGSUP_GROUP", "1")
    monkeypatch.setenv("CFGSUP_REWRITE", "USR1:USR2 HUP:0")
    settings = cli.parse(["--", "true"])
    assert settings.stop_timeout == 7 and settings.group
    assert settings.rewrite == ((signal.SIGUSR1, signal.SIGUSR2), (signal.SIGHUP, 0))


def test_nothing_starts_on_bad_input(tmp_path):
    marker = tmp_path / "started"
    proc = subprocess.run([*CFGSUP, "--stop-timeout", "-5", "--", "touch", str(marker)],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert not marker.exists()
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


@pytest.mark.parametrize("text, number", [
    ("HUP", 1), ("SIGHUP", 1), ("hup", 1), ("1", 1), ("TERM", 15), ("SIGUSR2", 12),
    ("RTMIN", signal.SIGRTMIN), ("RTMIN+2", signal.SIGRTMIN + 2), ("SIGRTMAX-1", signal.SIGRTMAX - 1),
])
def test_signal_spellings(text, number):
    assert parse_signal(text) == number


@pytest.mark.parametrize("text", ["", "0", "65", "KILLME", "RTMIN+99"])
def test_bad_signals(text):
    with pytest.raises(ValueError):
        parse_signal(text)


def test_sidecar_settings():
    settings = cli.parse(["--watch", "/tmp", "--on-change", "signal", "--target", "nginx", "-g"])
    assert settings.command == () and settings.target == "nginx" and settings.group
    settings = cli.parse(["--watch", "/tmp", "--on-change", "probe", "--health-addr", ":9102",
                          "--probe-hold", "90"])
    assert settings.probe_hold == 90 and settings.target is None
    assert not isinstance(cli.parse(["--watch", "/tmp", "--on-change", "http",
                                     "--webhook", "http://127.0.0.1:9090/-/reload"]), int)


def test_stage_options():
    settings = cli.parse(["--stage", "/etc:/tmp/cfgsup-d", "--watch", "/usr", "--verify", "true",
                          "--min-uptime", "2", "--keep", "5", "--splay", "30s", "--", "true"])
    assert settings.stage == (("/etc", "/tmp/cfgsup-d"),) and settings.watches == ("/usr", "/etc")
    assert settings.min_uptime == 2 and settings.keep == 5 and settings.splay == 30
    assert settings.stage_sources == ("/etc",)


def test_longest_durations_and_units():
    assert parse_duration("24d") == 24 * 86400 and parse_duration("2h") == 7200
    settings = cli.parse(["--stop-timeout", "24d", "--command-timeout", "1h", "--watch", ".",
                          "--validate", "true", "--", "true"])
    assert settings.stop_timeout == 24 * 86400 and settings.command_timeout == 3600


def test_durations_and_addresses():
    assert parse_duration("10") == 10 and parse_duration("250ms") == 0.25 and parse_duration("2m") == 120
    assert parse_host_port(":9090") == ("0.0.0.0", 9090)
    assert parse_host_port("[::1]:80") == ("::1", 80)
    for bad in ("-1", "x", "inf"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_help_and_version_exit_0(capsys):
    assert cli.main(["--help"]) == 0
    assert "--stop-timeout" in capsys.readouterr().out
    assert cli.main(["--version"]) == 0


def test_readme_documents_every_option_with_its_env_var():
    import os

    with open(os.path.join(os.path.dirname(os.path.dirname(__file__)), "README.md")) as fh:
        readme = fh.read()
    for param in [p for p in cli.command.params if p.param_type_name == "option"]:
        long_name = next(o for o in param.opts if o.startswith("--"))
        assert f"`{long_name}" in readme, long_name
        if param.envvar:
            assert f"`{param.envvar}`" in readme, param.envvar


def test_every_setting_has_its_option():
    from supervisor.settings import Settings

    names = {p.name for p in cli.command.params}
    assert set(Settings._fields) - names == {"log_level"}  # from -v/-q


def test_webhook_urls_are_split_for_the_request():
    url = parse_url("HTTPS://[::1]:8443/re load?token=s3cret#frag")
    assert (url.scheme, url.host, url.port) == ("https", "::1", 8443)
    assert url.target == "/re%20load?token=s3cret" and url.host_header == "[::1]:8443"
    assert url.shown == "https://[::1]:8443/re%20load?..."  # never the query in a log line
    plain = parse_url("http://prometheus?reload")
    assert (plain.port, plain.target, plain.host_header) == (80, "/?reload", "prometheus")
    settings = cli.parse(["--on-change", "http", "--webhook", " http://h:9/x ", "--webhook-method", "put",
                          "--watch", ".", "--", "true"])
    assert settings.webhooks == ("http://h:9/x",) and settings.webhook_method == "PUT"


def test_options_end_at_the_first_operand():
    """As in dumb-init and POSIX utilities: everything after the command's name is the command's."""
    assert cli.parse(["echo", "hello", "-g", "world"]).command == ("echo", "hello", "-g", "world")
    settings = cli.parse(["-g", "app", "--help", "--", "-v"])
    assert settings.command == ("app", "--help", "--", "-v") and settings.group
    assert cli.parse(["--", "app", "-q"]).command == ("app", "-q")


@pytest.mark.parametrize("argv, out", [
    (["echo", "hello", "-g", "world"], "hello -g world\n"),
    (["printf", "%s|", "--help", "-v", "--version"], "--help|-v|--version|"),
    (["--", "printf", "%s|", "--", "-q"], "--|-q|"),
])
def test_the_apps_options_reach_the_app(argv, out):
    proc = subprocess.run([*CFGSUP, *argv], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == out


# ---- watched paths that cannot be accessed (run as a non-root user) -------------------------
import os  # noqa: E402
import shutil  # noqa: E402

from asuser import as_user  # noqa: E402
import tempfile  # noqa: E402

AS_NOBODY = as_user(65534, 65534)
needs_root = pytest.mark.skipif(not os.environ.get("CI") and (os.geteuid() != 0 or not shutil.which("setpriv")),
                                reason="needs root and setpriv to run cfgsup as another user")


@pytest.fixture
def tree():
    """Root-owned paths that uid 65534 can reach (pytest's tmp_path is 0700 all the way)."""
    top = tempfile.mkdtemp(prefix="cfgsup-access-")
    os.chmod(top, 0o755)
    for name, mode in (("private", 0o700), ("private/cfg", 0o755), ("unlisted", 0o311),
                       ("unsearchable", 0o744), ("open", 0o755)):
        os.mkdir(os.path.join(top, name))
        os.chmod(os.path.join(top, name), mode)
    for name, mode in (("secret.key", 0o600), ("open/secret", 0o600), ("open/app.conf", 0o644)):
        with open(os.path.join(top, name), "w") as fh:
            fh.write("x\n")
        os.chmod(os.path.join(top, name), mode)
    yield top
    shutil.rmtree(top)


def as_nobody(*args):
    return subprocess.run([*AS_NOBODY, *CFGSUP, *args], capture_output=True, text=True, timeout=30)


@needs_root
@pytest.mark.parametrize("path, why", [
    ("private/cfg", "Permission denied (uid 65534 cannot search {top}/private)"),
    ("unlisted", "Permission denied (uid 65534 cannot list the directory)"),
    ("unsearchable", "Permission denied (uid 65534 cannot search the directory)"),
    ("secret.key", "Permission denied (uid 65534 cannot read the file)"),
])
@pytest.mark.parametrize("allow_missing", [False, True])
def test_a_watched_path_that_cannot_be_accessed_is_exit_2_with_the_reason(tree, path, why, allow_missing):
    """Not "does not exist" (the parent cannot be searched, so nobody can tell), and not a
    warning: cfgsup could never see this path change, with or without --allow-missing."""
    extra = ["--allow-missing"] if allow_missing else []
    proc = as_nobody(*extra, "--watch", f"{tree}/{path}", "--", "true")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == (f"cfgsup: error: watched path '{tree}/{path}' cannot be accessed: "
                           f"{why.format(top=tree)}\n")


@needs_root
def test_an_unreadable_file_inside_a_watched_directory_is_a_warning_not_an_error(tree):
    proc = as_nobody("--watch", f"{tree}/open", "--", "true")
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if "WARNING" in line]
    assert len(warnings) == 1 and "cannot read secret" in warnings[0]


def test_a_special_file_as_the_watched_path_is_refused_at_start(tmp_path):
    """issue 9 item 8: `--watch dir/fifo` hung start-up (and ignored TERM); `--watch /dev/zero`
    read without end. Both are one line and exit 2 now, with nothing started."""
    os.mkfifo(tmp_path / "fifo")
    os.symlink("/dev/zero", tmp_path / "zero")
    marker = tmp_path / "started"
    for path, kind in ((tmp_path / "fifo", "a FIFO"), ("/dev/zero", "a character device"),
                       (tmp_path / "zero", "a character device")):
        proc = subprocess.run([*CFGSUP, "--watch", str(path), "--", "touch", str(marker)],
                              capture_output=True, text=True, timeout=30)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.count("\n") == 1 and f"is {kind}" in proc.stderr
        assert not marker.exists()
