"""
A stand-in Docker Engine API on a unix socket, for the bastion's Docker
discovery: a real twisted.web server speaking Docker's paths and shapes.

    fake = FakeDockerEngine(reactor, tmp_path / "docker.sock")
    await fake.start()
    fake.add("web-1", "172.17.0.2", {"ssh": "yes"}, files={"~/.ssh/id_ed25519.pub": b"..."})
    DockerEngine(reactor, fake.socketPath, {"ssh": "yes"}, 5.0)
    ...
    await fake.stop()

What it serves, as Docker does (with or without a C{/v1.NN} prefix):
C{GET /_ping}; C{GET /containers/json} with the C{label} and C{status}
filters (a container matches when it carries every label filter);
C{POST /containers/ID/exec}; C{POST /exec/ID/start}, which hijacks the
connection and writes the multiplexed stream until it closes it; and
C{GET /exec/ID/json}. The only program is C{cat} (L{tests.fakes.enginecat}).

Controls: L{hang} (never answer), L{ignoreFilters}, L{runningInspections} (an exec still
reports running for that many inspections after its stream closed, as
Docker sometimes does), L{stop}/L{start} on the same path, and the record
of L{requests} with L{count}.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from twisted.internet.defer import DeferredList
from twisted.internet.interfaces import IListeningPort
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from tests.fakes.enginecat import homeFiles, runCat
from tests.fakes.sites import TrackedSite, shutDown

__all__ = ["DockerRequest", "FakeContainer", "FakeDockerEngine", "frame"]

API_VERSION = "1.47"
_VERSIONED = re.compile(r"/v\d+\.\d+(/.*)")
_STATES = {"created", "restarting", "running", "removing", "paused", "exited", "dead"}
_CHUNK = 32 * 1024


def frame(streamType: int, payload: bytes) -> bytes:
    """One frame of Docker's multiplexed stream."""
    return struct.pack(">B3xI", streamType, len(payload)) + payload


@dataclass
class FakeContainer:
    name: str
    id: str
    labels: dict[str, str]
    networks: dict[str, str]
    files: dict[str, bytes]
    home: str = "/root"
    state: str = "running"

    def json(self) -> dict[str, Any]:
        """The container as C{GET /containers/json} lists it."""
        networks = {
            name: {
                "IPAMConfig": None,
                "Links": None,
                "Aliases": None,
                "MacAddress": "02:42:ac:11:00:02" if address else "",
                "DriverOpts": None,
                "NetworkID": secrets.token_hex(32),
                "EndpointID": secrets.token_hex(32) if address else "",
                "Gateway": address.rsplit(".", 1)[0] + ".1" if address else "",
                "IPAddress": address,
                "IPPrefixLen": 16 if address else 0,
                "IPv6Gateway": "",
                "GlobalIPv6Address": "",
                "GlobalIPv6PrefixLen": 0,
                "DNSNames": None,
            }
            for name, address in self.networks.items()
        }
        return {
            "Id": self.id,
            "Names": ["/" + self.name],
            "Image": "example/sshd:latest",
            "ImageID": "sha256:" + "ab" * 32,
            "Command": "/usr/sbin/sshd -D -e",
            "Created": int(time.time()) - 300,
            "Ports": [{"PrivatePort": 22, "Type": "tcp"}],
            "Labels": dict(self.labels),
            "State": self.state,
            "Status": "Up 5 minutes" if self.state == "running" else "Exited (0) 1 minute ago",
            "HostConfig": {"NetworkMode": next(iter(self.networks), "none")},
            "NetworkSettings": {"Networks": networks},
            "Mounts": [],
        }


@dataclass
class _Exec:
    id: str
    container: FakeContainer
    cmd: list[str]
    started: bool = False
    exitCode: int | None = None
    inspectionsLeft: int = 0


@dataclass(frozen=True)
class DockerRequest:
    method: str
    path: str
    """Without the query and without a version prefix."""
    query: dict[str, list[str]]
    body: bytes = field(repr=False)


class _API(Resource):
    isLeaf = True

    def __init__(self, fake: FakeDockerEngine) -> None:
        super().__init__()
        self._fake = fake

    def render(self, request: Request) -> int | bytes:
        return self._fake._serve(request)


