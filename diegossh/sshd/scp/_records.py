# -*- test-case-name: tests.test_scp_records -*-
"""
The records of the SCP/RCP protocol, as OpenSSH's C{scp} writes and reads them.

Every record is one line. The sender announces C{T} (times, with C{-p}), C{C}
(a file, followed by its bytes and a status byte), C{D} (enter a directory) and
C{E} (leave it). The receiver answers each with a status: a NUL byte for "go
on", or C{\\x01} (warning, skip this one) / C{\\x02} (fatal) and a message line.
Parsing is strict because the bytes come from a client we do not trust.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

OK = b"\0"
WARNING = b"\x01"
FATAL = b"\x02"

#: Longest record line accepted; OpenSSH's own limit is 2048 bytes.
MAX_RECORD = 4096

#: Largest size a C record may announce: OpenSSH's off_t limit.
MAX_SIZE = 2**63 - 1

#: The mode bits a C or D record carries (OpenSSH's FILEMODEMASK: no sticky bit).
MODE_MASK = 0o6777


class ProtocolError(Exception):
    """
    The peer sent something that is not the protocol; the transfer cannot go on.

    The argument is the whole message shown to the user after C{scp: }.
    """


@dataclass(frozen=True)
class Times:
    """A C{T} record: the times to give the next file or directory."""

    mtime: int
    mtimeUsec: int
    atime: int
    atimeUsec: int

    def asNanoseconds(self) -> tuple[int, int]:
        """Return C{(atime, mtime)} in nanoseconds, as L{os.utime} wants them."""
        return (
            self.atime * 1_000_000_000 + self.atimeUsec * 1000,
            self.mtime * 1_000_000_000 + self.mtimeUsec * 1000,
        )


@dataclass(frozen=True)
class Entry:
    """A C{C} (file) or C{D} (directory) record."""

    isDirectory: bool
    mode: int
    size: int
    name: bytes


@dataclass(frozen=True)
class EndDirectory:
    """An C{E} record: the directory entered last is complete."""


@dataclass(frozen=True)
class PeerMessage:
    """A C{\\x01} or C{\\x02} line: the peer reports an error of its own."""

    fatal: bool
    text: bytes


Record = Times | Entry | EndDirectory | PeerMessage


def parseRecord(line: bytes) -> Record:
    """
    Parse one record line (without its newline).

    @raise ProtocolError: for anything OpenSSH's sink would refuse, including a
        name that is not a single path component.
    """
    if not line:
        raise ProtocolError("protocol error: unexpected <newline>")
    kind = line[:1]
    if kind in (WARNING, FATAL):
        return PeerMessage(fatal=kind == FATAL, text=line[1:])
    if line == b"E":
        return EndDirectory()
    if kind == b"T":
        return _parseTimes(line[1:])
    if kind in (b"C", b"D"):
        return _parseEntry(kind == b"D", line[1:])
    raise ProtocolError("protocol error: expected control record")


def _parseTimes(body: bytes) -> Times:
    fields = body.split(b" ")
    if len(fields) != 4 or not all(f.isdigit() and len(f) <= 20 for f in fields):
        raise ProtocolError("protocol error: bad time record")
    mtime, mtimeUsec, atime, atimeUsec = (int(f) for f in fields)
    if mtimeUsec > 999_999 or atimeUsec > 999_999:
        raise ProtocolError("protocol error: bad time record")
    return Times(mtime, mtimeUsec, atime, atimeUsec)


def _parseEntry(isDirectory: bool, body: bytes) -> Entry:
    mode = body[:4]
    if len(mode) != 4 or any(c not in b"01234567" for c in mode):
        raise ProtocolError("protocol error: bad mode")
    if body[4:5] != b" ":
        raise ProtocolError("protocol error: mode not delimited")
    size, space, name = body[5:].partition(b" ")
    if not size.isdigit():
        raise ProtocolError("protocol error: size not present")
    if not space:
        raise ProtocolError("protocol error: size not delimited")
    if len(size) > 20 or int(size) > MAX_SIZE:
        raise ProtocolError("protocol error: size out of range")
    if name in (b"", b".", b"..") or b"/" in name or b"\0" in name:
        raise ProtocolError("error: unexpected filename: " + printable(name))
    return Entry(isDirectory, int(mode, 8), int(size), name)


def formatTimes(mtime: float, atime: float) -> bytes:
    """A C{T} record for a file's times, whole seconds as OpenSSH sends them."""
    return b"T%d 0 %d 0\n" % (max(int(mtime), 0), max(int(atime), 0))


def formatEntry(isDirectory: bool, mode: int, size: int, name: str) -> bytes:
    """A C{C} or C{D} record; C{name} must be a single component without newline."""
    kind = b"D" if isDirectory else b"C"
    return b"%s%04o %d %s\n" % (kind, mode & MODE_MASK, size, os.fsencode(name))


END_DIRECTORY = b"E\n"


def formatMessage(text: str, fatal: bool = False) -> bytes:
    """An error line as OpenSSH's C{run_err} writes it: C{\\x01scp: text}."""
    body = os.fsencode(text).replace(b"\n", b" ")
    return (FATAL if fatal else WARNING) + b"scp: " + body + b"\n"


def printable(raw: bytes) -> str:
    """Decode bytes from the peer for a message, keeping undecodable bytes."""
    return os.fsdecode(raw).replace("\n", " ")
