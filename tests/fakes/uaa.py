"""
A stand-in for UAA's token endpoint: a real HTTPS server on 127.0.0.1 that
performs the authorization-code grant as UAA does, for the C{cf} realm.

It checks the client's HTTP Basic credentials and the form, trades each
one-time code (L{FakeUAA.issueCode}) for a real-looking JWT carrying
C{user_name} and C{user_id} (unsigned: nobody here verifies it), and refuses
as UAA refuses (400 C{invalid_grant}, 401 C{unauthorized}). Like the fake
BBS it can misbehave (L{Behaviour}: hang, delay, close, a status, garbage).

L{FakeHTTPSServer}, the part both this and the fake Cloud Controller share,
records every request and counts the TCP connections it accepted, so a test
can prove that a pooled connection served several logins.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from twisted.internet.interfaces import IDelayedCall, IListeningPort
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from tests.fakes.bbs import Behaviour
from tests.fakes.sites import TrackedSite, shutDown
from tests.fakes.tls import CertificateAuthority, IssuedCertificate, serverOptions

__all__ = [
    "GARBAGE",
    "TOKEN_PATH",
    "Answer",
    "Behaviour",
    "FakeHTTPSServer",
    "FakeUAA",
    "Grant",
    "RecordedRequest",
    "makeJWT",
]

TOKEN_PATH = b"/oauth/token"
JSON = b"application/json;charset=UTF-8"
GARBAGE = b'{"access_token": "tru\xff\x00 not json'
"""A body no JSON parser accepts."""


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def makeJWT(claims: dict[str, Any]) -> str:
    """A JWT shaped like UAA's (RS256 header, random signature), not signed."""
    header = {"alg": "RS256", "jku": "https://uaa.test/token_keys", "kid": "key-1", "typ": "JWT"}
    return ".".join(
        [
            _b64url(json.dumps(header).encode()),
            _b64url(json.dumps(claims).encode()),
            _b64url(secrets.token_bytes(256)),
        ]
    )


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server saw it."""

    method: bytes
    path: bytes
    headers: dict[bytes, list[bytes]]
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None


@dataclass(frozen=True)
class Answer:
    """What a fake replies: status, content type, body."""

    status: int
    body: bytes
    contentType: bytes = JSON

    @classmethod
    def json(cls, status: int, obj: object) -> Answer:
        return cls(status, json.dumps(obj).encode())


class _Leaf(Resource):
    isLeaf = True

    def __init__(self, fake: FakeHTTPSServer) -> None:
        super().__init__()
        self._fake = fake

    def render(self, request: Request) -> int | bytes:
        return self._fake.serve(request)


class FakeHTTPSServer:
    """
    A real HTTPS server (server-side TLS only) whose answers a subclass
    decides in L{answer}. C{reactor} runs it and times delays; with C{ca}
    and C{certificate} None it never listens and serves only in memory
    (see L{resource}).
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
        self.requests: list[RecordedRequest] = []
        self._behaviour: Behaviour | None = None
        self._port: IListeningPort | None = None
        self._site: TrackedSite | None = None
        self._url: str | None = None
        self._pending: set[IDelayedCall] = set()

    @property
    def connectionsAccepted(self) -> int:
        """TCP connections accepted since L{start}."""
        return self._site.accepted if self._site is not None else 0

    def setBehaviour(self, behaviour: Behaviour | None) -> None:
        """Misbehave (None: behave again)."""
        self._behaviour = behaviour

    async def start(self) -> Any:
        """Listen on 127.0.0.1, on a port of the kernel's choosing."""
        assert self.certificate is not None
        options = serverOptions(self.certificate)
        self._site = TrackedSite(self.resource())
        self._port = self.reactor.listenSSL(0, self._site, options, interface="127.0.0.1")
        host: Any = self._port.getHost()
        self._url = f"https://127.0.0.1:{host.port}"
        return self

    def resource(self) -> Resource:
        """The fake as a twisted.web resource, e.g. for treq's in-memory agent."""
        return _Leaf(self)

    @property
    def url(self) -> str:
        """Where it listens (or listened: it stays valid after L{stop})."""
        assert self._url is not None, "not started"
        return self._url

    async def stop(self) -> None:
        """Stop listening, drop every connection, and wait until they are gone."""
        pending, self._pending = set(self._pending), set()
        port, self._port = self._port, None
        await shutDown(port, self._site, pending)

    def _currentBehaviour(self) -> Behaviour:
        behaviour = self._behaviour
        if behaviour is None:
            return Behaviour()
        if behaviour.times is not None:
            if behaviour.times <= 0:
                return Behaviour()
            behaviour.times -= 1
        return behaviour

    def serve(self, request: Request) -> int | bytes:
        """Record, then answer now, later or never, as the behaviour says."""
        assert request.content is not None
        body = request.content.read()
        headers = {k.lower(): list(v) for k, v in request.requestHeaders.getAllRawHeaders()}
        recorded = RecordedRequest(request.method, request.path, headers, body)
        self.requests.append(recorded)
        behaviour = self._currentBehaviour()
        if behaviour.mode == "hang":
            return NOT_DONE_YET
        if behaviour.delay:
            call = self.reactor.callLater(
                behaviour.delay, self._respond, request, recorded, behaviour
            )
            self._pending.add(call)
            request.notifyFinish().addErrback(lambda _: call.active() and call.cancel())
            return NOT_DONE_YET
        self._respond(request, recorded, behaviour)
        return NOT_DONE_YET

    def _respond(self, request: Request, recorded: RecordedRequest, behaviour: Behaviour) -> None:
        self._pending = {c for c in self._pending if c.active()}
        if request.channel is None or request.finished:
            return
        mode = behaviour.mode
        if mode == "close":
            transport: Any = request.channel.transport
            transport.abortConnection()
            return
        if mode == "status":
            answer = Answer.json(behaviour.status, {"error": "server_error"})
        elif mode == "garbage":
            answer = Answer(200, GARBAGE)
        elif mode == "html":
            answer = Answer(200, b"<html>maintenance</html>", b"text/html")
        elif mode == "empty":
            answer = Answer.json(200, {})
        else:
            answer = self.answer(recorded)
        request.setResponseCode(answer.status)
        request.setHeader(b"content-type", answer.contentType)
        request.setHeader(b"cache-control", b"no-store")
        request.write(answer.body)
        request.finish()

    def answer(self, request: RecordedRequest) -> Answer:
        """The well-behaved answer to C{request}."""
        raise NotImplementedError


