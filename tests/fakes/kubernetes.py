"""
A stand-in Kubernetes API server over HTTPS, for the bastion's Kubernetes
discovery: pods listed by label and field selector, and C{pods/exec} over
WebSocket with the C{v4.channel.k8s.io} framing.

    ca = CertificateAuthority.create(tmp_path / "pki")
    fake = FakeKubernetesAPI(reactor, ca, ca.issueServer("apiserver"), namespace="apps")
    await fake.start()
    fake.add("web-0", "10.1.2.3", {"ssh": "yes"}, files={"~/.ssh/id_ed25519.pub": b"..."})
    kubeconfig = fake.writeKubeconfig(tmp_path / "kubeconfig")
    ...
    await fake.stop()

Every call needs C{Authorization: Bearer TOKEN} (L{token}) or a client
certificate from the CA (as a user named by its CN); otherwise 401 with a
C{Status}, as the API server answers. The list honours C{labelSelector}
(equality, inequality and existence requirements, comma meaning AND) and
C{fieldSelector} (C{status.phase}, C{metadata.name}); a namespace with no
pods lists empty. Exec answers 404 for a missing pod and 400 for a missing
or ambiguous container, then runs C{cat} (L{tests.fakes.enginecat}) and
ends with the C{Status} on channel 3, as the kubelet does (after one empty
stdout message, which the kubelet sends to say the streams are up).

One listening port serves both: each connection's first request line
decides whether it goes to a twisted.web site or to a wsproto WebSocket
server, so no private Twisted API is needed to take a connection over.

Controls: L{hang} (accept, never answer), L{ignoreSelectors}, L{token} (change it to rotate),
L{stop}/L{start} on the same port, L{requests} with L{count}, L{execs}.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    RejectData,
)
from wsproto.events import Request as WSRequest
from wsproto.utilities import RemoteProtocolError

from tests.fakes.enginecat import homeFiles, runCat
from tests.fakes.sites import TrackedSite, shutDown
from tests.fakes.tls import CertificateAuthority, IssuedCertificate, commonName, serverOptions

__all__ = ["SUBPROTOCOL", "FakeKubernetesAPI", "FakePod", "KubeRequest", "status"]

SUBPROTOCOL = "v4.channel.k8s.io"
_PODS = re.compile(r"/api/v1/namespaces/([^/]+)/pods")
_POD = re.compile(r"/api/v1/namespaces/([^/]+)/pods/([^/]+)")
_EXEC = re.compile(r"/api/v1/namespaces/([^/]+)/pods/([^/]+)/exec")
_REQUIREMENT = re.compile(r"\s*(!?)\s*([A-Za-z0-9./_-]+)\s*(?:(==|=|!=)\s*([A-Za-z0-9._-]*))?\s*")
_CHUNK = 32 * 1024
_TIMESTAMP = "2025-06-01T12:00:00Z"


def status(code: int, reason: str, message: str, **details: Any) -> dict[str, Any]:
    """A C{Status} object as the API server sends it with an error."""
    result: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        result["details"] = details
    return result


@dataclass
class FakePod:
    name: str
    namespace: str
    uid: str
    labels: dict[str, str]
    address: str
    files: dict[str, bytes]
    home: str = "/root"
    phase: str = "Running"
    deleting: bool = False
    containers: list[str] = field(default_factory=lambda: ["sshd"])

    def json(self) -> dict[str, Any]:
        """The pod as an item of a C{PodList}."""
        metadata: dict[str, Any] = {
            "name": self.name,
            "generateName": self.name.rsplit("-", 1)[0] + "-",
            "namespace": self.namespace,
            "uid": self.uid,
            "resourceVersion": "4242",
            "creationTimestamp": _TIMESTAMP,
            "labels": dict(self.labels),
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": "sshd-7d9f8b",
                    "uid": str(uuid.uuid4()),
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        }
        if self.deleting:
            metadata["deletionTimestamp"] = _TIMESTAMP
            metadata["deletionGracePeriodSeconds"] = 30
        podStatus: dict[str, Any] = {
            "phase": self.phase,
            "hostIP": "192.168.49.2",
            "hostIPs": [{"ip": "192.168.49.2"}],
            "startTime": _TIMESTAMP,
            "qosClass": "BestEffort",
            "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": _TIMESTAMP},
            ],
            "containerStatuses": [
                {
                    "name": name,
                    "ready": True,
                    "restartCount": 0,
                    "image": "example/sshd:1",
                    "imageID": "docker.io/example/sshd@sha256:" + "ab" * 32,
                    "containerID": "containerd://" + "cd" * 32,
                    "started": True,
                    "state": {"running": {"startedAt": _TIMESTAMP}},
                }
                for name in self.containers
            ],
        }
        if self.address:
            podStatus["podIP"] = self.address
            podStatus["podIPs"] = [{"ip": self.address}]
        return {
            "metadata": metadata,
            "spec": {
                "containers": [
                    {
                        "name": name,
                        "image": "example/sshd:1",
                        "ports": [{"containerPort": 22, "protocol": "TCP"}],
                    }
                    for name in self.containers
                ],
                "restartPolicy": "Always",
                "serviceAccountName": "default",
                "nodeName": "node-1",
            },
            "status": podStatus,
        }


@dataclass(frozen=True)
class KubeRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str] = field(repr=False)
    websocket: bool = False
    user: str | None = None
    """C{token}, C{cert:CN}, or None when the request was refused."""
    target: str = ""
    """The request target as sent, query encoding and all."""
    subprotocols: tuple[str, ...] = ()
    """What a WebSocket upgrade offered."""


def _selectorMatches(selector: str, values: Mapping[str, str]) -> bool:
    """C{selector}'s requirements all hold for C{values} (raises ValueError)."""
    for requirement in selector.split(","):
        if not requirement.strip():
            continue
        match = _REQUIREMENT.fullmatch(requirement)
        if match is None:
            raise ValueError(f"unable to parse requirement: {requirement!r}")
        negated, key, op, value = match.groups()
        if negated and op:
            raise ValueError(f"unable to parse requirement: {requirement!r}")
        if negated:
            ok = key not in values
        elif op is None:
            ok = key in values
        elif op == "!=":
            ok = values.get(key) != value
        else:
            ok = values.get(key) == value
        if not ok:
            return False
    return True


