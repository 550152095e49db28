"""
L{BufferedChannel}: chunks cut to the peer's window and maximum packet, in
order and complete, producer paused and resumed, EOF after the last byte.
"""

from __future__ import annotations

import os
from typing import Any

from diegossh.ssh.channel import BufferedChannel


class FakeConn:
    def __init__(self) -> None:
        self.sent: list[tuple[int | None, bytes]] = []
        self.eof = False

    def sendData(self, channel: Any, data: bytes | memoryview) -> None:
        self.sent.append((None, bytes(data)))

    def sendExtendedData(self, channel: Any, dataType: int, data: bytes | memoryview) -> None:
        self.sent.append((dataType, bytes(data)))

    def sendEOF(self, channel: Any) -> None:
        self.eof = True

    def sendClose(self, channel: Any) -> None:
        channel.localClosed = True


class Producer:
    def __init__(self) -> None:
        self.paused = 0
        self.resumed = 0

    def pauseProducing(self) -> None:
        self.paused += 1

    def resumeProducing(self) -> None:
        self.resumed += 1

    def stopProducing(self) -> None:
        pass


def channel(window: int, maxPacket: int) -> tuple[BufferedChannel, FakeConn]:
    conn = FakeConn()
    chan = BufferedChannel(conn=conn)
    chan.remoteWindowLeft = window
    chan.remoteMaxPacket = maxPacket
    return chan, conn


def test_large_chunk_goes_out_in_packets_as_the_window_opens() -> None:
    chan, conn = channel(window=100_000, maxPacket=32768)
    data = os.urandom(250_000)
    chan.write(data)
    assert [len(d) for _, d in conn.sent] == [32768, 32768, 32768, 100_000 - 3 * 32768]
    assert chan.bufferedBytes == 150_000
    chan.addWindowBytes(1_000_000)
    assert all(len(d) <= 32768 for _, d in conn.sent)
    assert b"".join(d for _, d in conn.sent) == data
    assert chan.bufferedBytes == 0


def test_order_kept_across_kinds_and_partial_heads() -> None:
    chan, conn = channel(window=10, maxPacket=4)
    chan.write(b"abcdefg")
    chan.writeExtended(1, b"ERR")
    chan.write(b"hij")
    assert conn.sent == [(None, b"abcd"), (None, b"efg"), (1, b"ERR")]
    chan.addWindowBytes(2)
    assert conn.sent[-1] == (None, b"hi")
    chan.addWindowBytes(100)
    assert conn.sent[-1] == (None, b"j")


def test_producer_paused_above_high_water_resumed_below_low_water() -> None:
    chan, _conn = channel(window=10**9, maxPacket=32768)
    chan.remoteWindowLeft = 0
    producer = Producer()
    chan.registerProducer(producer, True)
    chan.write(b"x" * (chan.highWater + 1))
    assert producer.paused == 1
    chan.addWindowBytes(chan.highWater + 1 - chan.lowWater - 1)
    assert producer.resumed == 0
    chan.addWindowBytes(chan.lowWater + 10)
    assert chan.bufferedBytes == 0
    assert producer.resumed == 1


def test_producer_paused_while_the_window_is_used_up_whatever_the_queue() -> None:
    """
    A peer that grants a window and stops adjusting it holds about one read
    of the producer here, not a high-water mark's worth per channel.
    """
    chan, conn = channel(window=1000, maxPacket=32768)
    producer = Producer()
    chan.registerProducer(producer, True)
    chan.write(b"x" * 1500)
    assert producer.paused == 1
    assert chan.bufferedBytes == 500
    chan.addWindowBytes(500)
    assert chan.bufferedBytes == 0
    # the queue is empty but the window is used up: still paused
    assert producer.resumed == 0
    chan.addWindowBytes(1)
    assert producer.resumed == 1
    assert b"".join(d for _, d in conn.sent) == b"x" * 1500


class BlockingConn(FakeConn):
    writeBlocked = False


def test_transport_blocked_stops_sending_and_pauses_the_producer_at_once() -> None:
    conn = BlockingConn()
    chan = BufferedChannel(conn=conn)
    chan.remoteWindowLeft = 2**32 - 1
    chan.remoteMaxPacket = 32768
    producer = Producer()
    chan.registerProducer(producer, True)
    conn.writeBlocked = True
    chan.transportBlocked(True)
    assert producer.paused == 1
    chan.write(b"y" * 100_000)
    assert conn.sent == []
    assert chan.bufferedBytes == 100_000
    conn.writeBlocked = False
    chan.transportBlocked(False)
    assert b"".join(d for _, d in conn.sent) == b"y" * 100_000
    assert producer.resumed == 1


def test_eof_follows_the_last_byte() -> None:
    chan, conn = channel(window=5, maxPacket=32768)
    chan.write(b"0123456789")
    chan.sendEOFWhenDrained()
    assert not conn.eof
    chan.addWindowBytes(5)
    assert conn.eof
    assert b"".join(d for _, d in conn.sent) == b"0123456789"


def test_abort_drops_a_partly_sent_head() -> None:
    chan, conn = channel(window=3, maxPacket=32768)
    chan.write(b"abcdef")
    chan.abortConnection()
    assert chan.bufferedBytes == 0
    chan.localClosed = False
    chan.closing = 0
    chan.write(b"xyz")
    chan.addWindowBytes(10)
    assert conn.sent == [(None, b"abc"), (None, b"xyz")]
