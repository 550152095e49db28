"""
A stand-in for Diego's BBS: a real HTTPS server on 127.0.0.1 that requires a
client certificate and answers the two calls the proxy makes with the real
protobuf messages.

Each test shapes it: add LRPs (L{FakeBBS.addLRP}), make a call answer with a
BBS C{Error}, or misbehave (L{FakeBBS.setBehaviour}: slow, hang, close the
connection, a non-200 status, garbage). L{FakeBBS.stop} closes the port and
every connection, so no test leaves the reactor dirty.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IListeningPort
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from diegossh.proxy.bbs import models_pb2 as pb
from tests.fakes.sites import TrackedSite, shutDown
from tests.fakes.tls import CertificateAuthority, IssuedCertificate, serverOptions

__all__ = ["GARBAGE", "Behaviour", "FakeBBS"]

ACTUAL = b"/v1/actual_lrps/list"
DESIRED_R3 = b"/v1/desired_lrps/get_by_process_guid.r3"
DESIRED_R2 = b"/v1/desired_lrps/get_by_process_guid.r2"
PING = b"/v1/ping"
PROTOBUF = b"application/x-protobuf"
GARBAGE = b"\xff" * 11 + b"not protobuf"
"""A body no protobuf parser accepts: a varint longer than ten bytes."""
NOT_FOUND = pb.Error(
    type=pb.Error.ResourceNotFound, message="the requested resource could not be found"
)


@dataclass
class Behaviour:
    """
    How the fake answers. C{mode}: C{"normal"}, C{"hang"} (never answer),
    C{"close"} (abort the connection), C{"status"} (answer C{status} with a
    text body), C{"garbage"} (200, protobuf content type, unparsable body),
    C{"html"} (200 with an HTML page). C{delay} postpones any answer;
    C{times} limits the behaviour to the first N requests (None: always).
    """

    mode: str = "normal"
    delay: float = 0.0
    status: int = 500
    times: int | None = None


class _BBSResource(Resource):
    isLeaf = True

    def __init__(self, fake: FakeBBS) -> None:
        super().__init__()
        self._fake = fake

    def render_POST(self, request: Request) -> int | bytes:
        return self._fake.render(request)


class FakeBBS:
    """
    The fake server. C{reactor} runs it; C{ca} signs the client certificates it
    accepts; C{certificate} is what it presents. Both may be None for a fake
    that never listens and only serves in memory (see L{resource}).
    """

    def __init__(
        self,
        reactor: Any,
        ca: CertificateAuthority | None = None,
        certificate: IssuedCertificate | None = None,
    ) -> None:
        self.reactor = reactor
        self.ca = ca
        self.certificate = certificate
        self.actualLRPs: list[pb.ActualLRP] = []
        self.desiredLRPs: dict[str, pb.DesiredLRP] = {}
        self.errors: dict[bytes, pb.Error] = {}
        self.requests: list[tuple[bytes, bytes]] = []
        """Every request received, as (path, body)."""
        self._behaviours: dict[bytes | None, Behaviour] = {}
        self._port: IListeningPort | None = None
        self._site: TrackedSite | None = None
        self._pending: set[IDelayedCall] = set()

    # --- shaping -----------------------------------------------------------

    def addLRP(
        self,
        processGuid: str,
        index: int = 0,
        *,
        instanceGuid: str | None = None,
        address: str = "127.0.0.1",
        instanceAddress: str = "10.255.0.2",
        ports: Sequence[tuple[int, int, int, int]] = ((2222, 61001, 61443, 61002),),
        preferredAddress: int = pb.ActualLRPNetInfo.UNKNOWN,
        route: Mapping[str, Any] | bytes | None = None,
        logGuid: str = "log-guid",
        metricTags: Mapping[str, pb.MetricTagValue] | None = None,
        state: str = "RUNNING",
    ) -> pb.ActualLRP:
        """
        Add an actual LRP and, unless one exists, its desired LRP. C{ports}
        holds (container, host, container TLS, host TLS) ports; C{route} is
        the C{diego-ssh} route (a dict, raw bytes, or None for the default
        C{{"container_port": 2222}}); pass C{route=b""} for no route at all.
        """
        actual = pb.ActualLRP(
            actual_lrp_key=pb.ActualLRPKey(process_guid=processGuid, index=index, domain="apps"),
            actual_lrp_instance_key=pb.ActualLRPInstanceKey(
                instance_guid=instanceGuid or f"{processGuid}-instance-{index}",
                cell_id="cell-1",
            ),
            actual_lrp_net_info=pb.ActualLRPNetInfo(
                address=address,
                instance_address=instanceAddress,
                ports=[
                    pb.PortMapping(
                        container_port=c,
                        host_port=h,
                        container_tls_proxy_port=ct,
                        host_tls_proxy_port=ht,
                    )
                    for c, h, ct, ht in ports
                ],
                preferred_address=preferredAddress,  # type: ignore[arg-type]
            ),
            state=state,
            since=1,
        )
        self.actualLRPs.append(actual)
        if processGuid not in self.desiredLRPs:
            routes: dict[str, bytes] = {"cf-router": b"[]"}
            if route is None:
                route = {"container_port": 2222}
            if isinstance(route, bytes):
                if route:
                    routes["diego-ssh"] = route
            else:
                routes["diego-ssh"] = json.dumps(route).encode()
            self.desiredLRPs[processGuid] = pb.DesiredLRP(
                process_guid=processGuid,
                domain="apps",
                instances=1,
                ports=[2222, 8080],
                routes=pb.ProtoRoutes(routes=routes),
                log_guid=logGuid,
                metric_tags=metricTags or {},
            )
        return actual

    def failWith(self, path: bytes, errorType: int, message: str) -> None:
        """Answer calls to C{path} with a BBS C{Error}."""
        self.errors[path] = pb.Error(type=errorType, message=message)  # type: ignore[arg-type]

    def setBehaviour(self, behaviour: Behaviour, path: bytes | None = None) -> None:
        """Misbehave on C{path}, or on every path when it is None."""
        self._behaviours[path] = behaviour

    # --- lifecycle ---------------------------------------------------------

    async def start(self) -> FakeBBS:
        """Listen on 127.0.0.1, on a port of the kernel's choosing."""
        assert self.ca is not None and self.certificate is not None
        options = serverOptions(self.certificate, clientCA=self.ca)
        self._site = TrackedSite(self.resource())
        self._port = self.reactor.listenSSL(0, self._site, options, interface="127.0.0.1")
        return self

    def resource(self) -> Resource:
        """The fake as a twisted.web resource, e.g. for treq's in-memory agent."""
        return _BBSResource(self)

    @property
    def url(self) -> str:
        assert self._port is not None
        host: Any = self._port.getHost()
        return f"https://127.0.0.1:{host.port}"

    async def stop(self) -> None:
        """Stop listening, drop every connection, and wait until they are gone."""
        pending, self._pending = set(self._pending), set()
        port, self._port = self._port, None
        await shutDown(port, self._site, pending)

    # --- serving -----------------------------------------------------------

    def _behaviourFor(self, path: bytes) -> Behaviour:
        for key in (path, None):
            behaviour = self._behaviours.get(key)
            if behaviour is None:
                continue
            if behaviour.times is None:
                return behaviour
            if behaviour.times > 0:
                behaviour.times -= 1
                return behaviour
        return Behaviour()

    def render(self, request: Request) -> int | bytes:
        """Serve one POST."""
        path = request.path
        assert request.content is not None
        body = request.content.read()
        self.requests.append((path, body))
        behaviour = self._behaviourFor(path)
        if behaviour.mode == "hang":
            return NOT_DONE_YET
        if behaviour.delay:
            call = self.reactor.callLater(
                behaviour.delay, self._respond, request, path, body, behaviour
            )
            self._pending.add(call)
            request.notifyFinish().addErrback(lambda _: call.active() and call.cancel())
            return NOT_DONE_YET
        self._respond(request, path, body, behaviour)
        return NOT_DONE_YET

    def _respond(self, request: Request, path: bytes, body: bytes, behaviour: Behaviour) -> None:
        self._pending = {c for c in self._pending if c.active()}
        if request.channel is None or request.finished:
            return
        mode = behaviour.mode
        if mode == "close":
            transport: Any = request.channel.transport
            transport.abortConnection()
            return
        if mode == "status":
            self._finish(request, behaviour.status, b"text/plain", b"internal error\n")
        elif mode == "garbage":
            self._finish(request, 200, PROTOBUF, GARBAGE)
        elif mode == "html":
            self._finish(request, 200, b"text/html", b"<html>not bbs</html>")
        elif request.getHeader(b"content-type") != PROTOBUF:
            self._finish(request, 415, b"text/plain", b"protobuf only\n")
        else:
            status, reply = self._answer(path, body)
            self._finish(request, status, PROTOBUF, reply)

    @staticmethod
    def _finish(request: Request, status: int, contentType: bytes, body: bytes) -> None:
        request.setResponseCode(status)
        request.setHeader(b"content-type", contentType)
        request.write(body)
        request.finish()

    def _answer(self, path: bytes, body: bytes) -> tuple[int, bytes]:
        error = self.errors.get(path)
        if path == PING:  # PingResponse {bool available = 1}
            return 200, b"\x08\x01"
        if path == ACTUAL:
            actuals = pb.ActualLRPsResponse(error=error)
            if error is None:
                query = pb.ActualLRPsRequest.FromString(body)
                actuals.actual_lrps.extend(
                    a
                    for a in self.actualLRPs
                    if (
                        not query.process_guid
                        or a.actual_lrp_key.process_guid == query.process_guid
                    )
                    and (not query.HasField("index") or a.actual_lrp_key.index == query.index)
                )
            return 200, actuals.SerializeToString()
        if path in (DESIRED_R3, DESIRED_R2):
            desired = pb.DesiredLRPResponse(error=error)
            if error is None:
                query2 = pb.DesiredLRPByProcessGuidRequest.FromString(body)
                found = self.desiredLRPs.get(query2.process_guid)
                if found is None:
                    desired.error.CopyFrom(
                        pb.Error(
                            type=pb.Error.ResourceNotFound,
                            message="the requested resource could not be found",
                        )
                    )
                else:
                    desired.desired_lrp.CopyFrom(found)
            return 200, desired.SerializeToString()
        return 404, b""


def _matches(actual: pb.ActualLRP, query: pb.ActualLRPsRequest) -> bool:
    key = actual.actual_lrp_key
    if query.process_guid and key.process_guid != query.process_guid:
        return False
    return not query.HasField("index") or key.index == query.index
