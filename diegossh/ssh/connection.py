# -*- test-case-name: tests.test_channel,tests.test_transport_bounds,tests.test_hostile -*-
"""
Conch's connection service, hardened against hostile peers and taught real
flow control.

Conch trusts the peer's numbers: a maximum packet of 0 makes a channel's write
loop raise, a window adjust may push the window past 2**32-1, and data beyond
the window is silently cut. Here each of those ends with a clear refusal or a
protocol-error disconnect.

Conch also refills every channel's receive window as soon as half of it is used,
whether or not anything consumed the data. A channel that sets C{manualWindow}
refills its own window (see L{FlowControlledChannel}), which is what lets a
slow consumer slow down the peer instead of piling data up in memory.

A peer's maximum packet under L{MIN_PEER_MAX_PACKET} is refused: it would make
every byte sent on the channel a message of its own (a 1-byte maximum made
1 MiB cost a million messages and seconds of CPU). No client we know of asks
for less than 16 KiB (PuTTY, JSch); OpenSSH, Go and paramiko ask for 32 KiB.

Each connection holds at most C{maxChannels} channels, of which at most
C{maxSessions} are sessions (OpenSSH's C{MaxSessions}); the factory may set
both. Opens past them are refused with a reason. When the transport cannot
take more (its socket or its key exchange queue is over the bound), every
channel stops sending and pauses its producer (L{diegossh.ssh.channel}), so
a peer that does not read costs a bounded amount however large the window it
granted. User authentication messages after login are ignored (RFC 4252
section 5.1), and no message is ever logged with its payload.

A channel factory (the avatar's C{lookupChannel}) may return a L{Deferred}
firing with the channel: the open is confirmed only then, or refused with the
code and text of the L{ConchError} it fails with. That is how a forwarding
channel answers only once its socket is connected, as OpenSSH's sshd does.
"""

from __future__ import annotations

import struct
from typing import Any

from twisted.conch import error
from twisted.conch.ssh import channel as conchChannel
from twisted.conch.ssh import common
from twisted.conch.ssh import connection as conch
from twisted.conch.ssh import transport as conchTransport
from twisted.internet import defer
from twisted.python.failure import Failure

from diegossh.ssh import _conch
from diegossh.ssh.limits import MAX_CHANNELS, MAX_SESSIONS
from diegossh.ssh.logthrottle import ConnectionLogger
from diegossh.ssh.metrics import channelType, metricsOf

MAX_WINDOW = 0xFFFFFFFF
# The largest data packet we send, whatever the peer allows: far under the
# 256 KiB that OpenSSH and our own packet layer accept.
MAX_SEND_PACKET = 64 * 1024
# The smallest maximum packet we accept from a peer (see the module docstring).
MIN_PEER_MAX_PACKET = 8 * 1024
# Channels per connection, and sessions among them: L{diegossh.ssh.limits}.
# What the peer may send us ahead of our consuming it is bounded per
# connection, not only per channel: the windows of a connection's channels
# add up to at most WINDOW_POOL, except that a channel opened when the pool is
# used up still gets MIN_WINDOW (so at most WINDOW_POOL + MAX_CHANNELS *
# MIN_WINDOW in all: 8 MiB with the defaults).
WINDOW_POOL = 4 * 1024 * 1024
MIN_WINDOW = 64 * 1024


class QuietServiceMixin:
    """
    Conch's C{SSHService.packetReceived} logs a message it cannot handle with
    its payload (a password, for a user authentication request sent after
    login). Here user authentication messages are ignored and other unknown
    ones answered with UNIMPLEMENTED, with only their number logged.
    """

    transport: Any
    protocolMessages: Any
    _quietLog = ConnectionLogger()

    def packetReceived(self, messageNum: int, packet: bytes) -> Any:
        name = self.protocolMessages.get(messageNum)
        if name is not None:
            handler = getattr(self, "ssh_" + str(name)[4:], None)
            if handler is not None:
                return handler(packet)
        if 50 <= messageNum <= 79:
            return None
        self._quietLog.debug("unimplemented message {num}", num=messageNum)
        self.transport.sendUnimplemented()
        return None


