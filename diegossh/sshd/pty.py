# -*- test-case-name: tests.test_sshd_lifecycle,tests.test_fuzz_parsers -*-
"""
Terminal modes and window sizes from C{pty-req} and C{window-change}, applied
to the session's pty (RFC 4254 section 8).
"""

from __future__ import annotations

import fcntl
import struct
import termios
from dataclasses import dataclass
from typing import Any

from twisted.conch import ttymodes

_MAX_DIMENSION = 0xFFFF


@dataclass(frozen=True)
class WindowSize:
    rows: int
    cols: int
    xpixel: int = 0
    ypixel: int = 0

    @classmethod
    def fromWire(cls, cols: int, rows: int, xpixel: int, ypixel: int) -> WindowSize:
        """
        Clamp what a client sent into what the kernel's C{winsize} can hold; an
        absurd size must not crash the session.
        """

        def clamp(v: int) -> int:
            return max(0, min(v, _MAX_DIMENSION))

        return cls(clamp(rows), clamp(cols), clamp(xpixel), clamp(ypixel))

    def apply(self, fd: int) -> None:
        """
        Set the size; the kernel sends SIGWINCH to the pty's foreground group.
        """
        packed = struct.pack("4H", self.rows, self.cols, self.xpixel, self.ypixel)
        fcntl.ioctl(fd, termios.TIOCSWINSZ, packed)


def parseModes(encoded: bytes) -> list[tuple[int, int]]:
    """
    Decode RFC 4254 8's encoded terminal modes: opcode bytes, each with a uint32
    argument for 1-159, ending at 0 (TTY_OP_END) or at an opcode of 160+ whose
    argument format is unknown.
    """
    modes: list[tuple[int, int]] = []
    i = 0
    while i < len(encoded):
        opcode = encoded[i]
        if opcode == 0 or opcode >= 160 or i + 5 > len(encoded):
            break
        (value,) = struct.unpack(">L", encoded[i + 1 : i + 5])
        modes.append((opcode, value))
        i += 5
    return modes


def applyModes(fd: int, modes: list[tuple[int, int]]) -> None:
    """
    Apply the modes Linux knows; ignore the rest, as OpenSSH does.
    """
    attrs = termios.tcgetattr(fd)
    for opcode, value in modes:
        meaning: Any = ttymodes.TTYMODES.get(opcode)
        if meaning is None:
            continue
        if isinstance(meaning, str):
            if meaning in ("ISPEED", "OSPEED"):
                continue
            index = getattr(termios, meaning, None)
            if index is None:
                continue
            attrs[6][index] = bytes((value & 0xFF,))
            continue
        field, flagName = meaning
        flag = getattr(termios, flagName, None)
        if flag is None:
            continue
        if value:
            attrs[field] |= flag
        else:
            attrs[field] &= ~flag
    termios.tcsetattr(fd, termios.TCSANOW, attrs)
