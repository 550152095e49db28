# -*- test-case-name: tests.test_bbs_client -*-
"""
L{BBSClient}: the L{ILRPDirectory} that asks Diego's BBS where an instance is.

Every failure becomes a L{LoginDenied} whose reason a user may read; the
details (status codes, BBS messages, TLS errors) go to the log. Each of the
two calls runs under one deadline, C{communicationTimeout}, covering its
retries and the reading of the body, measured on the clock passed in.
"""

from __future__ import annotations

from typing import Any, TypeVar

from google.protobuf.message import DecodeError, Message
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import (
    ConnectionClosed,
    ConnectionRefusedError,
)
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IResponse
from zope.interface import implementer

from diegossh._http import BodyTooLarge, httpClient, isCancelled, isStaleConnection, readBody
from diegossh.interfaces import ILRPDirectory
from diegossh.logtext import SafeLogger
from diegossh.proxy.bbs import models_pb2 as pb
from diegossh.proxy.errors import LoginDenied
from diegossh.proxy.target import (
    LRPTarget,
    NetInfo,
    PortMapping,
    PreferredAddress,
    SSHRoute,
    buildTarget,
    resolveMetricTag,
)

__all__ = ["ACTUAL_LRPS_PATH", "DESIRED_LRP_PATH_R2", "DESIRED_LRP_PATH_R3", "BBSClient"]

ACTUAL_LRPS_PATH = "/v1/actual_lrps/list"
PING_PATH = "/v1/ping"
#: A ping's answer is one boolean; anything longer is not one.
MAX_PING_BODY = 1024
DESIRED_LRP_PATH_R3 = "/v1/desired_lrps/get_by_process_guid.r3"
DESIRED_LRP_PATH_R2 = "/v1/desired_lrps/get_by_process_guid.r2"
PROTOBUF = b"application/x-protobuf"
MAX_BODY = 16 * 1024 * 1024
"""Desired LRPs can be large (environment, volumes), but not this large."""

UNAVAILABLE = "the LRP directory (BBS) is unavailable"
TIMED_OUT = "the LRP directory (BBS) did not answer in time"
INVALID = "the LRP directory (BBS) sent an invalid response"

_INT32_MAX = 2**31 - 1
_M = TypeVar("_M", bound=Message)


class _CallTimedOut(Exception):
    """The deadline of one call passed."""


def _readBody(response: IResponse, limit: int = MAX_BODY) -> Deferred[bytes]:
    # Truncated protobuf may still parse: a close-delimited body is not trusted.
    return readBody(response, limit, closeDelimitedOK=False)


def _isTransient(failure: Failure) -> bool:
    """
    A refused, reset or dropped connection is worth a quick retry; a TLS
    failure, a cancellation or anything else is not.
    """
    direct = failure.check(ConnectionRefusedError, ConnectionClosed)
    return direct is not None or isStaleConnection(failure)


