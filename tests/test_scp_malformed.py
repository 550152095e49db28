"""
scp invoked with paths no file can have: a clean scp error line and status 1,
never "internal error" with a traceback in the log.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scp_support import FakeSession, ManualCooperator
from twisted.logger import LogEvent, LogLevel, globalLogPublisher

from diegossh.sshd.scp import buildSCP
from diegossh.sshd.scp._program import SCPProgram
from tests.support import hypothesis_home  # noqa: F401 - before any example runs


def run(home: Path, *args: str) -> tuple[int | None, bytes, list[LogEvent]]:
    errors: list[LogEvent] = []

    def observe(event: LogEvent) -> None:
        level = event.get("log_level")
        if "log_failure" in event or (level is not None and level >= LogLevel.error):
            errors.append(event)

    globalLogPublisher.addObserver(observe)
    try:
        cooperator = ManualCooperator()
        program = buildSCP(["scp", *args], {"HOME": str(home)}, cooperator.cooperate)
        assert isinstance(program, SCPProgram)
        session = FakeSession()
        program.makeConnection(session)
        program.dataReceived(b"\0")
        cooperator.pump()
        program.readConnectionLost()
        cooperator.pump()
    finally:
        globalLogPublisher.removeObserver(observe)
    return session.status, session.value(), errors


@pytest.mark.parametrize(
    "args",
    [("-f", "a\0b"), ("-r", "-f", "\0"), ("-p", "-f", "--", "dir/\0x")],
    ids=["file", "recursive", "preserve"],
)
def test_source_path_with_nul(tmp_path: Path, args: tuple[str, ...]) -> None:
    status, output, errors = run(tmp_path, *args)
    assert status == 1
    assert output.startswith(b"\x01scp: ") and b"No such file or directory" in output
    assert b"internal error" not in output
    assert not errors


@pytest.mark.parametrize("args", [("-t", "a\0b"), ("-r", "-t", "--", "x\0"), ("-t", "-d", "a\0/b")])
def test_sink_target_with_nul(tmp_path: Path, args: tuple[str, ...]) -> None:
    status, output, errors = run(tmp_path, *args)
    assert status == 1
    assert b"internal error" not in output
    assert not errors


@pytest.mark.slow  # over half a second of wall-clock time: not in make unit
@settings(max_examples=200, deadline=None, database=None)
@given(
    st.lists(st.sampled_from(["-r", "-p", "-d"]), max_size=2, unique=True),
    st.lists(st.text(alphabet="ab.*?[]\0\n -", max_size=6), min_size=1, max_size=3),
    st.lists(st.sampled_from([b"\0", b"\x01warn\n", b"\x02fatal\n", b"x"]), max_size=6),
)
def test_source_ends_cleanly_whatever_it_is_asked(
    flags: list[str], paths: list[str], answers: list[bytes]
) -> None:
    """
    Any paths (NUL, newline, glob characters, dots) under a home with a file,
    a directory and a link, any answers from the client: the source ends
    with a status and logs no error.
    """
    with tempfile.TemporaryDirectory() as top:
        home = Path(top)
        (home / "a").write_bytes(b"hello")
        (home / "b").mkdir()
        (home / "b" / "a").write_bytes(b"")
        (home / "ab").symlink_to("b")
        cooperator = ManualCooperator()
        program = buildSCP(["scp", *flags, "-f", "--", *paths], {"HOME": top},
                           cooperator.cooperate)  # fmt: skip
        assert isinstance(program, SCPProgram)
        session = FakeSession()
        errors = _Observer()
        try:
            program.makeConnection(session)
            for answer in [b"\0", *answers]:
                if session.status is not None:
                    break
                program.dataReceived(answer)
                cooperator.pump()
            if session.status is None:
                program.readConnectionLost()
                cooperator.pump()
        finally:
            globalLogPublisher.removeObserver(errors)
        assert session.status in (0, 1)
        assert not errors.events


class _Observer:
    def __init__(self) -> None:
        self.events: list[LogEvent] = []
        globalLogPublisher.addObserver(self)

    def __call__(self, event: LogEvent) -> None:
        level = event.get("log_level")
        if "log_failure" in event or (level is not None and level >= LogLevel.error):
            self.events.append(event)