@_conch.routeConchLog
class SSHConnection(QuietServiceMixin, conch.SSHConnection):
    """
    The C{ssh-connection} service with peer input validated.
    """

    log = ConnectionLogger()
    transport: Any
    maxChannels = MAX_CHANNELS
    maxSessions = MAX_SESSIONS
    noMoreSessions = False

    def __init__(self) -> None:
        super().__init__()
        self._pendingOpens: set[defer.Deferred[Any]] = set()
        self._pendingSessions = 0
        self.writeBlocked = False
        # the channel that goes first when sending resumes, rotating
        self._nextFirst = 0

    def serviceStarted(self) -> None:
        super().serviceStarted()
        factory = getattr(self.transport, "factory", None)
        self.maxChannels = getattr(factory, "maxChannels", self.maxChannels)
        self.maxSessions = getattr(factory, "maxSessions", self.maxSessions)
        pressure = getattr(self.transport, "writePressure", None)
        if pressure is not None:
            pressure.listen(self._writePressure)

    def _writePressure(self, reason: str, blocked: bool) -> None:
        """
        The transport can take more, or cannot: tell every channel.
        """
        pressure = self.transport.writePressure
        if pressure.blocked == self.writeBlocked:
            return
        blocked = self.writeBlocked = pressure.blocked
        channels = list(self.channels.values())
        if not blocked and channels:
            # Start with a different channel each time, so none is always last.
            self._nextFirst = (self._nextFirst + 1) % len(channels)
            channels = channels[self._nextFirst :] + channels[: self._nextFirst]
        for channel in channels:
            if self.writeBlocked != blocked:
                break  # a channel's sending filled the transport again
            hook = getattr(channel, "transportBlocked", None)
            if hook is not None:
                hook(blocked)

    def gotGlobalRequest(self, requestType: bytes, data: bytes) -> Any:
        """
        C{no-more-sessions@openssh.com} (OpenSSH's client sends it once its
        session is open, when it will open no other): further session opens
        are refused, so a connection taken over later cannot start programs.
        """
        if requestType == b"no-more-sessions@openssh.com":
            self.noMoreSessions = True
            return 1
        return super().gotGlobalRequest(requestType, data)

    def _limitReached(self, channelType: bytes) -> bytes | None:
        if len(self.channels) + len(self._pendingOpens) >= self.maxChannels:
            return b"too many channels (at most %d)" % self.maxChannels
        if channelType == b"session" and self.noMoreSessions:
            return b"no more sessions"
        if channelType == b"session":
            sessions = self._pendingSessions + sum(
                1 for c in self.channels.values() if getattr(c, "name", None) == b"session"
            )
            if sessions >= self.maxSessions:
                return b"too many sessions (at most %d)" % self.maxSessions
        return None

    def _protocolError(self, message: bytes) -> None:
        self.transport.sendDisconnect(conchTransport.DISCONNECT_PROTOCOL_ERROR, message)

    def ssh_CHANNEL_OPEN(self, packet: bytes) -> None:
        channelType, rest = common.getNS(packet)
        senderChannel, windowSize, maxPacket = struct.unpack(">3L", rest[:12])
        if maxPacket < MIN_PEER_MAX_PACKET:
            self._refuse(
                senderChannel,
                conch.OPEN_ADMINISTRATIVELY_PROHIBITED,
                b"maximum packet size under %d" % MIN_PEER_MAX_PACKET,
            )
            return
        refusal = self._limitReached(channelType)
        if refusal is not None:
            self._refuse(senderChannel, conch.OPEN_RESOURCE_SHORTAGE, refusal)
            return
        clamped = min(maxPacket, MAX_SEND_PACKET)
        extra = rest[12:]
        try:
            channel = self.getChannel(channelType, windowSize, clamped, extra)
        except Exception as e:
            self._refuseOpen(senderChannel, e)
            return
        if isinstance(channel, defer.Deferred):
            # The channel factory confirms later (a forwarding channel once its
            # socket is connected) or refuses with a ConchError(text, code).
            self._pendingOpens.add(channel)
            session = channelType == b"session"
            self._pendingSessions += session

            def settled(result: Any) -> None:
                self._pendingOpens.discard(channel)
                self._pendingSessions -= session
                if isinstance(result, Failure):
                    self._refuseOpen(senderChannel, result.value or Exception())
                else:
                    result.conn = self
                    self._confirmOpen(senderChannel, result, extra)

            channel.addBoth(settled)
            return
        self._confirmOpen(senderChannel, channel, extra)

    def _fitWindow(self, channel: Any) -> None:
        """
        Give a new channel what is left of the connection's window pool (at
        least L{MIN_WINDOW}), if that is less than it asked for.
        """
        granted = sum(c.localWindowSize for c in self.channels.values())
        room = max(MIN_WINDOW, WINDOW_POOL - granted)
        if channel.localWindowSize > room:
            channel.localWindowSize = channel.localWindowLeft = room

    def openChannel(self, channel: Any, extra: bytes = b"") -> None:
        """
        Open a channel of ours (a remote forward's connection): within the
        channel limit and the window pool too, or refused at once.
        """
        if len(self.channels) + len(self._pendingOpens) >= self.maxChannels:
            channel.conn = self
            channel.openFailed(
                error.ConchError(
                    f"too many channels (at most {self.maxChannels})",
                    conch.OPEN_RESOURCE_SHORTAGE,
                )
            )
            return
        self._fitWindow(channel)
        super().openChannel(channel, extra)

    def _confirmOpen(self, senderChannel: int, channel: Any, extra: bytes) -> None:
        self._fitWindow(channel)
        localChannel = self.localChannelID
        self.localChannelID += 1
        channel.id = localChannel
        self.channels[localChannel] = channel
        self.channelsToRemoteChannel[channel] = senderChannel
        self.localToRemoteChannel[localChannel] = senderChannel
        self._counted(channel)
        self.transport.sendPacket(
            conch.MSG_CHANNEL_OPEN_CONFIRMATION,
            struct.pack(
                ">4L", senderChannel, localChannel, channel.localWindowSize, channel.localMaxPacket
            )
            + channel.specificData,
        )
        channel.channelOpen(extra)

    def _refuse(self, senderChannel: int, code: int, text: bytes) -> None:
        self.transport.sendPacket(
            conch.MSG_CHANNEL_OPEN_FAILURE,
            struct.pack(">2L", senderChannel, code) + common.NS(text) + common.NS(b""),
        )

    def _refuseOpen(self, senderChannel: int, reason: BaseException) -> None:
        if isinstance(reason, defer.CancelledError):
            return
        if isinstance(reason, error.ConchError):
            text, code = reason.args
            if isinstance(text, int):
                text, code = code, text
        else:
            self.log.failure("channel open failed", Failure(reason))
            code, text = conch.OPEN_CONNECT_FAILED, "unknown failure"
        if isinstance(text, str):
            text = text.encode("utf-8")
        self.transport.sendPacket(
            conch.MSG_CHANNEL_OPEN_FAILURE,
            struct.pack(">2L", senderChannel, code) + common.NS(text) + common.NS(b""),
        )

    def _counted(self, channel: Any) -> None:
        """
        Count C{channel} as open in the transport's metrics, by its type.
        """
        kind = channelType(getattr(channel, "name", b"") or b"")
        channel.metricsType = kind
        metricsOf(self.transport).channelOpened(kind)

    def channelClosed(self, channel: Any) -> None:
        kind = getattr(channel, "metricsType", None)
        if kind is not None:
            channel.metricsType = None
            metricsOf(self.transport).channelClosed(kind)
        super().channelClosed(channel)

    def serviceStopped(self) -> None:
        pressure = getattr(self.transport, "writePressure", None)
        if pressure is not None:
            pressure.unlisten(self._writePressure)
        pending, self._pendingOpens = self._pendingOpens, set()
        for d in pending:
            d.cancel()
        super().serviceStopped()

    def ssh_CHANNEL_OPEN_CONFIRMATION(self, packet: bytes) -> None:
        localChannel, remoteChannel, windowSize, maxPacket = struct.unpack(">4L", packet[:16])
        if maxPacket < MIN_PEER_MAX_PACKET:
            self._protocolError(
                b"channel open confirmation with maximum packet size under %d" % MIN_PEER_MAX_PACKET
            )
            return
        if localChannel not in self.channels:
            self._protocolError(b"open confirmation for unknown channel")
            return
        if localChannel in self.localToRemoteChannel:
            self._protocolError(b"open confirmation for a channel already open")
            return
        clamped = min(maxPacket, MAX_SEND_PACKET)
        super().ssh_CHANNEL_OPEN_CONFIRMATION(
            struct.pack(">4L", localChannel, remoteChannel, windowSize, clamped) + packet[16:]
        )
        channel = self.channels.get(localChannel)
        if channel is not None and localChannel in self.localToRemoteChannel:
            self._counted(channel)

    def ssh_CHANNEL_OPEN_FAILURE(self, packet: bytes) -> None:
        (localChannel,) = struct.unpack(">L", packet[:4])
        if localChannel not in self.channels or localChannel in self.localToRemoteChannel:
            self._protocolError(b"open failure for a channel not being opened")
            return
        super().ssh_CHANNEL_OPEN_FAILURE(packet)

    def sendData(self, channel: Any, data: bytes | memoryview) -> None:
        """
        As Conch's, but C{data} (which may be a memoryview of a larger
        buffer) is copied once, into the packet.
        """
        if channel.localClosed:
            return
        head = struct.pack(">2L", self.channelsToRemoteChannel[channel], len(data))
        self._sendMessage(conch.MSG_CHANNEL_DATA, head, data)

    def sendExtendedData(self, channel: Any, dataType: int, data: bytes | memoryview) -> None:
        if channel.localClosed:
            return
        head = struct.pack(">3L", self.channelsToRemoteChannel[channel], dataType, len(data))
        self._sendMessage(conch.MSG_CHANNEL_EXTENDED_DATA, head, data)

    def _sendMessage(self, messageType: int, head: bytes, data: bytes | memoryview) -> None:
        send = getattr(self.transport, "sendMessage", None)
        if send is None:
            self.transport.sendPacket(messageType, head + bytes(data))
        else:
            send(messageType, head, data)

    def ssh_CHANNEL_WINDOW_ADJUST(self, packet: bytes) -> None:
        localChannel, bytesToAdd = struct.unpack(">2L", packet[:8])
        channel = self.channels.get(localChannel)
        if channel is None:
            self._protocolError(b"window adjust for unknown channel")
            return
        if channel.remoteWindowLeft + bytesToAdd > MAX_WINDOW:
            self._protocolError(b"window adjust beyond 2**32-1")
            return
        channel.addWindowBytes(bytesToAdd)

    def _checkIncoming(self, channel: Any, dataLength: int) -> bool:
        if dataLength > channel.localWindowLeft:
            self._protocolError(b"channel data beyond the window")
            return False
        if dataLength > channel.localMaxPacket:
            self._protocolError(b"channel data beyond the maximum packet size")
            return False
        return True

    def ssh_CHANNEL_DATA(self, packet: bytes) -> None:
        localChannel, dataLength = struct.unpack(">2L", packet[:8])
        channel = self.channels.get(localChannel)
        if channel is None:
            self._protocolError(b"data for unknown channel")
            return
        if len(packet) != 8 + dataLength:
            self._protocolError(b"malformed channel data")
            return
        if not self._checkIncoming(channel, dataLength):
            return
        channel.localWindowLeft -= dataLength
        self._refill(channel)
        channel.dataReceived(packet[8:])

    def ssh_CHANNEL_EXTENDED_DATA(self, packet: bytes) -> None:
        localChannel, typeCode, dataLength = struct.unpack(">3L", packet[:12])
        channel = self.channels.get(localChannel)
        if channel is None:
            self._protocolError(b"extended data for unknown channel")
            return
        if len(packet) != 12 + dataLength:
            self._protocolError(b"malformed extended data")
            return
        if not self._checkIncoming(channel, dataLength):
            return
        channel.localWindowLeft -= dataLength
        self._refill(channel)
        channel.extReceived(typeCode, packet[12:])

    def _refill(self, channel: Any) -> None:
        if getattr(channel, "manualWindow", False):
            return
        if channel.localWindowLeft < channel.localWindowSize // 2:
            self.adjustWindow(channel, channel.localWindowSize - channel.localWindowLeft)

    def ssh_CHANNEL_EOF(self, packet: bytes) -> None:
        if struct.unpack(">L", packet[:4])[0] not in self.channels:
            self._protocolError(b"EOF for unknown channel")
            return
        super().ssh_CHANNEL_EOF(packet)

    def ssh_CHANNEL_CLOSE(self, packet: bytes) -> None:
        if struct.unpack(">L", packet[:4])[0] not in self.channels:
            self._protocolError(b"close for unknown channel")
            return
        super().ssh_CHANNEL_CLOSE(packet)

    def ssh_CHANNEL_REQUEST(self, packet: bytes) -> None:
        if struct.unpack(">L", packet[:4])[0] not in self.channels:
            self._protocolError(b"request for unknown channel")
            return
        super().ssh_CHANNEL_REQUEST(packet)


class FlowControlledChannel(conchChannel.SSHChannel):
    """
    A channel whose receive window is refilled only as its consumer takes data.

    Subclasses call L{consumed} with the number of bytes handed on (written to a
    process, a socket, a file); the peer may send no more than the window allows
    beyond that, so memory stays bounded however slow the consumer is.
    """

    manualWindow = True
    conn: Any
    _consumedUnacked = 0

    def consumed(self, nbytes: int) -> None:
        """
        C{nbytes} left our hands: let the peer send that much more, in window
        adjustments of at least half the window so they stay few.
        """
        if self.localClosed or self.remoteClosed:
            return
        self._consumedUnacked += nbytes
        if self._consumedUnacked >= self.localWindowSize // 2:
            grant, self._consumedUnacked = self._consumedUnacked, 0
            self.conn.adjustWindow(self, grant)
