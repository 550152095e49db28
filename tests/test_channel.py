"""
L{BufferedChannel}: chunks cut to the peer's window and maximum packet, in
order and complete, producer paused and resumed, EOF after the last byte; and
the peer's window granted back only for what the sink has taken, on a real
connection service.
"""

from __future__ import annotations

import os
import struct
from typing import Any

from twisted.conch.avatar import ConchUser
from twisted.conch.ssh import common
from twisted.conch.ssh import connection as conch

from diegossh.ssh.channel import BufferedChannel
from diegossh.ssh.connection import SSHConnection


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


# -- the peer's data: window granted back only once the sink has taken it

WINDOW = 64 * 1024
PACKET = 16 * 1024


class Sink:
    """
    A consumer like a Twisted transport: it takes every write into its buffer,
    pauses its producer above C{bufferSize}, and resumes it once it has
    written the whole buffer out (L{drain}).
    """

    def __init__(self, bufferSize: int) -> None:
        self.bufferSize = bufferSize
        self.buffer = bytearray()
        self.written = bytearray()
        self.producer: Any = None
        self.paused = False

    def write(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > self.bufferSize and not self.paused:
            self.paused = True
            self.producer.pauseProducing()

    def drain(self, nbytes: int | None = None) -> None:
        nbytes = len(self.buffer) if nbytes is None else nbytes
        self.written += self.buffer[:nbytes]
        del self.buffer[:nbytes]
        if not self.buffer and self.paused:
            self.paused = False
            self.producer.resumeProducing()


class SinkChannel(BufferedChannel):
    name = b"session"
    sink: Sink

    def dataReceived(self, data: bytes) -> None:
        self.sink.write(data)
        self.delivered(len(data))


class SSHTransport:
    def __init__(self, avatar: Any) -> None:
        self.avatar = avatar
        self.packets: list[tuple[int, bytes]] = []
        self.disconnected: list[bytes] = []

    def sendPacket(self, messageType: int, payload: bytes) -> None:
        self.packets.append((messageType, payload))

    def sendDisconnect(self, reason: int, description: bytes) -> None:
        self.disconnected.append(description)

    def logPrefix(self) -> str:
        return "memory"


class Peer:
    """
    The other end of one channel on a real L{SSHConnection}: opens it, sends
    data, and reads the window adjustments we send back.
    """

    def __init__(self, bufferSize: int) -> None:
        self.sink = Sink(bufferSize)
        avatar = ConchUser()
        avatar.channelLookup[b"session"] = self._channel
        self.conn = SSHConnection()
        self.transport = SSHTransport(avatar)
        self.conn.transport = self.transport
        self.conn.serviceStarted()
        self.conn.ssh_CHANNEL_OPEN(common.NS(b"session") + struct.pack(">3L", 5, 1 << 20, 32768))
        ((kind, payload),) = self.transport.packets
        assert kind == conch.MSG_CHANNEL_OPEN_CONFIRMATION
        _, self.local, window, maxPacket = struct.unpack(">4L", payload[:16])
        assert (window, maxPacket) == (WINDOW, PACKET)
        self.window = window
        self.granted: list[int] = []
        self.transport.packets.clear()

    def _channel(self, **kwargs: Any) -> SinkChannel:
        self.channel = SinkChannel(localWindow=WINDOW, localMaxPacket=PACKET, **kwargs)
        self.channel.sink = self.sink
        self.sink.producer = self.channel
        return self.channel

    def send(self, nbytes: int) -> None:
        """
        Send C{nbytes} in packets of at most the maximum, as far as the window
        goes (a peer that keeps to it).
        """
        while nbytes:
            size = min(nbytes, PACKET, self.window)
            assert size, "the peer's window is shut"
            self.conn.ssh_CHANNEL_DATA(struct.pack(">2L", self.local, size) + b"d" * size)
            self.window -= size
            nbytes -= size
            self.read()

    def read(self) -> list[int]:
        """
        The window adjustments sent since the last read, added to the window.
        """
        grants = [
            struct.unpack(">2L", payload[:8])[1]
            for kind, payload in self.transport.packets
            if kind == conch.MSG_CHANNEL_WINDOW_ADJUST
        ]
        self.transport.packets.clear()
        self.window += sum(grants)
        self.granted += grants
        return grants


def test_a_sink_that_never_drains_gets_no_window_beyond_the_first() -> None:
    peer = Peer(bufferSize=0)
    peer.send(WINDOW)
    assert peer.granted == []
    assert peer.window == 0
    assert peer.channel.owed == WINDOW
    assert len(peer.sink.buffer) == WINDOW  # at most one window held for the sink


def test_what_the_sink_takes_at_once_is_granted_in_batches_of_half_a_window() -> None:
    peer = Peer(bufferSize=1 << 30)
    peer.send(WINDOW // 2 - 1)
    assert peer.granted == []  # under the batching threshold: no adjustment yet
    peer.send(1)
    assert peer.granted == [WINDOW // 2]
    peer.send(3 * WINDOW)
    assert all(grant >= WINDOW // 2 for grant in peer.granted)
    assert sum(peer.granted) == len(peer.sink.buffer) == WINDOW // 2 + 3 * WINDOW
    assert peer.channel.owed == 0


def test_consuming_n_bytes_grants_exactly_n() -> None:
    peer = Peer(bufferSize=PACKET)
    peer.send(WINDOW)
    # The sink paused the channel after its second packet: those and the
    # rest are owed, the first was granted (under the threshold: not yet sent).
    assert peer.granted == []
    assert peer.channel.owed == WINDOW - PACKET
    peer.sink.drain(WINDOW - 1)
    assert peer.read() == []  # not all written out yet: still paused
    peer.sink.drain(1)
    assert peer.read() == [WINDOW]
    assert peer.window == WINDOW
    assert bytes(peer.sink.written) == b"d" * WINDOW
    peer.send(WINDOW)
    peer.sink.drain()
    peer.read()
    assert sum(peer.granted) == 2 * WINDOW == len(peer.sink.written)


def test_nothing_is_granted_after_close() -> None:
    peer = Peer(bufferSize=0)
    peer.send(WINDOW)
    peer.conn.ssh_CHANNEL_CLOSE(struct.pack(">L", peer.local))
    peer.sink.drain()
    assert peer.read() == []


def test_eof_keeps_what_is_owed_until_the_sink_drains() -> None:
    peer = Peer(bufferSize=0)
    peer.send(WINDOW)
    peer.conn.ssh_CHANNEL_EOF(struct.pack(">L", peer.local))
    assert peer.read() == []
    peer.sink.drain()
    assert peer.read() == [WINDOW]


def test_a_sink_gone_grants_nothing_more() -> None:
    peer = Peer(bufferSize=1 << 30)
    peer.channel.stopProducing()  # the sink's transport lost its connection
    peer.send(WINDOW)
    assert peer.granted == []
    assert peer.channel.owed == WINDOW


def test_a_peer_beyond_the_window_is_disconnected() -> None:
    peer = Peer(bufferSize=0)
    peer.send(WINDOW)
    peer.conn.ssh_CHANNEL_DATA(struct.pack(">2L", peer.local, 1) + b"x")
    assert peer.transport.disconnected == [b"channel data beyond the window"]
    assert len(peer.sink.buffer) == WINDOW