@implementer(ILRPDirectory)
class BBSClient:
    """
    Looks LRPs up in BBS: C{POST /v1/actual_lrps/list} for the instance, then
    the desired LRP for its C{diego-ssh} route.

    @param agent: the HTTPS agent (mutual TLS, see
        L{diegossh.tls.tlsPolicyFromPEMFiles}).
    @param baseURL: e.g. C{https://bbs.service.cf.internal:8889}.
    @param clock: measures C{communicationTimeout} and spaces retries.
    @param retries: extra attempts after a refused/reset connection.
    @param desiredLRPPath: L{DESIRED_LRP_PATH_R2} for an older BBS.
    """

    log = SafeLogger()

    def __init__(
        self,
        agent: IAgent,
        baseURL: str,
        clock: IReactorTime,
        *,
        communicationTimeout: float = 10.0,
        connectToInstanceAddress: bool = False,
        backendsTLSEnabled: bool = False,
        retries: int = 3,
        retryDelay: float = 0.05,
        desiredLRPPath: str = DESIRED_LRP_PATH_R3,
    ) -> None:
        self._http = httpClient(agent)
        self._baseURL = baseURL.rstrip("/")
        self._clock = clock
        self._timeout = communicationTimeout
        self._connectToInstanceAddress = connectToInstanceAddress
        self._backendsTLSEnabled = backendsTLSEnabled
        self._retries = retries
        self._retryDelay = retryDelay
        self._desiredLRPPath = desiredLRPPath

    def lookup(self, processGuid: str, index: int) -> Deferred[LRPTarget]:
        """See L{ILRPDirectory.lookup}."""
        return Deferred.fromCoroutine(self._lookup(processGuid, index))

    def ping(self, timeout: float | None = None) -> Deferred[None]:
        """
        BBS's C{POST /v1/ping}: fires when it answers C{available}, fails
        otherwise (readiness: L{diegossh.proxy.readiness}). One attempt, no
        retry, the body at most L{MAX_PING_BODY}, within C{timeout}
        (C{communicationTimeout} when not given).
        """
        return Deferred.fromCoroutine(self._ping(self._timeout if timeout is None else timeout))

    async def _ping(self, timeout: float) -> None:
        from google.protobuf.wrappers_pb2 import BoolValue  # PingResponse's shape

        def timedOut(result: object, timeout: float) -> None:
            raise _CallTimedOut()

        call = Deferred.fromCoroutine(self._post(PING_PATH, b"", MAX_PING_BODY))
        call.addTimeout(timeout, self._clock, onTimeoutCancel=timedOut)
        try:
            body = await call
        except _CallTimedOut:
            raise LoginDenied(TIMED_OUT) from None
        except LoginDenied:
            raise
        except CancelledError:
            raise
        except Exception:
            raise LoginDenied(f"{UNAVAILABLE}: {Failure().getErrorMessage()}") from None
        try:
            available = BoolValue.FromString(body).value
        except DecodeError:
            raise LoginDenied(INVALID) from None
        if not available:
            raise LoginDenied("the LRP directory (BBS) says it is not available")

    async def _lookup(self, processGuid: str, index: int) -> LRPTarget:
        notFound = f"no instance {index} of process {processGuid}"
        if not 0 <= index <= _INT32_MAX:
            raise LoginDenied(notFound)
        actuals = await self._call(
            ACTUAL_LRPS_PATH,
            pb.ActualLRPsRequest(process_guid=processGuid, index=index),
            pb.ActualLRPsResponse,
        )
        self._checkError(actuals, notFound)
        if len(actuals.actual_lrps) != 1:
            if actuals.actual_lrps:
                self.log.warn(
                    "BBS returned {count} actual LRPs for {guid}/{index}",
                    count=len(actuals.actual_lrps),
                    guid=processGuid,
                    index=index,
                )
            raise LoginDenied(notFound if not actuals.actual_lrps else f"{notFound} (ambiguous)")
        actual = actuals.actual_lrps[0]

        desireds = await self._call(
            self._desiredLRPPath,
            pb.DesiredLRPByProcessGuidRequest(process_guid=processGuid),
            pb.DesiredLRPResponse,
        )
        self._checkError(desireds, f"no process {processGuid}")
        if not desireds.HasField("desired_lrp"):
            raise LoginDenied(INVALID)
        return self._target(processGuid, index, actual, desireds.desired_lrp)

    def _target(
        self, processGuid: str, index: int, actual: pb.ActualLRP, desired: pb.DesiredLRP
    ) -> LRPTarget:
        route = SSHRoute.fromRoutes(dict(desired.routes.routes))
        net = actual.actual_lrp_net_info
        netInfo = NetInfo(
            address=net.address,
            instance_address=net.instance_address,
            ports=tuple(
                PortMapping(
                    container_port=p.container_port,
                    host_port=p.host_port,
                    container_tls_proxy_port=p.container_tls_proxy_port,
                    host_tls_proxy_port=p.host_tls_proxy_port,
                )
                for p in net.ports
            ),
            preferred_address=_preferred(net.preferred_address),
        )
        instanceGuid = actual.actual_lrp_instance_key.instance_guid
        return buildTarget(
            processGuid,
            index,
            instanceGuid,
            netInfo,
            route,
            connectToInstanceAddress=self._connectToInstanceAddress,
            backendsTLSEnabled=self._backendsTLSEnabled,
            logGuid=desired.log_guid,
            cellId=actual.actual_lrp_instance_key.cell_id,
            metricTags={
                name: resolveMetricTag(tag.static, tag.dynamic, index, instanceGuid)
                for name, tag in desired.metric_tags.items()
            },
        )

    def _checkError(self, response: Any, notFound: str) -> None:
        if not response.HasField("error"):
            return
        error = response.error
        if error.type == pb.Error.ResourceNotFound:
            raise LoginDenied(notFound)
        self.log.error("BBS error {type}: {message}", type=error.type, message=error.message)
        raise LoginDenied("the LRP directory (BBS) refused the lookup")

    async def _call(self, path: str, request: Message, responseType: type[_M]) -> _M:
        """One call under one deadline: attempts, retries and body included."""

        def timedOut(result: object, timeout: float) -> None:
            raise _CallTimedOut()

        attempts = Deferred.fromCoroutine(self._attempts(path, request.SerializeToString()))
        attempts.addTimeout(self._timeout, self._clock, onTimeoutCancel=timedOut)
        try:
            body = await attempts
        except _CallTimedOut:
            self.log.warn("BBS {path} timed out after {timeout}s", path=path, timeout=self._timeout)
            raise LoginDenied(TIMED_OUT) from None
        try:
            return responseType.FromString(body)
        except DecodeError:
            self.log.warn("BBS {path}: body is not a {type}", path=path, type=responseType)
            raise LoginDenied(INVALID) from None

    async def _attempts(self, path: str, body: bytes) -> bytes:
        attempt = 0
        while True:
            try:
                return await self._post(path, body)
            except LoginDenied:
                raise
            except Exception:
                failure = Failure()
                if isCancelled(failure):
                    raise
                if attempt < self._retries and _isTransient(failure):
                    attempt += 1
                    self.log.info(
                        "BBS {path}: {error}; retry {n}",
                        path=path,
                        error=failure.getErrorMessage(),
                        n=attempt,
                    )
                    await deferLater(self._clock, self._retryDelay * attempt)
                    continue
                self.log.error(
                    "BBS {path} failed: {error}", path=path, error=failure.getErrorMessage()
                )
                raise LoginDenied(UNAVAILABLE) from None

    async def _post(self, path: str, body: bytes, limit: int = MAX_BODY) -> bytes:
        response = await self._http.post(
            self._baseURL + path,
            data=body,
            headers=Headers({b"Content-Type": [PROTOBUF], b"Accept": [PROTOBUF]}),
            allow_redirects=False,
            unbuffered=True,
        )
        if response.code != 200:
            self.log.warn("BBS {path} answered HTTP {code}", path=path, code=response.code)
            await _discard(response)
            raise LoginDenied(f"the LRP directory (BBS) answered HTTP {response.code}")
        contentType = response.headers.getRawHeaders(b"Content-Type", [PROTOBUF])[0]
        if contentType.split(b";")[0].strip().lower() != PROTOBUF:
            self.log.warn("BBS {path} answered {type!r}", path=path, type=contentType)
            await _discard(response)
            raise LoginDenied(INVALID)
        try:
            return await _readBody(response, limit)
        except BodyTooLarge:
            raise LoginDenied(INVALID) from None


async def _discard(response: IResponse) -> None:
    """Read and drop a body so the connection can return to the pool."""
    try:
        await _readBody(response, limit=64 * 1024)
    except CancelledError:
        raise
    except Exception:  # noqa: S110 (the status already decided the outcome)
        pass


def _preferred(value: int) -> PreferredAddress:
    try:
        return PreferredAddress(value)
    except ValueError:
        return PreferredAddress.UNKNOWN
