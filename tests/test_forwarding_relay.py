"""
The relay between a channel and a socket, on a fake connection and a fake TCP
transport: backpressure both ways, half-close both ways, and every way to end.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IPushProducer
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from zope.interface.verify import verifyObject

from diegossh.ssh.tcpip_relay import RelayChannel, SocketProtocol


class FakeTCP(StringTransport):
    """
    A StringTransport that half-closes like ITCPTransport and, like a real
    transport, tolerates unregistering twice.
    """

    writeClosed = False

    def loseWriteConnection(self) -> None:
        self.writeClosed = True

    def unregisterProducer(self) -> None:
        self.producer = None
        self.streaming = None


class FakeConn:
    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.eof = False
        self.closes = 0
        self.granted = 0
        self.opened: list[tuple[Any, bytes]] = []

    def sendData(self, channel: Any, data: bytes) -> None:
        assert not channel.localClosed
        self.data.append(data)

    def sendExtendedData(self, channel: Any, dataType: int, data: bytes) -> None:
        raise AssertionError("no extended data in a relay")

    def sendEOF(self, channel: Any) -> None:
        self.eof = True

    def sendClose(self, channel: Any) -> None:
        self.closes += 1
        channel.localClosed = True

    def adjustWindow(self, channel: Any, n: int) -> None:
        self.granted += n
        channel.localWindowLeft += n

    def received(self) -> bytes:
        return b"".join(self.data)


def relay(
    remoteWindow: int = 1 << 30, opened: bool = True
) -> tuple[RelayChannel, FakeConn, FakeTCP, SocketProtocol]:
    conn = FakeConn()
    channel = RelayChannel(remoteWindow=remoteWindow, remoteMaxPacket=32768, conn=conn)
    protocol = SocketProtocol(channel)
    tcp = FakeTCP()
    protocol.makeConnection(tcp)
    if opened:
        channel.channelOpen(b"")
    return channel, conn, tcp, protocol


def receive(channel: RelayChannel, data: bytes) -> None:
    """
    What the connection does with CHANNEL_DATA.
    """
    channel.localWindowLeft -= len(data)
    channel.dataReceived(data)


def test_is_a_push_producer() -> None:
    channel, _, tcp, _ = relay()
    assert verifyObject(IPushProducer, channel)
    assert tcp.producer is channel and tcp.streaming
    assert channel._producer is tcp
    assert tcp.producerState == "producing"


def test_relays_both_ways() -> None:
    channel, conn, tcp, protocol = relay()
    protocol.dataReceived(b"from the socket")
    assert conn.received() == b"from the socket"
    receive(channel, b"from the client")
    assert tcp.value() == b"from the client"


def test_window_refilled_as_the_socket_takes_data() -> None:
    channel, conn, _tcp, _ = relay()
    half = channel.localWindowSize // 2
    receive(channel, b"x" * (half - 1))
    assert conn.granted == 0
    receive(channel, b"x")
    assert conn.granted == half
    assert channel.localWindowLeft == channel.localWindowSize


def test_full_socket_buffer_withholds_window() -> None:
    """
    While the socket's transport says its buffer is full, what arrives is
    owed; the client's window closes; it reopens as the buffer drains.
    """
    channel, conn, tcp, _ = relay()
    channel.pauseProducing()  # what the transport does above its bufferSize
    window = channel.localWindowSize
    for _ in range(window // 32768):
        receive(channel, b"y" * 32768)
    assert conn.granted == 0
    assert channel.localWindowLeft == 0
    assert channel.owed == window
    channel.resumeProducing()  # the transport's buffer drained
    assert conn.granted == window
    assert channel.owed == 0
    assert len(tcp.value()) == window


def test_closed_client_window_pauses_socket_reading() -> None:
    """
    With the client's window shut, the channel stops reading the socket after
    the first read it cannot send; window from the client resumes it.
    """
    channel, conn, tcp, protocol = relay(remoteWindow=0)
    chunk = b"z" * 65536
    while tcp.producerState == "producing":
        protocol.dataReceived(chunk)
    assert channel.bufferedBytes == len(chunk)
    assert conn.data == []
    channel.addWindowBytes(channel.bufferedBytes)
    assert tcp.producerState == "paused"  # sent, but the window is used up again
    channel.addWindowBytes(1)
    assert tcp.producerState == "producing"
    assert channel.bufferedBytes == 0
    assert len(conn.received()) % len(chunk) == 0


def test_client_eof_shuts_down_socket_writes() -> None:
    """
    Client EOF: the socket's write side is shut down (after its buffer, which
    the transport handles), the channel producer unregistered so it cannot hold
    that up, and the other direction goes on.
    """
    channel, conn, tcp, protocol = relay()
    receive(channel, b"last words")
    channel.eofReceived()
    assert tcp.writeClosed
    assert tcp.producer is None
    assert not tcp.disconnecting
    protocol.dataReceived(b"the reply")
    assert conn.received() == b"the reply"
    assert conn.closes == 0


def test_socket_eof_after_queued_data() -> None:
    """
    Socket EOF becomes channel EOF only after the last queued byte.
    """
    channel, conn, _tcp, protocol = relay(remoteWindow=4)
    protocol.dataReceived(b"12345678")
    protocol.readConnectionLost()
    assert conn.received() == b"1234"
    assert not conn.eof
    assert channel._producer is None  # never resumes a socket at EOF
    channel.addWindowBytes(4)
    assert conn.received() == b"12345678"
    assert conn.eof
    assert conn.closes == 0  # the client may still send


def test_both_eofs_close_everything() -> None:
    channel, conn, tcp, protocol = relay()
    protocol.readConnectionLost()
    channel.eofReceived()
    assert conn.eof
    assert conn.closes == 1
    assert tcp.disconnecting


def test_both_eofs_other_order() -> None:
    channel, conn, tcp, protocol = relay()
    channel.eofReceived()
    protocol.readConnectionLost()
    assert conn.eof and conn.closes == 1
    assert tcp.disconnecting


def test_close_received_drops_queue() -> None:
    """
    The client closed: nothing more can reach it, so nothing waits for its
    window; the socket is closed once both closes are exchanged.
    """
    channel, conn, tcp, protocol = relay(remoteWindow=0)
    protocol.dataReceived(b"never sent")
    channel.closeReceived()
    assert conn.closes == 1
    assert channel.bufferedBytes == 0
    channel.closed()
    assert tcp.disconnecting
    assert conn.data == []


def test_socket_lost_closes_channel_after_queue() -> None:
    channel, conn, _tcp, protocol = relay(remoteWindow=3)
    protocol.dataReceived(b"abcdef")
    protocol.connectionLost(Failure(ConnectionResetError()))
    assert channel.socket is None
    assert conn.closes == 0
    channel.addWindowBytes(3)
    assert conn.received() == b"abcdef"
    assert conn.eof and conn.closes == 1


def test_data_after_socket_lost_is_dropped_and_not_granted() -> None:
    channel, conn, tcp, protocol = relay()
    protocol.connectionLost(Failure(ConnectionResetError()))
    before = tcp.value()
    receive(channel, b"x" * channel.localWindowSize)
    assert tcp.value() == before
    assert conn.granted == 0


def test_closed_closes_socket() -> None:
    """
    The SSH connection went away (or both closes were exchanged).
    """
    channel, _conn, tcp, _ = relay()
    channel.closed()
    assert tcp.disconnecting
    assert tcp.producer is None


def test_socket_waits_for_open() -> None:
    """
    A forwarded-tcpip socket is accepted before the client confirms the
    channel: it is not read until then, and anything read early is kept.
    """
    channel, conn, tcp, protocol = relay(opened=False)
    assert tcp.producerState == "paused"
    protocol.dataReceived(b"early")
    assert conn.data == []
    channel.channelOpen(b"")
    assert conn.received() == b"early"
    assert tcp.producerState == "producing"


def test_socket_lost_before_open() -> None:
    channel, conn, _tcp, protocol = relay(opened=False)
    protocol.connectionLost(Failure(ConnectionResetError()))
    assert conn.closes == 0
    channel.channelOpen(b"")
    assert conn.eof and conn.closes == 1


def test_open_failed_closes_socket() -> None:
    channel, _conn, tcp, _ = relay(opened=False)
    channel.openFailed(Exception("refused"))
    assert tcp.disconnecting
