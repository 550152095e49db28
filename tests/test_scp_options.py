"""
Parsing a remote scp command line, and which command lines buildSCP serves.
"""

from __future__ import annotations

import pytest
from scp_support import FakeSession

from diegossh.sshd.scp import SinkProtocol, SourceProtocol, buildSCP
from diegossh.sshd.scp._options import SCPOptions, UsageError, parseArguments


def test_sink_with_flags() -> None:
    assert parseArguments(["scp", "-r", "-p", "-d", "-t", "--", "dir"]) == SCPOptions(
        sending=False, recursive=True, preserve=True, targetIsDirectory=True, paths=("dir",)
    )


def test_source_with_clustered_flags_and_several_paths() -> None:
    options = parseArguments(["scp", "-vrpf", "a", "b c", "-x"])
    assert options == SCPOptions(
        sending=True, recursive=True, preserve=True, verbose=True, paths=("a", "b c", "-x")
    )


def test_double_dash_protects_dash_names() -> None:
    options = parseArguments(["scp", "-f", "--", "-r"])
    assert options is not None
    assert options.paths == ("-r",) and not options.recursive


def test_client_options_are_skipped() -> None:
    options = parseArguments(["scp", "-o", "Foo=bar", "-P22", "-T", "-t", "."])
    assert options is not None and options.paths == (".",)


@pytest.mark.parametrize(
    "argv", [["scp"], ["scp", "a", "host:b"], ["scp", "-r", "x", "y"], ["scp", "--", "-t"]]
)
def test_client_invocations_are_not_served(argv: list[str]) -> None:
    assert parseArguments(argv) is None
    assert buildSCP(argv, {}) is None


def test_unknown_option_in_server_invocation() -> None:
    with pytest.raises(UsageError, match="unknown option -- Z"):
        parseArguments(["scp", "-tZ", "x"])
    with pytest.raises(UsageError, match="requires an argument -- o"):
        parseArguments(["scp", "-t", "-o"])


def test_refused_command_line_exits_1_with_message() -> None:
    program = buildSCP(["scp", "-t", "-Z", "x"], {"HOME": "/"})
    assert program is not None
    session = FakeSession()
    program.makeConnection(session)
    assert session.value() == b"\x02scp: unknown option -- Z\n"
    assert session.status == 1


def test_build_picks_direction() -> None:
    assert isinstance(buildSCP(["scp", "-t", "x"], {"HOME": "/"}), SinkProtocol)
    assert isinstance(buildSCP(["scp", "-f", "x"], {"HOME": "/"}), SourceProtocol)