class FakeDockerEngine:
    """
    Docker's API on C{socketPath}; see the module docstring.
    """

    def __init__(self, reactor: Any, socketPath: str | Path) -> None:
        self.reactor = reactor
        self.socketPath = str(socketPath)
        self.containers: dict[str, FakeContainer] = {}
        self.execs: dict[str, _Exec] = {}
        self.requests: list[DockerRequest] = []
        self.hang = False
        self.runningInspections = 0
        self.ignoreFilters = False
        """Answer with every container, as an API that ignores filters would."""
        self._port: IListeningPort | None = None
        self._site: TrackedSite | None = None

    # -- control -----------------------------------------------------------

    async def start(self) -> FakeDockerEngine:
        """Listen on the socket path (again, after L{stop})."""
        if os.path.exists(self.socketPath):
            os.unlink(self.socketPath)
        self._site = TrackedSite(_API(self))
        self._port = self.reactor.listenUNIX(self.socketPath, self._site)
        return self

    async def stop(self) -> None:
        """Stop listening (the socket file goes) and drop every connection."""
        port, self._port = self._port, None
        await shutDown(port, self._site, ())

    def add(
        self,
        name: str,
        address: str,
        labels: Mapping[str, str],
        files: Mapping[str, bytes] | None = None,
        id: str | None = None,
        *,
        home: str = "/root",
        networks: Mapping[str, str] | None = None,
        state: str = "running",
    ) -> FakeContainer:
        """
        A container on the C{bridge} network at C{address} (or on
        C{networks}, name to address); C{files} keys may start with C{~/}.
        """
        container = FakeContainer(
            name=name,
            id=id or secrets.token_hex(32),
            labels=dict(labels),
            networks=dict(networks) if networks is not None else {"bridge": address},
            files=homeFiles(files, home),
            home=home,
            state=state,
        )
        self.containers[name] = container
        return container

    def remove(self, name: str) -> None:
        del self.containers[name]

    async def connectionsClosed(self) -> None:
        """Wait until every connection open now has closed."""
        if self._site is not None:
            await DeferredList(list(self._site.channels.values()))

    def count(self, path: str, method: str | None = None) -> int:
        """How many requests came for C{path} (and C{method})."""
        return sum(
            1 for r in self.requests if r.path == path and (method is None or r.method == method)
        )

    @property
    def execCommands(self) -> list[list[str]]:
        """The C{Cmd} of every exec created, in order."""
        return [e.cmd for e in self.execs.values()]

    # -- serving ------------------------------------------------------------

    def _find(self, ref: str) -> FakeContainer | None:
        """By id, name, or unique id prefix, as Docker looks containers up."""
        for container in self.containers.values():
            if ref in (container.id, container.name):
                return container
        matches = [c for c in self.containers.values() if c.id.startswith(ref)]
        return matches[0] if len(matches) == 1 else None

    def _serve(self, request: Request) -> int | bytes:
        assert request.content is not None and request.path is not None
        path = request.path.decode()
        versioned = _VERSIONED.fullmatch(path)
        if versioned:
            path = versioned.group(1)
        query = parse_qs(request.uri.decode().partition("?")[2], keep_blank_values=True)
        method = request.method.decode()
        body = request.content.read()
        self.requests.append(DockerRequest(method, path, query, body))
        request.setHeader(b"api-version", API_VERSION.encode())
        request.setHeader(b"server", b"Docker/27.5.1 (linux)")
        if self.hang:
            return NOT_DONE_YET
        parts = path.strip("/").split("/")
        if method == "GET" and parts == ["_ping"]:
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"OK"
        if method == "GET" and parts == ["containers", "json"]:
            return self._list(request, query)
        if method == "POST" and len(parts) == 3 and parts[0] == "containers" and parts[2] == "exec":
            return self._createExec(request, parts[1], body)
        if method == "POST" and len(parts) == 3 and parts[0] == "exec" and parts[2] == "start":
            return self._startExec(request, parts[1], body)
        if method == "GET" and len(parts) == 3 and parts[0] == "exec" and parts[2] == "json":
            return self._inspectExec(request, parts[1])
        return _error(request, 404, "page not found")

    def _list(self, request: Request, query: dict[str, list[str]]) -> bytes:
        filters: dict[str, Any] = {}
        if "filters" in query:
            try:
                filters = json.loads(query["filters"][0])
            except ValueError:
                return _error(request, 400, "invalid filter")
            if not isinstance(filters, dict):
                return _error(request, 400, "invalid filter")
        values: dict[str, list[str]] = {}
        for key, given in filters.items():
            # Docker takes {"label": ["a=1"]} and the older {"label": {"a=1": true}}.
            values[key] = list(given) if isinstance(given, list | dict) else []
            if key not in ("label", "status"):
                return _error(request, 400, f"invalid filter '{key}'")
        for status in values.get("status", []):
            if status not in _STATES:
                return _error(request, 400, f"invalid filter 'status={status}'")
        showAll = query.get("all", ["0"])[0] in ("1", "true", "True")
        listed = []
        for container in self.containers.values():
            if self.ignoreFilters:
                listed.append(container.json())
                continue
            if not showAll and container.state != "running":
                continue
            if values.get("status") and container.state not in values["status"]:
                continue
            if all(_labelMatches(container.labels, f) for f in values.get("label", [])):
                listed.append(container.json())
        return _json(request, 200, listed)

    def _createExec(self, request: Request, ref: str, body: bytes) -> bytes:
        container = self._find(ref)
        if container is None:
            return _error(request, 404, f"No such container: {ref}")
        if container.state != "running":
            return _error(request, 409, f"container {container.id} is not running")
        try:
            config = json.loads(body)
        except ValueError:
            return _error(request, 400, "invalid JSON")
        cmd = config.get("Cmd") if isinstance(config, dict) else None
        if not isinstance(cmd, list) or not cmd or not all(isinstance(a, str) for a in cmd):
            return _error(request, 400, "No exec command specified")
        execId = secrets.token_hex(32)
        self.execs[execId] = _Exec(execId, container, cmd)
        return _json(request, 201, {"Id": execId})

    def _startExec(self, request: Request, execId: str, body: bytes) -> int | bytes:
        found = self.execs.get(execId)
        if found is None:
            return _error(request, 404, f"No such exec instance: {execId}")
        if found.started:
            return _error(request, 409, f"Error: Exec command {execId} is already running")
        if self.containers.get(found.container.name) is not found.container:
            return _error(request, 409, f"container {found.container.id} is not running")
        try:
            options = json.loads(body)
        except ValueError:
            return _error(request, 400, "invalid JSON")
        if not isinstance(options, dict) or options.get("Detach") or options.get("Tty"):
            return _error(request, 400, "the fake serves attached exec without a TTY only")
        found.started = True
        result = runCat(found.cmd, found.container.files, found.container.home)
        found.exitCode = result.exitCode
        found.inspectionsLeft = self.runningInspections
        # Docker hijacks the connection: a bare status line and headers, the
        # stream, then close. No length, no chunking.
        transport: Any = request.channel.transport
        transport.unregisterProducer()  # the channel no longer owns the connection
        transport.write(
            b"HTTP/1.1 200 OK\r\n"
            b"Content-Type: application/vnd.docker.multiplexed-stream\r\n"
            b"Api-Version: " + API_VERSION.encode() + b"\r\n\r\n"
        )
        for offset in range(0, len(result.stdout), _CHUNK):
            transport.write(frame(1, result.stdout[offset : offset + _CHUNK]))
        if result.stderr:
            transport.write(frame(2, result.stderr))
        transport.loseConnection()
        return NOT_DONE_YET

    def _inspectExec(self, request: Request, execId: str) -> bytes:
        found = self.execs.get(execId)
        if found is None:
            return _error(request, 404, f"No such exec instance: {execId}")
        running = found.started and found.inspectionsLeft > 0
        if running:
            found.inspectionsLeft -= 1
        return _json(
            request,
            200,
            {
                "CanRemove": False,
                "ContainerID": found.container.id,
                "DetachKeys": "",
                "ExitCode": None if running or not found.started else found.exitCode,
                "ID": found.id,
                "OpenStderr": True,
                "OpenStdin": False,
                "OpenStdout": True,
                "ProcessConfig": {
                    "arguments": found.cmd[1:],
                    "entrypoint": found.cmd[0],
                    "privileged": False,
                    "tty": False,
                    "user": "",
                },
                "Running": running,
                "Pid": 4242 if running else 0,
            },
        )


def _labelMatches(labels: Mapping[str, str], wanted: str) -> bool:
    key, eq, value = wanted.partition("=")
    if key not in labels:
        return False
    return not eq or labels[key] == value


def _json(request: Request, code: int, obj: object) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    return json.dumps(obj).encode() + b"\n"


def _error(request: Request, code: int, message: str) -> bytes:
    return _json(request, code, {"message": message})