def _fields(pod: FakePod) -> dict[str, str]:
    return {
        "status.phase": pod.phase,
        "metadata.name": pod.name,
        "metadata.namespace": pod.namespace,
        "spec.nodeName": "node-1",
    }


class _API(Resource):
    isLeaf = True

    def __init__(self, fake: FakeKubernetesAPI) -> None:
        super().__init__()
        self._fake = fake

    def render(self, request: Request) -> int | bytes:
        return self._fake._serveHTTP(request)


class _ExecServer(Protocol):
    """The server end of one exec WebSocket."""

    transport: Any  # a TCP or TLS transport: abortConnection and all

    def __init__(self, fake: FakeKubernetesAPI) -> None:
        self._fake = fake
        self.ws = WSConnection(ConnectionType.SERVER)

    def dataReceived(self, data: bytes) -> None:
        try:
            self.ws.receive_data(data)
            for event in self.ws.events():
                if isinstance(event, WSRequest):
                    self._fake._serveExec(self, event)
                elif isinstance(event, CloseConnection):
                    if self.ws.state is not ConnectionState.CLOSED:
                        self.transport.write(self.ws.send(event.response()))
                    self.transport.loseConnection()
                elif isinstance(event, Ping):
                    self.transport.write(self.ws.send(event.response()))
                elif isinstance(event, BytesMessage):
                    pass  # stdin: cat reads none
        except RemoteProtocolError as e:
            if self.ws.state is ConnectionState.CONNECTING:
                self.reject(400, status(400, "BadRequest", f"Upgrade request required: {e}"))
            else:
                self.transport.loseConnection()

    def reject(self, code: int, body: dict[str, Any]) -> None:
        self.transport.write(
            self.ws.send(
                RejectConnection(
                    status_code=code,
                    headers=[(b"content-type", b"application/json")],
                    has_body=True,
                )
            )
            + self.ws.send(RejectData(json.dumps(body).encode(), body_finished=True))
        )
        self.transport.loseConnection()

    def send(self, channel: int, payload: bytes) -> None:
        self.transport.write(self.ws.send(BytesMessage(bytes([channel]) + payload)))

    def peerCN(self) -> str | None:
        return _peerCN(self.transport)


