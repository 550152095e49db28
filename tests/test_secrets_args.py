"""
L{diegossh.secretargs}: which arguments leave the command line, and what the
re-executed process gets back. No process is re-executed here (C{execve} is
a recorder); C{tests/test_secrets.py} runs the real thing.
"""

from __future__ import annotations

import os
import sys

import pytest

from diegossh import secretargs
from diegossh.proxy import tap as proxyTap
from diegossh.sshd import tap as sshdTap

SECRETS = ["hostKey", "diegoCredentials"]
LONG = ["address=", "hostKey=", "hostKeyFile=", "diegoCredentials=", "diegoCredentialsFile=",
        "workers=", "enableDiegoAuth", "help"]  # fmt: skip
TWISTD = ["/venv/bin/python", "/venv/bin/twistd", "-n", "--logfile", "x.log", "diego-ssh-proxy"]


def split(*args: str) -> tuple[list[str], dict[str, str]]:
    return secretargs.splitSecrets([*TWISTD, *args], "diego-ssh-proxy", SECRETS, LONG)


def test_both_forms_leave() -> None:
    kept, moved = split("--address=:2222", "--diegoCredentials", "pw", "--hostKey=PEM", "-h")
    assert kept == [*TWISTD, "--address=:2222", "-h"]
    assert moved == {"diegoCredentials": "pw", "hostKey": "PEM"}


def test_a_value_that_looks_like_a_flag_is_still_the_value() -> None:
    kept, moved = split("--diegoCredentials", "--workers=2", "--workers=3")
    assert kept == [*TWISTD, "--workers=3"]
    assert moved == {"diegoCredentials": "--workers=2"}


def test_the_last_of_a_repeated_flag_wins_as_in_getopt() -> None:
    assert split("--diegoCredentials=a", "--diegoCredentials=b")[1] == {"diegoCredentials": "b"}


def test_an_unambiguous_prefix_is_the_flag_as_getopt_reads_it() -> None:
    # getopt takes --diegoCredentials=x for --diegoCredentials (exact beats
    # the longer --diegoCredentialsFile); --hostK is ambiguous, getopt refuses it
    long = ["address=", "authorizedKey=", "allowedCiphers="]
    kept, moved = secretargs.splitSecrets(
        ["twistd", "diego-sshd", "--auth=KEY", "--al=x"], "diego-sshd", ["authorizedKey"], long
    )
    assert moved == {"authorizedKey": "KEY"}
    assert kept == ["twistd", "diego-sshd", "--al=x"]
    kept, moved = split("--hostK=PEM")
    assert moved == {} and kept == [*TWISTD, "--hostK=PEM"]


def test_file_flags_and_other_flags_stay() -> None:
    kept, moved = split("--diegoCredentialsFile=/run/pw", "--hostKeyFile", "/run/key")
    assert moved == {}
    assert kept == [*TWISTD, "--diegoCredentialsFile=/run/pw", "--hostKeyFile", "/run/key"]


def test_only_what_follows_the_tap_name_is_looked_at() -> None:
    argv = ["twistd", "--diegoCredentials=twistds", "diego-ssh-proxy", "--", "--hostKey=x"]
    kept, moved = secretargs.splitSecrets(argv, "diego-ssh-proxy", SECRETS, LONG)
    assert (kept, moved) == (argv, {})
    # no tap name: options parsed from a list (tests, proxy workers)
    argv = ["python", "-c", "boot", "--diegoCredentials=x"]
    assert secretargs.splitSecrets(argv, "diego-ssh-proxy", SECRETS, LONG) == (argv, {})


def test_a_missing_value_is_left_for_getopt_to_refuse() -> None:
    assert split("--diegoCredentials") == ([*TWISTD, "--diegoCredentials"], {})


