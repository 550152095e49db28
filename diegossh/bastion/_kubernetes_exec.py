# -*- test-case-name: tests.test_bastion_kubernetes -*-
"""
One Kubernetes C{exec} over WebSocket, with the C{v4.channel.k8s.io}
subprotocol, spoken with wsproto directly.

Twisted's own WebSocket client (C{twisted.web.websocket}) sends neither
extra headers nor a subprotocol offer, and the API server needs both: the
bearer token, and C{v4.channel.k8s.io} for an exit status on the error
channel. So this protocol writes the upgrade request itself on a TCP (or
TLS) connection and reads the frames with wsproto.

In v4 every binary message starts with its channel: 1 stdout, 2 stderr,
3 the outcome, one JSON C{Status} (C{Success}, or C{Failure} with reason
C{NonZeroExitCode} and the code in C{details.causes}), sent last.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from diegossh._http import jsonOrNone
from diegossh.bastion._engineapi import MAX_FILE_SIZE, ExecOutput, jsonObject, printable
from diegossh.bastion.targets import EngineError

__all__ = [
    "CHANNEL_ERROR",
    "CHANNEL_STDERR",
    "CHANNEL_STDOUT",
    "SUBPROTOCOL",
    "ExecProtocol",
    "exitCodeFromStatus",
    "splitChannel",
]

SUBPROTOCOL = "v4.channel.k8s.io"
CHANNEL_STDIN, CHANNEL_STDOUT, CHANNEL_STDERR, CHANNEL_ERROR, CHANNEL_RESIZE = range(5)
_MAX_MESSAGE = MAX_FILE_SIZE + 1024
"""No single message of a bounded exec needs more (the server sends 32 KiB)."""
_MAX_REJECTION = 64 * 1024


def splitChannel(message: bytes) -> tuple[int, bytes]:
    """A v4 binary message as C{(channel, payload)}."""
    if not message:
        raise EngineError("the exec stream sent a message without a channel")
    return message[0], message[1:]


def exitCodeFromStatus(payload: bytes, what: str) -> int:
    """
    The exit code a v4 C{Status} reports; L{EngineError} when the exec
    failed some other way (no such executable, container gone, ...).
    """
    try:
        status = json.loads(payload)
    except ValueError:
        raise EngineError(f"{what}: the exec status is not JSON") from None
    status = jsonObject(status)
    if status.get("status") == "Success":
        return 0
    if status.get("status") == "Failure" and status.get("reason") == "NonZeroExitCode":
        for cause in jsonObject(status.get("details")).get("causes") or []:
            cause = jsonObject(cause)
            if cause.get("reason") == "ExitCode":
                try:
                    return int(cause.get("message", ""))
                except ValueError:
                    break
        raise EngineError(f"{what}: a non-zero exit without its code")
    message = status.get("message")
    detail = printable(message) if isinstance(message, str) else "no reason given"
    raise EngineError(f"{what} failed: {detail}")


def rejectionError(code: int, body: bytes, where: str, pod: str) -> EngineError:
    """What an HTTP answer instead of the upgrade means, in words."""
    message = jsonObject(jsonOrNone(body)).get("message")
    detail = f": {printable(message)}" if isinstance(message, str) else ""
    if code == 404:
        return EngineError(f"pod {pod} is gone{detail}")
    if code == 401:
        return EngineError(f"{where} refused the credentials (HTTP 401)")
    return EngineError(f"{where} answered HTTP {code} to exec in pod {pod}{detail}")


class ExecProtocol(Protocol):
    """
    Sends the upgrade for C{target} (path and query) to C{host}, then reads
    the channels into C{output}. L{done} fires with the exit code once the
    status arrives, or fails with L{EngineError}; cancelling it drops the
    connection.
    """

    transport: Any  # a TCP or TLS transport: abortConnection and all

    def __init__(
        self,
        host: str,
        target: str,
        headers: list[tuple[bytes, bytes]],
        output: ExecOutput,
        where: str,
        pod: str,
    ) -> None:
        self._request = Request(
            host=host, target=target, extra_headers=headers, subprotocols=[SUBPROTOCOL]
        )
        self._ws = WSConnection(ConnectionType.CLIENT)
        self._output = output
        self._where = where
        self._pod = pod
        self._message = b""
        self._rejection: int | None = None
        self._rejectionBody = b""
        self.done: Deferred[int] = Deferred(self._cancel)
        self._finished = False
        self._upgraded = False

    def connectionMade(self) -> None:
        self.transport.write(self._ws.send(self._request))

    def dataReceived(self, data: bytes) -> None:
        if self._finished or not data:  # to wsproto, no bytes would mean EOF
            return
        try:
            self._ws.receive_data(data)
            for event in self._ws.events():
                self._handle(event)
                if self._finished:
                    return
        except RemoteProtocolError as e:
            self._fail(EngineError(f"{self._where} broke the WebSocket protocol: {e}"))
        except EngineError as e:
            self._fail(e)

    def _handle(self, event: object) -> None:
        if isinstance(event, AcceptConnection):
            if event.subprotocol != SUBPROTOCOL:
                raise EngineError(f"{self._where} did not agree to {SUBPROTOCOL} for exec")
            self._upgraded = True
        elif isinstance(event, RejectConnection):
            self._rejection = event.status_code
            if not event.has_body:
                self._rejected()
        elif isinstance(event, RejectData):
            if len(self._rejectionBody) < _MAX_REJECTION:
                self._rejectionBody += event.data[: _MAX_REJECTION - len(self._rejectionBody)]
            if event.body_finished:
                self._rejected()
        elif isinstance(event, BytesMessage):
            self._message += event.data
            if len(self._message) > _MAX_MESSAGE:
                raise EngineError(f"{self._where} sent an exec message too large")
            if event.message_finished:
                message, self._message = self._message, b""
                if message:  # an empty message carries nothing, not even a channel
                    self._channel(*splitChannel(message))
        elif isinstance(event, TextMessage):
            raise EngineError(f"{self._where} sent text on a {SUBPROTOCOL} exec")
        elif isinstance(event, Ping):
            self.transport.write(self._ws.send(event.response()))
        elif isinstance(event, CloseConnection):
            if self._ws.state is not ConnectionState.CLOSED:
                self.transport.write(self._ws.send(event.response()))
            self.transport.loseConnection()

    def _channel(self, channel: int, payload: bytes) -> None:
        if channel == CHANNEL_STDOUT:
            self._output.stdout(payload)
        elif channel == CHANNEL_STDERR:
            self._output.stderr(payload)
        elif channel == CHANNEL_ERROR:
            self._succeed(exitCodeFromStatus(payload, f"exec in pod {self._pod}"))

    def _rejected(self) -> None:
        assert self._rejection is not None
        self._fail(rejectionError(self._rejection, self._rejectionBody, self._where, self._pod))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._finished:
            return
        why = printable(reason.getErrorMessage())
        if self._rejection is not None:
            self._rejected()
        elif not self._upgraded:
            self._fail(
                EngineError(f"{self._where} closed the connection before the upgrade: {why}")
            )
        else:
            self._fail(EngineError(f"exec in pod {self._pod} ended without a status: {why}"))

    def _succeed(self, exitCode: int) -> None:
        """The status is the last message: say goodbye and report."""
        self._finished = True
        try:
            self.transport.write(self._ws.send(CloseConnection(code=1000)))
        except LocalProtocolError:
            pass
        self.transport.loseConnection()
        self.done.callback(exitCode)

    def _fail(self, error: EngineError) -> None:
        if self._finished:
            return
        self._finished = True
        self._abort()
        self.done.errback(Failure(error))

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.abortConnection()

    def _cancel(self, d: Deferred[int]) -> None:
        if not self._finished:
            self._finished = True
            self._abort()
        d.errback(Failure(CancelledError()))