class _Connection(Protocol):
    """
    One client connection: its first request line says whether it is an
    exec WebSocket or plain HTTP, and the bytes go to that protocol.
    """

    transport: Any  # a TCP or TLS transport: abortConnection and all

    def __init__(self, fake: FakeKubernetesAPI, addr: Any) -> None:
        self._fake = fake
        self._addr = addr
        self._buffer = b""
        self._delegate: Any = None
        self.lost: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        self._fake._connections.add(self)

    def dataReceived(self, data: bytes) -> None:
        if self._delegate is not None:
            self._delegate.dataReceived(data)
            return
        self._buffer += data
        line, newline, _ = self._buffer.partition(b"\r\n")
        if not newline:
            if len(self._buffer) > 16 * 1024:
                self.transport.abortConnection()
            return
        method, _, rest = line.partition(b" ")
        path = urlsplit(rest.partition(b" ")[0].decode("latin-1")).path
        if method == b"GET" and _EXEC.fullmatch(path):
            self._delegate = _ExecServer(self._fake)
        else:
            assert self._fake._site is not None
            self._delegate = self._fake._site.buildProtocol(self._addr)
        self._delegate.makeConnection(self.transport)
        buffered, self._buffer = self._buffer, b""
        self._delegate.dataReceived(buffered)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._fake._connections.discard(self)
        if self._delegate is not None:
            self._delegate.connectionLost(reason)
        self.lost.callback(None)


class _Factory(Factory):
    def __init__(self, fake: FakeKubernetesAPI) -> None:
        self._fake = fake

    def buildProtocol(self, addr: Any) -> _Connection:
        return _Connection(self._fake, addr)


def _peerCN(transport: Any) -> str | None:
    """The CN of the client certificate the TLS layer verified, if any."""
    getPeerCertificate = getattr(transport, "getPeerCertificate", None)
    peer = getPeerCertificate() if getPeerCertificate is not None else None
    if peer is None:
        return None
    return commonName(peer)