@dataclass(frozen=True)
class Grant:
    """Who a code or a token belongs to."""

    user_name: str
    user_id: str


class FakeUAA(FakeHTTPSServer):
    """
    UAA's C{POST /oauth/token} for the C{authorization_code} grant, with
    the proxy as OAuth client C{clientID}:C{clientSecret}.
    """

    def __init__(
        self,
        reactor: Any,
        ca: CertificateAuthority | None = None,
        certificate: IssuedCertificate | None = None,
        *,
        clientID: str = "ssh-proxy",
        clientSecret: str = "ssh-proxy-secret",
    ) -> None:
        super().__init__(reactor, ca, certificate)
        self.clientID = clientID
        self.clientSecret = clientSecret
        self.codes: dict[str, Grant] = {}
        """Codes not yet used."""
        self.tokens: dict[str, Grant] = {}
        """Every access token issued."""

    @property
    def tokenURL(self) -> str:
        return self.url + TOKEN_PATH.decode()

    def issueCode(
        self, userName: str = "alice", userID: str | None = None, code: str | None = None
    ) -> str:
        """A one-time code, as C{cf ssh-code} prints it."""
        code = code or secrets.token_urlsafe(8)[:10]
        self.codes[code] = Grant(userName, userID or str(uuid.uuid4()))
        return code

    def answer(self, request: RecordedRequest) -> Answer:
        if request.path != TOKEN_PATH:
            return Answer.json(404, {"error": "not_found"})
        if request.method != b"POST":
            return Answer.json(405, {"error": "method_not_allowed"})
        expected = base64.b64encode(f"{self.clientID}:{self.clientSecret}".encode())
        if request.header(b"authorization") != b"Basic " + expected:
            return Answer.json(
                401, {"error": "unauthorized", "error_description": "Bad credentials"}
            )
        contentType = (request.header(b"content-type") or b"").split(b";")[0].strip()
        if contentType != b"application/x-www-form-urlencoded":
            return Answer.json(415, {"error": "unsupported_media_type"})
        try:
            form = parse_qs(request.body.decode(), keep_blank_values=True, strict_parsing=True)
        except (ValueError, UnicodeDecodeError):
            form = {}
        if (
            set(form) != {"grant_type", "code"}
            or any(len(v) != 1 for v in form.values())
            or form["grant_type"] != ["authorization_code"]
        ):
            return Answer.json(
                400, {"error": "invalid_request", "error_description": "Bad grant request"}
            )
        code = form["code"][0]
        grant = self.codes.pop(code, None)
        if grant is None:
            # UAA quotes the code back: the client must not log this.
            return Answer.json(
                400,
                {
                    "error": "invalid_grant",
                    "error_description": f"Invalid authorization code: {code}",
                },
            )
        return Answer.json(200, self._token(grant))

    def _token(self, grant: Grant) -> dict[str, Any]:
        now = int(time.time())
        jti = uuid.uuid4().hex
        claims = {
            "jti": jti,
            "sub": grant.user_id,
            "scope": ["openid", "cloud_controller.read", "cloud_controller.write"],
            "client_id": self.clientID,
            "cid": self.clientID,
            "azp": self.clientID,
            "grant_type": "authorization_code",
            "user_id": grant.user_id,
            "origin": "uaa",
            "user_name": grant.user_name,
            "email": f"{grant.user_name}@example.com",
            "auth_time": now,
            "rev_sig": "d7d3e2b5",
            "iat": now,
            "exp": now + 600,
            "iss": "https://uaa.test/oauth/token",
            "zid": "uaa",
            "aud": ["cloud_controller", "openid", self.clientID],
        }
        accessToken = makeJWT(claims)
        self.tokens[accessToken] = grant
        return {
            "access_token": accessToken,
            "token_type": "bearer",
            "refresh_token": jti + "-r",
            "expires_in": 599,
            "scope": "openid cloud_controller.read cloud_controller.write",
            "jti": jti,
        }
