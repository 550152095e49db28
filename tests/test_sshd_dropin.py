"""
The C{diego-sshd} console script, a drop-in for upstream's binary as Cloud
Controller starts it in every app instance: Go-style flags, keys off the
command line, upstream's algorithm lists, lager lines, refusals and exit codes.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from twisted.conch.ssh import keys
from twisted.internet.defer import fail, succeed
from twisted.logger import Logger
from twisted.python import usage

from diegossh import secretargs
from diegossh.sshd import dropin, heap, script
from diegossh.sshd.settings import Refused
from tests.support.daemon import freePort, waitForPort
from tests.support.eventually import eventuallyBlocking
from tests.support.keys import authorizedKeyLine, key, writePrivateKey
from tests.support.openssh import BASE_OPTIONS

DIEGO_SSHD = str(Path(sys.executable).with_name("diego-sshd"))


@functools.cache
def ccHostKey() -> str:
    """
    An RSA host key as Cloud Controller generates one: 2048 bits, PKCS#1 PEM.
    """
    private = rsa.generate_private_key(65537, 2048)
    return private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()


def ccArguments(port: int, hostKey: str, authorizedKey: str, level: str = "fatal") -> list[str]:
    """
    Cloud Controller's LRP run action for diego-sshd, listening on C{port}.
    """
    return [
        f"-address=127.0.0.1:{port}",
        f"-hostKey={hostKey}",
        f"-authorizedKey={authorizedKey}",
        "-inheritDaemonEnv",
        f"-logLevel={level}",
    ]


# -- the command line, in memory


def test_cloud_controller_arguments_are_read() -> None:
    command = script.parseCommand(ccArguments(2222, "PEM", "ssh-rsa AAAA"))
    assert command.given == {
        "address": "127.0.0.1:2222",
        "hostKey": "PEM",
        "authorizedKey": "ssh-rsa AAAA",
        "inheritDaemonEnv": True,
        "logLevel": "fatal",
    }
    assert command.keysOnCommandLine


def test_reexec_arguments_leave_the_keys_out() -> None:
    command = script.parseCommand(
        ["--hostKey", "PEM", "-authorizedKey=line", "-inheritDaemonEnv", "-address=:2222"]
    )
    assert script.reexecArguments(command) == ["--inheritDaemonEnv=true", "--address=:2222"]
    # and Go reads them back as they were
    again = script.parseCommand(script.reexecArguments(command))
    assert again.given == {"inheritDaemonEnv": True, "address": ":2222"}
    assert not again.keysOnCommandLine


def test_reexec_environment_carries_the_keys_and_the_callers_variables_win() -> None:
    command = script.parseCommand(["-hostKey=FLAGPEM", "-authorizedKey=flag line"])
    env = script.reexecEnvironment(command, {"SSHD_HOSTKEY": "ENVPEM", "OTHER": "x"})
    assert env == {"SSHD_HOSTKEY": "ENVPEM", "SSHD_AUTHKEY": "flag line", "OTHER": "x"}


def test_empty_host_key_is_not_carried() -> None:
    command = script.parseCommand(["-hostKey=", "-authorizedKey=line"])
    assert command.keysOnCommandLine
    assert "SSHD_HOSTKEY" not in script.reexecEnvironment(command, {})


def test_upstream_algorithm_lists_when_left_out_or_empty() -> None:
    command = script.parseCommand(["-allowedMACs=", "-allowedCiphers=aes128-ctr"])
    arguments = script.optionsArguments(command)
    assert "--allowedCiphers=aes128-ctr" in arguments
    assert "--allowedMACs=hmac-sha2-256-etm@openssh.com,hmac-sha2-256" in arguments
    assert "--allowedKeyExchanges=curve25519-sha256@libssh.org" in arguments


def test_options_get_upstream_defaults_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSHD_HOSTKEY", raising=False)
    monkeypatch.delenv(secretargs.REEXEC_MARK, raising=False)
    environ = {"PATH": "/bin"}
    monkeypatch.setattr(os, "environ", environ)
    command = script.parseCommand(
        ["-authorizedKey=" + authorizedKeyLine(key("ed25519")), "-logLevel=error"]
    )
    settings = dropin.readOptions(command, environ)["settings"]
    assert settings.policy.ciphers == (
        "chacha20-poly1305@openssh.com",
        "aes128-gcm@openssh.com",
        "aes256-ctr",
        "aes192-ctr",
        "aes128-ctr",
    )
    assert settings.policy.macs == ("hmac-sha2-256-etm@openssh.com", "hmac-sha2-256")
    assert settings.policy.keyExchanges == ("curve25519-sha256@libssh.org",)
    assert settings.authorizedKey == key("ed25519").public()
    assert settings.logLevel == 2
    assert settings.address == "127.0.0.1:2222"
    assert "SSHD_AUTHKEY" not in environ


def test_unknown_flag_is_gos_error_and_exit_2() -> None:
    with pytest.raises(script.UsageExit) as e:
        script.parseCommand(["-x"], "/tmp/lifecycle/diego-sshd")
    assert e.value.code == 2
    lines = e.value.message.splitlines()
    assert lines[0] == "flag provided but not defined: -x"
    assert lines[1] == "Usage of /tmp/lifecycle/diego-sshd:"


@pytest.mark.parametrize("flag", ["-h", "-help", "--help"])
def test_help_is_usage_and_exit_0(flag: str) -> None:
    with pytest.raises(script.UsageExit) as e:
        script.parseCommand([flag], "diego-sshd")
    assert e.value.code == 0
    assert e.value.message.startswith("Usage of diego-sshd:\n")


def test_usage_has_upstreams_wording_and_defaults() -> None:
    text = script.usageText("diego-sshd", script.goFlags())
    assert (
        '  -address string\n    \tlisten address for ssh daemon (default "127.0.0.1:2222")\n'
        in text
    )
    assert "  -inheritDaemonEnv\n    \tInherit daemon's environment\n" in text
    assert "  -timeFormat value\n" in text
    names = [line.split()[0][1:] for line in text.splitlines()[1:] if line.startswith("  -")]
    assert names == sorted(names)
    assert set(script.UPSTREAM_FLAGS) <= set(names)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["-logLevel=FATAL"], "panic: unknown log level: FATAL"),
        (
            ["-timeFormat=iso"],
            'invalid value "iso" for flag -timeFormat: invalid TimeFormat: "iso"',
        ),
        (["-maxSessions=ten"], 'invalid value "ten" for flag -maxSessions: parse error'),
        (["-inheritDaemonEnv=maybe"], 'invalid boolean value "maybe" for -inheritDaemonEnv'),
        (["-address"], "flag needs an argument: -address"),
    ],
)
def test_values_go_refuses_exit_2(arguments: list[str], message: str) -> None:
    with pytest.raises(script.UsageExit) as e:
        script.parseCommand(arguments)
    assert e.value.code == 2
    assert e.value.message.splitlines()[0] == message


def test_program_prefix_is_interpreter_and_script() -> None:
    assert secretargs.programPrefix(
        ["/venv/bin/python3", "-X", "dev", "/venv/bin/diego-sshd", "-address=:2222"],
        ["/venv/bin/diego-sshd", "-address=:2222"],
    ) == ["/venv/bin/python3", "-X", "dev", "/venv/bin/diego-sshd"]


def test_the_daemon_runs_with_dash_OO_when_its_bytecode_can_be_cached() -> None:
    prefix = ["/venv/bin/python3", "-X", "dev", "/venv/bin/diego-sshd"]
    assert script.daemonPrefix(prefix, frozen=False, optimize=0, usable=lambda: True) == [
        "/venv/bin/python3", "-OO", "-X", "dev", "/venv/bin/diego-sshd",
    ]  # fmt: skip
    # the one-file artifact, a caller's own -OO, bytecode neither cached nor writable
    assert script.daemonPrefix(["dist/diego-sshd"], frozen=True, optimize=0) == ["dist/diego-sshd"]
    assert script.daemonPrefix(prefix, frozen=False, optimize=2, usable=lambda: True) == prefix
    assert script.daemonPrefix(prefix, frozen=False, optimize=0, usable=lambda: False) == prefix


def test_optimized_bytecode_is_usable_when_cached_or_writable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "pkg_for_oo"
    package.mkdir()
    (package / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    assert script.optimizedBytecodeUsable("pkg_for_oo")  # __pycache__ can be made
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    assert not script.optimizedBytecodeUsable("pkg_for_oo")
    cache = package / "__pycache__"
    cache.mkdir()
    (cache / f"__init__.{sys.implementation.cache_tag}.opt-2.pyc").write_bytes(b"")
    assert script.optimizedBytecodeUsable("pkg_for_oo")
    assert not script.optimizedBytecodeUsable("no_such_package_here")


def test_reexec_marks_and_flushes() -> None:
    calls: list[tuple[str, list[str], dict[str, str]]] = []
    secretargs.reexec(["python", "diego-sshd"], {"A": "b"}, lambda *a: calls.append(a))
    assert calls == [
        (sys.executable, ["python", "diego-sshd"], {"A": "b", secretargs.REEXEC_MARK: "1"})
    ]


# -- refusals and the service, in memory


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    captured: list[dict[str, Any]] = []
    monkeypatch.setattr(dropin, "_log", Logger(observer=captured.append))
    return captured


def lagerEvents(events: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [(event["lager"], event["lager_data"]) for event in events]


def refusal(options: list[str], monkeypatch: pytest.MonkeyPatch) -> usage.UsageError:
    environ: dict[str, str] = {}
    monkeypatch.setattr(os, "environ", environ)
    with pytest.raises(usage.UsageError) as e:
        dropin.readOptions(script.parseCommand(options), environ)
    return e.value


def test_missing_authorized_key_is_upstreams_refusal(
    events: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    error = refusal([], monkeypatch)
    assert isinstance(error.__cause__, Refused)
    dropin.logRefusal(error)
    assert [name for name, _ in lagerEvents(events)] == [
        "authorized-key-required",
        "configure-failed",
    ]
    assert lagerEvents(events)[0][1] == {}
    assert "no authorized key" in lagerEvents(events)[1][1]["error"]


def test_unparseable_host_key_is_upstreams_refusal(
    events: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    error = refusal(["-hostKey=garbage", "-allowUnauthenticatedClients"], monkeypatch)
    dropin.logRefusal(error)
    names = [name for name, _ in lagerEvents(events)]
    assert names == ["failed-to-parse-host-key", "configure-failed"]
    assert "--hostKey" in lagerEvents(events)[0][1]["error"]


def test_other_refusals_are_configure_failed(
    events: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    error = refusal(["-allowUnauthenticatedClients", "-allowedCiphers=rot13"], monkeypatch)
    dropin.logRefusal(error)
    [(name, data)] = lagerEvents(events)
    assert name == "configure-failed"
    assert "rot13" in data["error"]


@dataclass
class FakePort:
    stopped: bool = False

    def stopListening(self) -> Any:
        self.stopped = True
        return succeed(None)


@dataclass
class FakeEndpoint:
    port: FakePort | None

    def listen(self, factory: object) -> Any:
        if self.port is None:
            return fail(OSError("address in use"))
        return succeed(self.port)


def test_started_once_every_listener_listens_and_exited_on_stop(
    events: list[dict[str, Any]],
) -> None:
    debug, daemon = FakePort(), FakePort()
    failures: list[object] = []
    afterStart: list[list[tuple[str, dict[str, Any]]]] = []
    service = dropin.DropInService(
        [(FakeEndpoint(debug), object()), (FakeEndpoint(daemon), object())], failures.append,
        lambda: afterStart.append(lagerEvents(events)),
    )  # fmt: skip
    service.startService()
    assert lagerEvents(events) == [("started", {})]
    assert afterStart == [[("started", {})]]  # once, after started
    service.stopService()
    assert debug.stopped and daemon.stopped
    assert lagerEvents(events) == [("started", {}), ("exited", {})]
    assert failures == []


def test_a_listener_that_fails_is_exited_with_failure(events: list[dict[str, Any]]) -> None:
    failures: list[object] = []
    afterStart: list[None] = []
    service = dropin.DropInService(
        [(FakeEndpoint(None), object())], failures.append, lambda: afterStart.append(None)
    )
    service.startService()
    assert lagerEvents(events) == [("exited-with-failure", {"error": "address in use"})]
    assert len(failures) == 1
    assert afterStart == []


def test_released_start_up_pages_are_a_debug_line(events: list[dict[str, Any]]) -> None:
    dropin.releasePages(lambda: 12345)
    assert lagerEvents(events) == [("pages-released", {"bytes": 12345})]
    assert events[-1]["log_level"].name == "debug"


# -- the installed console script, with OpenSSH


@dataclass
class Running:
    proc: subprocess.Popen[bytes]
    port: int
    out: Path
    err: Path

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.out.read_text().splitlines() if line]

    def line(self, message: str) -> dict[str, Any]:
        """
        The first lager line with C{message}, once the daemon has written it.
        """
        return eventuallyBlocking(
            lambda: next((x for x in self.lines() if x["message"] == message), None), message
        )

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(20)


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[Running]]:
    running: list[Running] = []
    yield running
    for daemon in running:
        if daemon.proc.poll() is None:
            daemon.proc.kill()
            daemon.proc.wait()


def environment(tmp: Path, **extra: str) -> dict[str, str]:
    home = tmp / "home"
    home.mkdir(exist_ok=True)
    return {"PATH": "/usr/bin:/bin", "HOME": str(home), "USER": "vcap", **extra}


def launch(
    tmp: Path, arguments: list[str], env: dict[str, str], port: int | None = None
) -> Running:
    out, err = tmp / f"out{len(list(tmp.iterdir()))}.log", tmp / "err.log"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        proc = subprocess.Popen(
            [DIEGO_SSHD, *arguments], stdout=stdout, stderr=stderr, env=env, cwd=tmp,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
    return Running(proc, port or 0, out, err)


def serve(
    tmp: Path, started: list[Running], arguments: list[str], env: dict[str, str], port: int
) -> Running:
    daemon = launch(tmp, arguments, env, port)
    started.append(daemon)
    waitForPort(port, daemon.proc)
    return daemon


def login(
    daemon: Running, identity: Path, *command: str, options: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[bytes]:
    argv = ["ssh", *BASE_OPTIONS, *options, "-p", str(daemon.port), "-i", str(identity)]
    return subprocess.run(
        [*argv, "vcap@127.0.0.1", *command], capture_output=True, timeout=60, check=False,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


def userIdentity(tmp: Path) -> tuple[Path, str]:
    """
    The route's RSA key, as Cloud Controller generates one: the private half
    for ssh, the authorized_keys line for the daemon.
    """
    return writePrivateKey(key("rsa"), tmp / "id_rsa"), authorizedKeyLine(key("rsa"))


def offeredHostKey(port: int, kind: str) -> keys.Key:
    result = subprocess.run(
        ["ssh-keyscan", "-t", kind, "-p", str(port), "127.0.0.1"],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    [line] = [line for line in result.stdout.splitlines() if not line.startswith("#")]
    return keys.Key.fromString(line.split(None, 1)[1])


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


@pytest.mark.interop
def test_cloud_controllers_command_line_serves_a_login(
    tmp_path: Path, started: list[Running]
) -> None:
    identity, authorized = userIdentity(tmp_path)
    port = freePort()
    daemon = serve(
        tmp_path, started, ccArguments(port, ccHostKey(), authorized), environment(tmp_path),
        port,
    )  # fmt: skip
    result = login(daemon, identity, "echo $USER; exit 7")
    assert (result.returncode, result.stdout) == (7, b"vcap\n"), result.stderr
    shown = cmdline(daemon.proc.pid)
    assert "PRIVATE KEY" not in shown
    assert authorized.split()[1] not in shown
    assert "--address=127.0.0.1:" in shown and "--logLevel=fatal" in shown
    assert " -OO " in shown  # the venv's bytecode can be cached
    assert offeredHostKey(port, "rsa") == keys.Key.fromString(ccHostKey()).public()
    assert daemon.stop() == 0
    assert daemon.out.read_text() == ""  # -logLevel=fatal: nothing at info or error


@pytest.mark.interop
def test_started_is_a_lager_line(tmp_path: Path, started: list[Running]) -> None:
    _, authorized = userIdentity(tmp_path)
    port = freePort()
    daemon = serve(
        tmp_path, started, ccArguments(port, ccHostKey(), authorized, "info"),
        environment(tmp_path), port,
    )  # fmt: skip
    line = daemon.line("sshd.started")
    assert line["source"] == "sshd"
    assert line["log_level"] == 1
    assert line["data"] == {}
    float(line["timestamp"])
    assert daemon.stop() == 0
    assert daemon.lines()[-1]["message"] in ("sshd.exited", "sshd.log")
    assert "sshd.exited" in [x["message"] for x in daemon.lines()]
    assert all(x["source"] == "sshd" for x in daemon.lines())


@pytest.mark.interop
def test_start_up_pages_are_released_and_logins_go_on(
    tmp_path: Path, started: list[Running]
) -> None:
    identity, authorized = userIdentity(tmp_path)
    port = freePort()
    arguments = ccArguments(port, ccHostKey(), authorized, "debug")
    daemon = serve(tmp_path, started, arguments, environment(tmp_path), port)
    line = daemon.line("sshd.pages-released")
    # the interpreter's, cryptography's and libc's code at least
    assert line["data"]["bytes"] > 4 << 20
    messages = [x["message"] for x in daemon.lines()]
    assert messages.index("sshd.started") < messages.index("sshd.pages-released")
    for _ in range(2):
        result = login(daemon, identity, "echo $USER")
        assert (result.returncode, result.stdout) == (0, b"vcap\n"), result.stderr
    assert daemon.stop() == 0


@pytest.mark.interop
def test_rfc3339_time_format(tmp_path: Path, started: list[Running]) -> None:
    port = freePort()
    daemon = serve(
        tmp_path, started,
        [f"-address=127.0.0.1:{port}", "-allowUnauthenticatedClients", "-timeFormat=rfc3339"],
        environment(tmp_path), port,
    )  # fmt: skip
    line = daemon.line("sshd.started")
    assert line["level"] == "info"
    assert line["timestamp"].endswith("Z") and "T" in line["timestamp"]


@pytest.mark.interop
def test_environment_keys_win_over_flags(tmp_path: Path, started: list[Running]) -> None:
    identity, authorized = userIdentity(tmp_path)
    other = authorizedKeyLine(key("ed25519"))
    hostKey = key("p256").toString("openssh").decode()
    port = freePort()
    env = environment(tmp_path, SSHD_HOSTKEY=hostKey, SSHD_AUTHKEY=authorized)
    daemon = serve(tmp_path, started, ccArguments(port, ccHostKey(), other), env, port)
    assert offeredHostKey(port, "ecdsa") == key("p256").public()
    result = login(daemon, identity, "exit 0")
    assert result.returncode == 0, result.stderr
    sessionEnv = login(daemon, identity, "env").stdout.decode()
    assert "SSHD_" not in sessionEnv and secretargs.REEXEC_MARK not in sessionEnv


def daemonEnvironment(pid: int) -> dict[str, str]:
    entries = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(e.decode().split("=", 1) for e in entries if e)


@pytest.mark.interop
@pytest.mark.parametrize("keysAsFlags", [True, False])
def test_malloc_settings_reach_the_daemon_and_no_session(
    tmp_path: Path, started: list[Running], keysAsFlags: bool
) -> None:
    """
    The re-exec gives the daemon glibc's malloc settings
    (L{diegossh.sshd.heap}), also when no key was on the command line; its
    sessions, which inherit its environment, do not get them.
    """
    identity, authorized = userIdentity(tmp_path)
    port = freePort()
    if keysAsFlags:
        env, arguments = environment(tmp_path), ccArguments(port, ccHostKey(), authorized)
    else:
        env = environment(tmp_path, SSHD_HOSTKEY=ccHostKey(), SSHD_AUTHKEY=authorized)
        arguments = [f"-address=127.0.0.1:{port}", "-inheritDaemonEnv", "-logLevel=fatal"]
    daemon = serve(tmp_path, started, arguments, env, port)
    # what glibc read when the daemon's process started (the exec's environment)
    startedWith = daemonEnvironment(daemon.proc.pid)
    assert {k: startedWith.get(k) for k in heap.SETTINGS} == heap.SETTINGS
    result = login(daemon, identity, "env")
    assert result.returncode == 0, result.stderr
    sessionEnv = result.stdout.decode()
    assert "MALLOC_" not in sessionEnv and heap.ADDED not in sessionEnv
    assert "USER=vcap" in sessionEnv.splitlines()


@pytest.mark.interop
def test_a_callers_malloc_setting_reaches_sessions(tmp_path: Path, started: list[Running]) -> None:
    identity, authorized = userIdentity(tmp_path)
    port = freePort()
    env = environment(tmp_path, MALLOC_TOP_PAD_="65536")
    daemon = serve(tmp_path, started, ccArguments(port, ccHostKey(), authorized), env, port)
    startedWith = daemonEnvironment(daemon.proc.pid)
    assert startedWith["MALLOC_TOP_PAD_"] == "65536"
    assert startedWith["MALLOC_TRIM_THRESHOLD_"] == heap.SETTINGS["MALLOC_TRIM_THRESHOLD_"]
    lines = login(daemon, identity, "env").stdout.decode().splitlines()
    assert "MALLOC_TOP_PAD_=65536" in lines
    assert [line for line in lines if line.startswith(("MALLOC_TRIM", heap.ADDED))] == []


@pytest.mark.interop
def test_empty_host_key_generates_one(tmp_path: Path, started: list[Running]) -> None:
    identity, authorized = userIdentity(tmp_path)
    port = freePort()
    daemon = serve(
        tmp_path, started, ccArguments(port, "", authorized), environment(tmp_path), port
    )
    assert offeredHostKey(port, "ed25519").type() == "Ed25519"
    assert login(daemon, identity, "exit 0").returncode == 0


@pytest.mark.interop
@pytest.mark.parametrize(
    ("level", "expected"),
    [("fatal", []), ("error", ["sshd.authorized-key-required", "sshd.configure-failed"])],
)
def test_missing_authorized_key_exits_1(
    tmp_path: Path, started: list[Running], level: str, expected: list[str]
) -> None:
    arguments = [
        a for a in ccArguments(freePort(), ccHostKey(), "x", level) if "authorized" not in a
    ]
    daemon = launch(tmp_path, arguments, environment(tmp_path))
    started.append(daemon)
    assert daemon.proc.wait(30) == 1
    assert [line["message"] for line in daemon.lines()] == expected
    assert all(line["log_level"] == 2 for line in daemon.lines())


@pytest.mark.interop
def test_unparseable_host_key_exits_1(tmp_path: Path, started: list[Running]) -> None:
    _, authorized = userIdentity(tmp_path)
    arguments = ccArguments(freePort(), "-----BEGIN RSA PRIVATE KEY-----\nnope", authorized, "info")
    daemon = launch(tmp_path, arguments, environment(tmp_path))
    started.append(daemon)
    assert daemon.proc.wait(30) == 1
    messages = [line["message"] for line in daemon.lines()]
    assert messages == ["sshd.failed-to-parse-host-key", "sshd.configure-failed"]


@pytest.mark.interop
def test_go_flag_error_exits_2(tmp_path: Path, started: list[Running]) -> None:
    daemon = launch(tmp_path, ["-address=127.0.0.1:0", "-x"], environment(tmp_path))
    started.append(daemon)
    assert daemon.proc.wait(30) == 2
    lines = daemon.err.read_text().splitlines()
    assert lines[0] == "flag provided but not defined: -x"
    assert lines[1] == f"Usage of {DIEGO_SSHD}:"
    assert daemon.out.read_text() == ""


@pytest.mark.interop
def test_debug_server_changes_the_level(tmp_path: Path, started: list[Running]) -> None:
    identity, authorized = userIdentity(tmp_path)
    port, debugPort = freePort(), freePort()
    arguments = [*ccArguments(port, ccHostKey(), authorized), f"-debugAddr=127.0.0.1:{debugPort}"]
    daemon = serve(tmp_path, started, arguments, environment(tmp_path), port)
    assert login(daemon, identity, "exit 0").returncode == 0
    assert daemon.out.read_text() == ""  # fatal
    request = urllib.request.Request(
        f"http://127.0.0.1:{debugPort}/log-level", data=b"info", method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
    assert daemon.stop() == 0
    assert "sshd.exited" in [line["message"] for line in daemon.lines()]


def test_int_flags_take_gos_base_prefixes() -> None:
    command = script.parseCommand(["-maxSessions=0x10", "-maxChannels", "0o20"])
    assert "--maxSessions=16" in script.optionsArguments(command)
    assert "--maxChannels=16" in script.optionsArguments(command)
