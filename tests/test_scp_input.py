"""
The input buffer: reads awaited before or after the bytes arrive, EOF, limits
and flow control.
"""

from __future__ import annotations

import pytest

from diegossh.sshd.scp._input import EndOfInput, InputBuffer
from diegossh.sshd.scp._records import ProtocolError


class Flow:
    def __init__(self) -> None:
        self.events: list[str] = []

    def buffer(self, highWater: int = 10) -> InputBuffer:
        return InputBuffer(
            lambda: self.events.append("pause"),
            lambda: self.events.append("resume"),
            highWater=highWater,
        )


def test_reads_before_and_after_data() -> None:
    buffer = Flow().buffer(100)
    line = buffer.readLine(50)
    buffer.feed(b"ab")
    assert not line.called
    buffer.feed(b"c\nd")
    assert line.result == b"abc"
    byte = buffer.readByte()
    assert byte.result == ord("d")
    some = buffer.readSome(3)
    buffer.feed(b"12345")
    assert some.result == b"12345"[:3]
    assert buffer.readSome(10).result == b"45"


def test_eof_is_clean_or_partial() -> None:
    buffer = Flow().buffer()
    waiting = buffer.readLine(50)
    buffer.feed(b"half")
    buffer.close()
    failure = waiting.result
    assert failure.check(EndOfInput) and failure.value.partial
    waiting.addErrback(lambda _: None)
    assert buffer.readByte().result == ord("h")

    buffer = Flow().buffer()
    buffer.close()
    clean = buffer.readByte()
    clean.addErrback(lambda f: f.value)
    assert isinstance(clean.result, EndOfInput) and not clean.result.partial


def test_line_limit() -> None:
    buffer = Flow().buffer(1000)
    waiting = buffer.readLine(8)
    buffer.feed(b"123456789")
    with pytest.raises(ProtocolError, match="record too long"):
        waiting.result.raiseException()
    waiting.addErrback(lambda _: None)


def test_pauses_at_high_water_and_resumes_when_drained() -> None:
    flow = Flow()
    buffer = flow.buffer(highWater=10)
    buffer.feed(b"x" * 11)
    assert flow.events == ["pause"]
    buffer.feed(b"x" * 100)
    assert flow.events == ["pause"]
    assert len(buffer.readSome(100).result) == 100
    assert flow.events == ["pause"]
    assert len(buffer.readSome(100).result) == 11
    assert flow.events == ["pause", "resume"]