def test_move_reexecs_with_the_values_in_the_environment() -> None:
    calls: list[tuple[str, list[str], dict[str, str]]] = []
    environ = {"PATH": "/bin"}
    secretargs.moveOffCommandLine(
        "diego-ssh-proxy", SECRETS, LONG,
        argv=[*TWISTD, "--diegoCredentials=pw", "--workers=2"],
        environ=environ, execve=lambda *call: calls.append(call),
    )  # fmt: skip
    ((executable, argv, env),) = calls
    assert executable == sys.executable
    assert argv == [*TWISTD, "--workers=2"]
    assert env[secretargs.carrier("diegoCredentials")] == "pw"
    assert env[secretargs.REEXEC_MARK] == "1"
    assert environ == {"PATH": "/bin"}
    # the re-executed process takes them back and clears the variables
    assert secretargs.takeMoved(SECRETS, env) == {"diegoCredentials": "pw"}
    assert env == {"PATH": "/bin"}


def test_no_reexec_without_secrets_or_when_already_reexecuted() -> None:
    calls: list[object] = []
    for argv, environ in (
        ([*TWISTD, "--workers=2"], {}),
        ([*TWISTD, "--diegoCredentials=pw"], {secretargs.REEXEC_MARK: "1"}),
    ):
        secretargs.moveOffCommandLine(
            "diego-ssh-proxy", SECRETS, LONG, argv=argv, environ=environ,
            execve=lambda *call: calls.append(call),
        )  # fmt: skip
    assert calls == []


@pytest.mark.parametrize(
    ("module", "name", "secrets"),
    [
        (sshdTap, "diego-sshd", {"hostKey", "authorizedKey"}),
        (proxyTap, "diego-ssh-proxy", {"hostKey", "diegoCredentials", "uaaPassword"}),
    ],
)
def test_both_taps_use_the_shared_mover(
    module: object, name: str, secrets: set[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each tap's postOptions re-execs through secretargs for its secret flags."""
    calls: list[tuple[str, list[str], dict[str, str]]] = []

    def execve(path: str, argv: list[str], env: dict[str, str]) -> None:
        calls.append((path, argv, env))
        raise SystemExit(0)  # as an exec: nothing after it runs

    monkeypatch.setattr(os, "execve", execve)
    argv = ["python", "twistd", "-n", name, "--address=127.0.0.1:0"]
    argv += [f"--{flag}=SECRET-{flag}" for flag in sorted(secrets)]
    monkeypatch.setattr(sys, "orig_argv", argv)
    monkeypatch.delenv(secretargs.REEXEC_MARK, raising=False)
    options = module.Options()  # type: ignore[attr-defined]
    with pytest.raises(SystemExit):
        options.parseOptions(argv[4:])
    ((_, newArgv, env),) = calls
    assert newArgv == ["python", "twistd", "-n", name, "--address=127.0.0.1:0"]
    for flag in secrets:
        assert env[secretargs.carrier(flag)] == f"SECRET-{flag}"


def test_the_daemons_variables_win_over_its_moved_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    """As docs/sshd.md says: SSHD_HOSTKEY and SSHD_AUTHKEY win over the flags."""
    from tests.support.keys import authorizedKeyLine, key

    monkeypatch.setenv(secretargs.REEXEC_MARK, "1")
    monkeypatch.setenv(secretargs.carrier("hostKey"), key("p256").toString("openssh").decode())
    monkeypatch.setenv(secretargs.carrier("authorizedKey"), authorizedKeyLine(key("p384")))
    monkeypatch.setenv("SSHD_HOSTKEY", key("p521").toString("openssh").decode())
    monkeypatch.delenv("SSHD_AUTHKEY", raising=False)
    options = sshdTap.Options()
    options.parseOptions([])
    assert options["settings"].hostKey == key("p521")
    assert options["settings"].authorizedKey == key("p384").public()
    for name in ("hostKey", "authorizedKey"):
        assert secretargs.carrier(name) not in os.environ
    assert secretargs.REEXEC_MARK not in os.environ and "SSHD_HOSTKEY" not in os.environ