class FakeKubernetesAPI:
    """
    The API server for the pods of any namespace; see the module docstring.

    @param ca: signs the server certificate and any client certificate
        accepted as a user.
    @param namespace: where L{add} puts pods, and the kubeconfig's
        namespace, unless told otherwise.
    """

    def __init__(
        self,
        reactor: Any,
        ca: CertificateAuthority,
        certificate: IssuedCertificate,
        *,
        token: str | None = None,
        namespace: str = "default",
    ) -> None:
        self.reactor = reactor
        self.ca = ca
        self.certificate = certificate
        self.token = token or secrets.token_urlsafe(32)
        self.namespace = namespace
        self.pods: dict[tuple[str, str], FakePod] = {}
        self.requests: list[KubeRequest] = []
        self.execs: list[tuple[str, list[str]]] = []
        self.hang = False
        self.ignoreSelectors = False
        """List every pod of the namespace, as a careless proxy in front might."""
        self._port: IListeningPort | None = None
        self._portNumber = 0
        self._site: TrackedSite | None = None
        self._connections: set[_Connection] = set()

    # -- control -----------------------------------------------------------

    async def start(self) -> FakeKubernetesAPI:
        """Listen on 127.0.0.1 (on the same port again after L{stop})."""
        options = serverOptions(self.certificate, clientCA=self.ca, requireClientCertificate=False)
        self._site = TrackedSite(_API(self))
        self._port = self.reactor.listenSSL(
            self._portNumber, _Factory(self), options, interface="127.0.0.1"
        )
        host: Any = self._port.getHost()
        self._portNumber = host.port
        return self

    async def stop(self) -> None:
        """Stop listening, drop every connection, and wait until they are gone."""
        port, self._port = self._port, None
        connections = list(self._connections)
        await shutDown(port, self._site, ())
        for connection in connections:
            if connection.transport is not None:
                connection.transport.abortConnection()
        await DeferredList([c.lost for c in connections])

    async def connectionsClosed(self) -> None:
        """Wait until every connection open now has closed."""
        await DeferredList([c.lost for c in list(self._connections)])

    @property
    def url(self) -> str:
        assert self._portNumber, "not started"
        return f"https://127.0.0.1:{self._portNumber}"

    @property
    def port(self) -> int:
        return self._portNumber

    def add(
        self,
        name: str,
        address: str,
        labels: Mapping[str, str],
        files: Mapping[str, bytes] | None = None,
        uid: str | None = None,
        *,
        namespace: str | None = None,
        home: str = "/root",
        phase: str = "Running",
        deleting: bool = False,
        containers: Sequence[str] = ("sshd",),
    ) -> FakePod:
        """A pod at C{address} (empty: none yet); C{files} keys may start with C{~/}."""
        pod = FakePod(
            name=name,
            namespace=namespace or self.namespace,
            uid=uid or str(uuid.uuid4()),
            labels=dict(labels),
            address=address,
            files=homeFiles(files, home),
            home=home,
            phase=phase,
            deleting=deleting,
            containers=list(containers),
        )
        self.pods[(pod.namespace, name)] = pod
        return pod

    def remove(self, name: str, namespace: str | None = None) -> None:
        del self.pods[(namespace or self.namespace, name)]

    def count(self, path: str) -> int:
        """How many requests (exec upgrades included) came for C{path}."""
        return sum(1 for r in self.requests if r.path == path)

    def writeKubeconfig(
        self,
        path: Path,
        *,
        token: str | None = None,
        clientCertificate: IssuedCertificate | None = None,
        namespace: str | None = None,
        caFile: bool = False,
        insecure: bool = False,
        contextName: str = "fake",
    ) -> Path:
        """
        A kubeconfig whose current context reaches this server: the CA
        embedded (or as a file path with C{caFile}, or neither with
        C{insecure}), and as the user either C{token} (this server's by
        default) or C{clientCertificate} (embedded).
        """
        cluster: dict[str, Any] = {"server": self.url}
        if insecure:
            cluster["insecure-skip-tls-verify"] = True
        elif caFile:
            cluster["certificate-authority"] = str(self.ca.certPath)
        else:
            cluster["certificate-authority-data"] = base64.b64encode(self.ca.certPEM).decode()
        user: dict[str, Any] = {}
        if clientCertificate is not None:
            user["client-certificate-data"] = base64.b64encode(clientCertificate.certPEM).decode()
            user["client-key-data"] = base64.b64encode(clientCertificate.keyPEM).decode()
        if token is not None or clientCertificate is None:
            user["token"] = token if token is not None else self.token
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "preferences": {},
            "clusters": [{"name": "fake-cluster", "cluster": cluster}],
            "users": [{"name": "fake-user", "user": user}],
            "contexts": [
                {
                    "name": contextName,
                    "context": {
                        "cluster": "fake-cluster",
                        "user": "fake-user",
                        "namespace": namespace or self.namespace,
                    },
                }
            ],
            "current-context": contextName,
        }
        path.write_text(yaml.safe_dump(config))
        return path

    # -- serving ------------------------------------------------------------

    def _authenticate(self, headers: Mapping[str, str], transport: Any) -> str | None:
        if headers.get("authorization") == f"Bearer {self.token}":
            return "token"
        cn = _peerCN(transport)
        return f"cert:{cn}" if cn is not None else None

    def _record(
        self,
        method: str,
        target: str,
        headers: Mapping[str, str],
        transport: Any,
        websocket: bool,
        subprotocols: Sequence[str] = (),
    ) -> KubeRequest:
        parts = urlsplit(target)
        recorded = KubeRequest(
            method,
            parts.path,
            parse_qs(parts.query, keep_blank_values=True),
            dict(headers),
            websocket,
            self._authenticate(headers, transport),
            target,
            tuple(subprotocols),
        )
        self.requests.append(recorded)
        return recorded

    def _serveHTTP(self, request: Request) -> int | bytes:
        headers = {
            k.decode().lower(): v[0].decode("latin-1")
            for k, v in request.requestHeaders.getAllRawHeaders()
        }
        recorded = self._record(
            request.method.decode(),
            request.uri.decode("latin-1"),
            headers,
            request.channel.transport,
            websocket=False,
        )
        if self.hang:
            return NOT_DONE_YET
        if recorded.user is None:
            return _json(request, 401, status(401, "Unauthorized", "Unauthorized"))
        if recorded.path == "/version":
            return _json(request, 200, {"major": "1", "minor": "31", "gitVersion": "v1.31.0"})
        if recorded.method != "GET":
            return _json(request, 405, status(405, "MethodNotAllowed", "method not allowed"))
        pods = _PODS.fullmatch(recorded.path)
        if pods:
            return self._list(request, pods.group(1), recorded.query)
        pod = _POD.fullmatch(recorded.path)
        if pod:
            found = self.pods.get((pod.group(1), pod.group(2)))
            if found is None:
                return _json(request, 404, _notFound(pod.group(2)))
            return _json(request, 200, {"kind": "Pod", "apiVersion": "v1", **found.json()})
        if recorded.path.endswith("/exec"):
            return _json(request, 400, status(400, "BadRequest", "Upgrade request required"))
        return _json(
            request, 404, status(404, "NotFound", "the server could not find the resource")
        )

    def _list(self, request: Request, namespace: str, query: dict[str, list[str]]) -> bytes:
        labelSelector = query.get("labelSelector", [""])[0]
        fieldSelector = query.get("fieldSelector", [""])[0]
        if "(" in labelSelector:
            return _json(request, 400, status(400, "BadRequest", "set-based selectors: not here"))
        items = []
        try:
            for pod in self.pods.values():
                if pod.namespace != namespace:
                    continue
                fields = _fields(pod)
                for requirement in filter(None, fieldSelector.split(",")):
                    key = re.split("!=|==|=", requirement, maxsplit=1)[0].strip()
                    if key not in fields:
                        raise ValueError(f'field label not supported: "{key}"')
                if self.ignoreSelectors:
                    items.append(pod.json())
                elif _selectorMatches(labelSelector, pod.labels) and _selectorMatches(
                    fieldSelector, fields
                ):
                    items.append(pod.json())
        except ValueError as e:
            return _json(request, 400, status(400, "BadRequest", str(e)))
        return _json(
            request,
            200,
            {
                "kind": "PodList",
                "apiVersion": "v1",
                "metadata": {"resourceVersion": "4243"},
                "items": items,
            },
        )

    def _serveExec(self, server: _ExecServer, event: WSRequest) -> None:
        headers = {k.decode().lower(): v.decode("latin-1") for k, v in event.extra_headers}
        recorded = self._record(
            "GET", event.target, headers, server.transport, True, event.subprotocols
        )
        if self.hang:
            return
        if recorded.user is None:
            server.reject(401, status(401, "Unauthorized", "Unauthorized"))
            return
        match = _EXEC.fullmatch(recorded.path)
        assert match is not None
        pod = self.pods.get((match.group(1), match.group(2)))
        if pod is None:
            server.reject(404, _notFound(match.group(2)))
            return
        query = recorded.query
        command = query.get("command", [])
        wanted = query.get("container", [])
        problem = None
        if not command:
            problem = "you must specify at least 1 command"
        elif not any(query.get(s, ["false"])[0] == "true" for s in ("stdin", "stdout", "stderr")):
            problem = "you must specify at least one of stdin, stdout, stderr"
        elif wanted and wanted[0] not in pod.containers:
            problem = f"container {wanted[0]} is not valid for pod {pod.name}"
        elif not wanted and len(pod.containers) > 1:
            problem = (
                f"a container name must be specified for pod {pod.name}, "
                f"choose one of: [{' '.join(pod.containers)}]"
            )
        elif pod.phase != "Running":
            problem = (
                f"cannot exec into a container in a completed pod; current phase is {pod.phase}"
            )
        elif SUBPROTOCOL not in event.subprotocols:
            problem = f"the fake speaks {SUBPROTOCOL} only"
        if problem is not None:
            server.reject(400, status(400, "BadRequest", problem))
            return
        self.execs.append((pod.name, command))
        server.transport.write(server.ws.send(AcceptConnection(subprotocol=SUBPROTOCOL)))
        result = runCat(command, pod.files, pod.home)
        stdout = query.get("stdout", ["false"])[0] == "true"
        stderr = query.get("stderr", ["false"])[0] == "true"
        if stdout:
            server.send(1, b"")
            for offset in range(0, len(result.stdout), _CHUNK):
                server.send(1, result.stdout[offset : offset + _CHUNK])
        if stderr and result.stderr:
            server.send(2, result.stderr)
        if result.exitCode == 0:
            outcome: dict[str, Any] = {"metadata": {}, "status": "Success"}
        else:
            outcome = {
                "metadata": {},
                "status": "Failure",
                "message": (
                    f"command terminated with non-zero exit code: error executing command "
                    f"{command}, exit code {result.exitCode}"
                ),
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": str(result.exitCode)}]},
            }
        server.send(3, json.dumps(outcome).encode())
        server.transport.write(server.ws.send(CloseConnection(code=1000)))
        server.transport.loseConnection()


def _notFound(name: str) -> dict[str, Any]:
    return status(404, "NotFound", f'pods "{name}" not found', name=name, kind="pods")


def _json(request: Request, code: int, obj: object) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-cache, private")
    return json.dumps(obj).encode()
