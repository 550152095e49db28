"""
C{scp -t}: the sink, driven record by record through a fake session.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from scp_support import FakeSession
from twisted.internet.error import ConnectionLost
from twisted.python.failure import Failure

from diegossh.sshd.scp import buildSCP
from diegossh.sshd.scp._program import SCPProgram


class Sink:
    """A sink program on a fake session, with HOME at C{home}."""

    def __init__(self, home: Path, *args: str) -> None:
        program = buildSCP(["scp", *args], {"HOME": str(home)})
        assert isinstance(program, SCPProgram)
        self.program = program
        self.session = FakeSession()
        program.makeConnection(self.session)

    def take(self) -> bytes:
        """What the sink wrote since the last call."""
        value = self.session.value()
        self.session.clear()
        return value

    def send(self, data: bytes) -> bytes:
        self.program.dataReceived(data)
        return self.take()

    def eof(self) -> int | None:
        self.program.readConnectionLost()
        return self.session.status


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    return home


def test_file_into_directory(home: Path) -> None:
    sink = Sink(home, "-t", "--", ".")
    assert sink.take() == b"\0"
    assert sink.send(b"C0644 5 a.txt\n") == b"\0"
    assert sink.send(b"hel") == b""
    assert sink.send(b"lo\0") == b"\0"
    assert sink.eof() == 0
    assert (home / "a.txt").read_bytes() == b"hello"


def test_target_names_the_file(home: Path) -> None:
    sink = Sink(home, "-t", "new-name")
    sink.take()
    assert sink.send(b"C0600 3 original\nabc\0") == b"\0\0"
    assert sink.eof() == 0
    assert (home / "new-name").read_bytes() == b"abc"
    assert not (home / "original").exists()


def test_tilde_target(home: Path) -> None:
    (home / "sub").mkdir()
    sink = Sink(home, "-t", "~/sub")
    sink.take()
    sink.send(b"C0644 1 f\nx\0")
    assert sink.eof() == 0
    assert (home / "sub/f").read_bytes() == b"x"


def test_existing_file_truncated_to_received_size(home: Path) -> None:
    (home / "f").write_bytes(b"a much longer old content")
    sink = Sink(home, "-t", ".")
    sink.take()
    sink.send(b"C0644 3 f\nnew\0")
    assert sink.eof() == 0
    assert (home / "f").read_bytes() == b"new"


def test_preserve_sets_times_and_exact_mode(home: Path) -> None:
    sink = Sink(home, "-p", "-t", ".")
    sink.take()
    assert sink.send(b"T1500000000 0 1400000000 0\n") == b"\0"
    assert sink.send(b"C0751 2 f\nhi\0") == b"\0\0"
    assert sink.eof() == 0
    status = os.stat(home / "f")
    assert (status.st_mtime, status.st_atime) == (1500000000, 1400000000)
    assert stat.S_IMODE(status.st_mode) == 0o751


def test_without_preserve_umask_and_setid_are_stripped(home: Path) -> None:
    before = os.umask(0o027)
    try:
        sink = Sink(home, "-t", ".")
    finally:
        os.umask(before)
    sink.take()
    sink.send(b"C4777 0 f\n\0")
    assert sink.eof() == 0
    assert stat.S_IMODE(os.stat(home / "f").st_mode) == 0o750


def test_read_only_file_is_still_written(home: Path) -> None:
    sink = Sink(home, "-t", ".")
    sink.take()
    sink.send(b"C0444 2 ro\nok\0")
    assert sink.eof() == 0
    assert (home / "ro").read_bytes() == b"ok"
    assert stat.S_IMODE(os.stat(home / "ro").st_mode) & 0o200 == 0


def test_recursive_tree_with_empty_dirs_and_dir_times(home: Path) -> None:
    sink = Sink(home, "-r", "-p", "-t", ".")
    sink.take()
    records = [
        b"T1000000000 0 1000000000 0\n",
        b"D0750 0 top\n",
        b"D0700 0 empty\n",
        b"E\n",
        b"D0755 0 sub\n",
        b"C0640 3 f\n",
    ]
    for record in records:
        assert sink.send(record) == b"\0"
    assert sink.send(b"abc\0") == b"\0"
    assert sink.send(b"E\n") == b"\0"
    assert sink.send(b"E\n") == b"\0"
    assert sink.eof() == 0
    assert (home / "top/sub/f").read_bytes() == b"abc"
    assert (home / "top/empty").is_dir()
    assert stat.S_IMODE(os.stat(home / "top").st_mode) == 0o750
    assert stat.S_IMODE(os.stat(home / "top/empty").st_mode) == 0o700
    assert os.stat(home / "top").st_mtime == 1000000000


def test_recursive_into_missing_target_creates_it(home: Path) -> None:
    sink = Sink(home, "-r", "-t", "fresh")
    sink.take()
    assert sink.send(b"D0755 0 whatever\nC0644 1 f\nz\0E\n") == b"\0\0\0\0"
    assert sink.eof() == 0
    assert (home / "fresh/f").read_bytes() == b"z"
    assert not (home / "fresh/whatever").exists()


def test_records_pipelined_in_one_chunk(home: Path) -> None:
    sink = Sink(home, "-t", ".")
    sink.take()
    assert sink.send(b"C0644 1 a\nA\0C0644 0 b\n\0C0644 2 c\nCC\0") == b"\0" * 6
    assert sink.eof() == 0
    assert [(home / n).read_bytes() for n in "abc"] == [b"A", b"", b"CC"]


def test_directory_without_r_is_fatal(home: Path) -> None:
    sink = Sink(home, "-t", ".")
    sink.take()
    assert sink.send(b"D0755 0 d\n") == b"\x02scp: protocol error: received directory without -r\n"
    assert sink.session.status == 1
    assert not (home / "d").exists()


@pytest.mark.parametrize("name", [b"../evil", b"..", b".", b"a/b", b"/tmp/evil", b""])
def test_hostile_names_are_refused(home: Path, name: bytes) -> None:
    sink = Sink(home, "-r", "-t", ".")
    sink.take()
    reply = sink.send(b"C0644 4 " + name + b"\nevil\0")
    assert reply == b"\x02scp: error: unexpected filename: " + name + b"\n"
    assert sink.session.status == 1
    assert os.listdir(home) == []
    assert not (home.parent / "evil").exists()


@pytest.mark.parametrize(
    ("record", "why"),
    [
        (b"C0644 999999999999999999999 big\n", b"size out of range"),
        (b"Cxxxx 1 a\n", b"bad mode"),
        (b"T1 2\n", b"bad time record"),
        (b"\n", b"unexpected <newline>"),
        (b"hello world\n", b"expected control record"),
        (b"C0644 1 " + b"n" * 5000, b"record too long"),
    ],
)
def test_bad_records_are_fatal(home: Path, record: bytes, why: bytes) -> None:
    sink = Sink(home, "-t", ".")
    sink.take()
    assert sink.send(record) == b"\x02scp: protocol error: " + why + b"\n"
    assert sink.session.status == 1
    assert sink.send(b"C0644 1 late\nx\0") == b""


def test_absurd_size_then_eof_is_clean(home: Path) -> None:
    sink = Sink(home, "-t", ".")
    sink.take()
    assert sink.send(b"C0644 9223372036854775807 huge\n") == b"\0"
    sink.send(b"only this")
    assert sink.eof() == 1
    assert sink.take() == b"\x02scp: dropped connection\n"
    assert (home / "huge").read_bytes() == b"only this"


def test_eof_mid_record_and_mid_directory(home: Path) -> None:
    sink = Sink(home, "-t", ".")
    sink.take()
    sink.send(b"C0644 1")
    assert sink.eof() == 1
    assert sink.take() == b"\x02scp: protocol error: lost connection\n"

    sink = Sink(home, "-r", "-t", ".")
    sink.take()
    sink.send(b"D0500 0 d\n")
    assert sink.eof() == 1
    assert stat.S_IMODE(os.stat(home / "d").st_mode) == 0o500 & ~readUmaskNow()


def readUmaskNow() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def test_client_vanishes_mid_file(home: Path) -> None:
    sink = Sink(home, "-t", ".")
    sink.take()
    sink.send(b"C0644 100 f\n0123456789")
    sink.program.connectionLost(Failure(ConnectionLost()))
    assert sink.session.status == 1
    assert (home / "f").read_bytes() == b"0123456789"


def test_client_warnings_count_and_fatal_ends(home: Path) -> None:
    sink = Sink(home, "-t", ".")
    sink.take()
    assert sink.send(b"\x01scp: local: No such file or directory\n") == b""
    assert sink.send(b"C0644 1 f\nx\0") == b"\0\0"
    assert sink.eof() == 1
    assert (home / "f").read_bytes() == b"x"

    sink = Sink(home, "-t", ".")
    sink.take()
    assert sink.send(b"\x02scp: giving up\n") == b""
    assert sink.session.status == 1


def test_client_read_error_after_data(home: Path) -> None:
    sink = Sink(home, "-t", ".")
    sink.take()
    sink.send(b"C0644 2 f\n\0\0")
    assert sink.send(b"\x01scp: f: Input/output error\n") == b"\0"
    assert sink.eof() == 1


def test_file_onto_directory_warns_and_goes_on(home: Path) -> None:
    (home / "a").mkdir()
    sink = Sink(home, "-t", ".")
    sink.take()
    assert sink.send(b"C0644 1 a\n") == b"\x01scp: ./a: Is a directory\n"
    assert sink.send(b"C0644 1 b\nb\0") == b"\0\0"
    assert sink.eof() == 1
    assert (home / "b").read_bytes() == b"b"


def test_directory_onto_file_warns(home: Path) -> None:
    (home / "a").write_text("file")
    sink = Sink(home, "-r", "-t", ".")
    sink.take()
    assert sink.send(b"D0755 0 a\n") == b"\x01scp: ./a: Not a directory\n"
    assert sink.eof() == 1


def test_write_error_keeps_protocol_in_sync(home: Path) -> None:
    if not os.path.exists("/dev/full"):
        pytest.fail("this test needs /dev/full")
    sink = Sink(home, "-t", "/dev/full")
    sink.take()
    assert sink.send(b"C0644 3 f\nabc\0") == b"\0\x01scp: /dev/full: No space left on device\n"
    assert sink.eof() == 1


def test_fifo_target_does_not_hang(home: Path) -> None:
    os.mkfifo(home / "pipe")
    sink = Sink(home, "-t", ".")
    sink.take()
    assert sink.send(b"C0644 1 pipe\n") == b"\x01scp: ./pipe: No such device or address\n"
    assert sink.eof() == 1


def test_target_must_be_directory_with_d(home: Path) -> None:
    sink = Sink(home, "-d", "-t", "nowhere")
    assert sink.take() == b"\x02scp: nowhere: No such file or directory\n"
    assert sink.session.status == 1
    (home / "file").write_text("")
    sink = Sink(home, "-d", "-t", "file")
    assert sink.take() == b"\x02scp: file: Not a directory\n"


def test_ambiguous_target(home: Path) -> None:
    sink = Sink(home, "-t", "a", "b")
    assert sink.take() == b"\x02scp: ambiguous target\n"
    assert sink.session.status == 1


def test_top_level_end_finishes(home: Path) -> None:
    sink = Sink(home, "-t", ".")
    sink.take()
    assert sink.send(b"E\n") == b"\0"
    assert sink.session.status == 0
