"""
C{scp -f}: the source, answering as a client would, through a fake session.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from scp_support import FakeSession, ManualCooperator
from twisted.internet.error import ConnectionLost
from twisted.python.failure import Failure

from diegossh.sshd.scp import buildSCP
from diegossh.sshd.scp._program import SCPProgram
from diegossh.sshd.scp._sender import CHUNK_SIZE


class Source:
    """A source program on a fake session, with HOME at C{home}."""

    def __init__(self, home: Path, *args: str) -> None:
        self.cooperator = ManualCooperator()
        program = buildSCP(["scp", *args], {"HOME": str(home)}, self.cooperator.cooperate)
        assert isinstance(program, SCPProgram)
        self.program = program
        self.session = FakeSession()
        program.makeConnection(self.session)

    def reply(self, data: bytes = b"\0") -> bytes:
        """Answer as the client and return what the source wrote in response."""
        self.program.dataReceived(data)
        self.cooperator.pump()
        value = self.session.value()
        self.session.clear()
        return value


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    (home / "a.txt").write_bytes(b"hello")
    os.chmod(home / "a.txt", 0o640)
    return home


def test_one_file(home: Path) -> None:
    source = Source(home, "-f", "a.txt")
    assert source.session.value() == b""
    assert source.reply() == b"C0640 5 a.txt\n"
    assert source.reply() == b"hello\0"
    assert source.session.status is None
    assert source.reply() == b""
    assert source.session.status == 0


def test_preserve_sends_times_first(home: Path) -> None:
    os.utime(home / "a.txt", (1400000000, 1500000000))
    source = Source(home, "-p", "-f", "~/a.txt")
    assert source.reply() == b"T1500000000 0 1400000000 0\n"
    assert source.reply() == b"C0640 5 a.txt\n"
    assert source.reply() == b"hello\0"
    source.reply()
    assert source.session.status == 0


def test_missing_source_among_others(home: Path) -> None:
    (home / "b.txt").write_bytes(b"b")
    source = Source(home, "-f", "a.txt", "missing", "b.txt")
    assert source.reply() == b"C0640 5 a.txt\n"
    assert source.reply() == b"hello\0"
    assert source.reply() == (b"\x01scp: missing: No such file or directory\n" + b"C0644 1 b.txt\n")
    assert source.reply() == b"b\0"
    source.reply()
    assert source.session.status == 1


def test_directory_without_r(home: Path) -> None:
    (home / "d").mkdir()
    source = Source(home, "-f", "d", "a.txt")
    assert source.reply() == b"\x01scp: d: not a regular file\nC0640 5 a.txt\n"


def test_fifo_is_not_a_regular_file(home: Path) -> None:
    os.mkfifo(home / "pipe")
    source = Source(home, "-f", "pipe")
    assert source.reply() == b"\x01scp: pipe: not a regular file\n"
    assert source.session.status == 1


def test_recursive_tree(home: Path) -> None:
    (home / "d/sub/empty").mkdir(parents=True)
    (home / "d/sub/f").write_bytes(b"ff")
    os.chmod(home / "d", 0o750)
    os.chmod(home / "d/sub/f", 0o600)
    source = Source(home, "-r", "-f", "d/")
    assert source.reply() == b"D0750 0 d\n"
    assert source.reply() == b"D0755 0 sub\n"
    sent: list[bytes] = []
    depth = 2
    while depth > 1:
        reply = source.reply()
        sent.append(reply)
        depth += reply.startswith(b"D") - (reply == b"E\n")
    assert sorted(sent) == sorted([b"D0755 0 empty\n", b"E\n", b"C0600 2 f\n", b"ff\0", b"E\n"])
    assert source.reply() == b"E\n"
    assert source.reply() == b""
    assert source.session.status == 0


def test_refused_directory_is_skipped(home: Path) -> None:
    (home / "d").mkdir()
    (home / "d/inside").write_text("x")
    source = Source(home, "-r", "-f", "d", "a.txt")
    assert source.reply() == b"D0755 0 d\n"
    assert source.reply(b"\x01scp: d: Not a directory\n") == b"C0640 5 a.txt\n"


def test_glob_relative_to_home(home: Path) -> None:
    (home / "b.txt").write_bytes(b"bb")
    (home / "c.log").write_bytes(b"")
    source = Source(home, "-f", "*.txt")
    assert source.reply() == b"C0640 5 a.txt\n"
    source.reply()
    assert source.reply() == b"C0644 2 b.txt\n"
    source.reply()
    source.reply()
    assert source.session.status == 0


def test_client_refuses_file(home: Path) -> None:
    source = Source(home, "-f", "a.txt", "a.txt")
    source.reply()
    assert source.reply(b"\x01scp: a.txt: Permission denied\n") == b"C0640 5 a.txt\n"
    assert source.reply() == b"hello\0"
    source.reply()
    assert source.session.status == 1


def test_client_fatal_ends(home: Path) -> None:
    source = Source(home, "-f", "a.txt")
    source.reply()
    assert source.reply(b"\x02scp: protocol error: nope\n") == b""
    assert source.session.status == 1


def test_client_eof_before_answer(home: Path) -> None:
    source = Source(home, "-f", "a.txt")
    source.reply()
    source.program.readConnectionLost()
    assert source.session.status == 1


def test_flow_control_and_vanishing_client(home: Path) -> None:
    (home / "big").write_bytes(os.urandom(5 * CHUNK_SIZE))
    source = Source(home, "-f", "big")
    source.reply()
    source.program.dataReceived(b"\0")
    producer = source.session.producer
    assert producer is not None and source.session.streaming
    source.cooperator.step()
    assert len(source.session.value()) == CHUNK_SIZE
    producer.pauseProducing()
    source.cooperator.pump()
    assert len(source.session.value()) == CHUNK_SIZE
    producer.resumeProducing()
    source.cooperator.step()
    assert len(source.session.value()) == 2 * CHUNK_SIZE
    source.program.connectionLost(Failure(ConnectionLost()))
    source.cooperator.pump()
    assert source.session.status == 1
    assert b"internal error" not in source.session.value()


def test_whole_file_streams_in_chunks(home: Path) -> None:
    data = os.urandom(3 * CHUNK_SIZE + 7)
    (home / "big").write_bytes(data)
    source = Source(home, "-f", "big")
    source.reply()
    assert source.reply() == data + b"\0"
    assert source.session.producer is None


def test_file_shrinking_while_sent(home: Path) -> None:
    source = Source(home, "-f", "a.txt")
    assert source.reply() == b"C0640 5 a.txt\n"
    (home / "a.txt").write_bytes(b"he")
    assert source.reply() == b"he\0\0\0\x01scp: a.txt: file shrank while being sent\n"
    source.reply()
    assert source.session.status == 1


def test_symlink_loop_is_not_followed_forever(home: Path) -> None:
    (home / "d").mkdir()
    (home / "d/loop").symlink_to(home / "d")
    source = Source(home, "-r", "-f", "d")
    assert source.reply() == b"D0755 0 d\n"
    assert source.reply() == b"\x01scp: d/loop: directory loop, skipped\nE\n"
    source.reply()
    assert source.session.status == 1
