"""
Go's flag syntax (L{diegossh.goflags}), with Cloud Controller's exact LRP
command line among the cases.
"""

from __future__ import annotations

import pytest

from diegossh.goflags import FlagError, ParsedFlags, parseGoFlags, twistedArguments

VALUES = ("address", "hostKey", "authorizedKey", "logLevel", "config")
BOOLEANS = ("inheritDaemonEnv", "allowUnauthenticatedClients")


def parse(*argv: str) -> ParsedFlags:
    return parseGoFlags(argv, VALUES, BOOLEANS)


def test_cloud_controllers_lrp_command_line() -> None:
    pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY-----\n"
    parsed = parse(
        "-address=0.0.0.0:2222",
        f"-hostKey={pem}",
        "-authorizedKey=ssh-rsa AAAAB3 user@host",
        "-inheritDaemonEnv",
        "-logLevel=fatal",
    )
    assert parsed.values == {
        "address": "0.0.0.0:2222",
        "hostKey": pem,
        "authorizedKey": "ssh-rsa AAAAB3 user@host",
        "inheritDaemonEnv": True,
        "logLevel": "fatal",
    }
    assert parsed.arguments == []


def test_every_spelling_of_a_value() -> None:
    assert parse("--address=:1").values == {"address": ":1"}
    assert parse("-address", ":2").values == {"address": ":2"}
    assert parse("--address", ":3").values == {"address": ":3"}
    assert parse("-address", "-x").values == {"address": "-x"}  # Go takes the next word
    assert parse("-hostKey=").values == {"hostKey": ""}  # empty: generate one
    assert parse("-address=a=b").values == {"address": "a=b"}


@pytest.mark.parametrize(
    ("word", "value"),
    [(w, True) for w in ("1", "t", "T", "true", "TRUE", "True")]
    + [(w, False) for w in ("0", "f", "F", "false", "FALSE", "False")],
)
def test_boolean_values(word: str, value: bool) -> None:
    assert parse(f"-inheritDaemonEnv={word}").values == {"inheritDaemonEnv": value}


def test_the_last_occurrence_wins_and_a_bare_boolean_takes_no_word() -> None:
    parsed = parse("-logLevel=info", "-inheritDaemonEnv", "false", "-logLevel=debug")
    assert parsed.values == {"logLevel": "info", "inheritDaemonEnv": True}
    assert parsed.arguments == ["false", "-logLevel=debug"]  # the first non-flag ends flags
    assert parse("-logLevel=info", "-logLevel=debug").values == {"logLevel": "debug"}


def test_double_dash_ends_the_flags() -> None:
    parsed = parse("-address=:1", "--", "-hostKey=x")
    assert parsed.values == {"address": ":1"} and parsed.arguments == ["-hostKey=x"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("-port=1",), "flag provided but not defined: -port"),
        (("-address",), "flag needs an argument: -address"),
        (("-inheritDaemonEnv=yes",), 'invalid boolean value "yes" for -inheritDaemonEnv'),
        (("---address=1",), "bad flag syntax: ---address=1"),
        (("-=1",), "bad flag syntax: -=1"),
    ],
)
def test_what_go_refuses(argv: tuple[str, ...], message: str) -> None:
    with pytest.raises(FlagError) as caught:
        parse(*argv)
    assert str(caught.value) == message


def test_twisted_arguments() -> None:
    parsed = parse("-address=:1", "-inheritDaemonEnv", "-allowUnauthenticatedClients=false")
    assert twistedArguments(parsed) == ["--address=:1", "--inheritDaemonEnv"]
