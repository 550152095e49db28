"""
The SCP record codec: what it accepts, and the messages for what it refuses.
"""

from __future__ import annotations

import pytest

from diegossh.sshd.scp._records import (
    EndDirectory,
    Entry,
    PeerMessage,
    ProtocolError,
    Times,
    formatEntry,
    formatMessage,
    formatTimes,
    parseRecord,
)


def test_file_and_directory_records() -> None:
    assert parseRecord(b"C0644 12 a file") == Entry(False, 0o644, 12, b"a file")
    assert parseRecord(b"D0755 0 dir") == Entry(True, 0o755, 0, b"dir")
    assert parseRecord(b"C4755 0 x").mode == 0o4755


def test_times_end_and_messages() -> None:
    assert parseRecord(b"T1700000000 0 1600000000 5") == Times(1700000000, 0, 1600000000, 5)
    assert Times(2, 3, 1, 0).asNanoseconds() == (1_000_000_000, 2_000_003_000)
    assert parseRecord(b"E") == EndDirectory()
    assert parseRecord(b"\x01scp: x: gone") == PeerMessage(False, b"scp: x: gone")
    assert parseRecord(b"\x02scp: bye") == PeerMessage(True, b"scp: bye")


def test_formatting_matches_openssh() -> None:
    assert formatEntry(False, 0o100644, 5, "a.txt") == b"C0644 5 a.txt\n"
    assert formatEntry(True, 0o41777, 0, "tmp") == b"D0777 0 tmp\n"
    assert formatEntry(False, 0o104755, 1, "s") == b"C4755 1 s\n"
    assert formatTimes(1700000000.7, -5) == b"T1700000000 0 0 0\n"
    assert formatMessage("a: b") == b"\x01scp: a: b\n"
    assert formatMessage("two\nlines", fatal=True) == b"\x02scp: two lines\n"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"", "protocol error: unexpected <newline>"),
        (b"X junk", "protocol error: expected control record"),
        (b"C064 1 a", "protocol error: bad mode"),
        (b"C0648 1 a", "protocol error: bad mode"),
        (b"C06441 1 a", "protocol error: mode not delimited"),
        (b"C0644 -1 a", "protocol error: size not present"),
        (b"C0644 12", "protocol error: size not delimited"),
        (b"C0644 9223372036854775808 a", "protocol error: size out of range"),
        (b"C0644 " + b"9" * 400 + b" a", "protocol error: size out of range"),
        (b"T1 0 2", "protocol error: bad time record"),
        (b"T1 0 2 1000000", "protocol error: bad time record"),
        (b"T1 -0 2 0", "protocol error: bad time record"),
        (b"Tx 0 2 0", "protocol error: bad time record"),
        (b"C0644 1 ../evil", "error: unexpected filename: ../evil"),
        (b"C0644 1 a/b", "error: unexpected filename: a/b"),
        (b"C0644 1 /etc/passwd", "error: unexpected filename: /etc/passwd"),
        (b"D0755 0 ..", "error: unexpected filename: .."),
        (b"D0755 0 .", "error: unexpected filename: ."),
        (b"C0644 1 ", "error: unexpected filename: "),
        (b"C0644 1 nul\0byte", "error: unexpected filename: nul\0byte"),
    ],
)
def test_refused_records(line: bytes, message: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        parseRecord(line)
    assert str(caught.value) == message
