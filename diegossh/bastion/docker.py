# -*- test-case-name: tests.test_bastion_docker -*-
"""
The Docker Engine API as an L{IContainerEngine}: HTTP on the daemon's unix
socket, running containers found by label, files read with C{exec}.

Paths carry no API version (C{/containers/json}, not C{/v1.41/...}): the
daemon then speaks its own current version, and the few fields read here
(C{Id}, C{Names}, C{Labels}, C{State}, C{NetworkSettings.Networks},
C{ExitCode}) have kept their shape since long before 1.24, while recent
engines refuse old pinned versions (Docker 29 answers 400 below 1.44).
Podman's Docker-compatible socket answers the same paths.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlencode

from twisted.internet.defer import CancelledError
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.internet.task import deferLater
from twisted.web.client import URI, Agent
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory, IResponse
from zope.interface import implementer

from diegossh._http import BodyTooLarge, httpClient, jsonOrNone, readBody
from diegossh.bastion._docker_stream import readExecStream
from diegossh.bastion._engineapi import (
    EngineClient,
    ExecOutput,
    jsonObject,
    printable,
    reasonText,
)
from diegossh.bastion.targets import EngineError, EngineTarget
from diegossh.interfaces import IContainerEngine

__all__ = ["DockerEngine"]

_BASE = "http://docker"
"""The host part is ignored on a unix socket; Docker wants one all the same."""
_MAX_JSON = 16 * 1024 * 1024
_JSON = b"application/json"
_EXEC_ID = re.compile(r"[0-9A-Za-z]{1,128}")
_INSPECT_PAUSE = 0.05
"""Between inspections of an exec whose stream closed but that still runs."""


@implementer(IAgentEndpointFactory)
class _UNIXSocket:
    """Every request goes to the one socket, whatever its URL says."""

    def __init__(self, reactor: Any, path: str, timeout: float) -> None:
        self._reactor = reactor
        self._path = path
        self._timeout = timeout

    def endpointForURI(self, uri: URI) -> UNIXClientEndpoint:
        return UNIXClientEndpoint(self._reactor, self._path, timeout=max(1, int(self._timeout)))


def _checkLabels(labels: Mapping[str, str]) -> dict[str, str]:
    for key in labels:
        if not key or "=" in key:
            raise ValueError(f"{key!r}: a Docker label filter needs a key without '='")
    return dict(labels)


@implementer(IContainerEngine)
class DockerEngine(EngineClient):
    """
    Finds running containers that carry every label in C{labels} and reads
    files inside them, through the Docker daemon at C{socketPath}.

    @param reactor: connects to the socket and times every call.
    @param socketPath: e.g. C{/var/run/docker.sock}.
    @param labels: C{{key: value}}; a container must carry them all.
    @param timeout: seconds each L{listTargets} and each L{readFile} may
        take, all of its requests included.
    @param network: the Docker network whose address a target is dialled
        at; by default the first network (by name) that gave it one.
    """

    kind = "docker"

    def __init__(
        self,
        reactor: Any,
        socketPath: str,
        labels: Mapping[str, str],
        timeout: float,
        network: str | None = None,
    ) -> None:
        self._reactor = reactor
        self._socketPath = socketPath
        self._labels = _checkLabels(labels)
        self._timeout = timeout
        self._network = network
        agent = Agent.usingEndpointFactory(reactor, _UNIXSocket(reactor, socketPath, timeout))
        self._http = httpClient(agent)

    def __repr__(self) -> str:
        return f"<DockerEngine {self._socketPath} labels={self._labels!r}>"

    def _where(self) -> str:
        return f"the Docker engine at {self._socketPath}"

    async def _list(self) -> list[EngineTarget]:
        filters = {
            "label": [f"{key}={value}" for key, value in self._labels.items()],
            "status": ["running"],
        }
        query = urlencode({"filters": json.dumps(filters, separators=(",", ":"))}, quote_via=quote)
        code, body = await self._call("GET", "/containers/json?" + query)
        if code != 200:
            raise self._refused("listing containers", code, body)
        containers = _parseJSON(body, "the container list")
        if not isinstance(containers, list):
            raise EngineError(f"{self._where()} sent a container list that is not a list")
        targets = []
        for container in containers:
            target = self._target(jsonObject(container))
            if target is not None:
                targets.append(target)
        return targets

    def _target(self, container: Mapping[str, Any]) -> EngineTarget | None:
        """The target a container makes, or None when it is not one (yet)."""
        labels = jsonObject(container.get("Labels"))
        if container.get("State") != "running" or any(
            labels.get(key) != value for key, value in self._labels.items()
        ):
            return None  # the daemon filtered already; a compatible API may not have
        names = container.get("Names")
        ident = container.get("Id")
        if not isinstance(ident, str) or not ident or not isinstance(names, list) or not names:
            return None
        name = names[0]
        if not isinstance(name, str) or not name.lstrip("/"):
            return None
        networks = jsonObject(jsonObject(container.get("NetworkSettings")).get("Networks"))
        if self._network is not None:
            candidates = [networks.get(self._network)]
        else:
            candidates = [networks[key] for key in sorted(networks)]
        for network in candidates:
            address = jsonObject(network).get("IPAddress")
            if isinstance(address, str) and address:
                return EngineTarget(name=name.lstrip("/"), id=ident, address=address)
        return None

    async def _read(self, target: EngineTarget, path: str, command: list[str]) -> bytes:
        what = f"cat {path} in container {target.name}"
        code, body = await self._call(
            "POST",
            f"/containers/{quote(target.id, safe='')}/exec",
            {
                "AttachStdin": False,
                "AttachStdout": True,
                "AttachStderr": True,
                "Tty": False,
                "Cmd": command,
            },
        )
        if code == 404:
            raise EngineError(f"container {target.name} is gone")
        if code == 409:
            raise EngineError(f"container {target.name} is not running")
        if code != 201:
            raise self._refused(f"creating an exec in {target.name}", code, body)
        execId = jsonObject(_parseJSON(body, "the exec")).get("Id")
        if not isinstance(execId, str) or not _EXEC_ID.fullmatch(execId):
            raise EngineError(f"{self._where()} sent an exec without a valid Id")

        output = ExecOutput(what)
        response = await self._send(
            "POST", f"/exec/{execId}/start", {"Detach": False, "Tty": False}
        )
        if response.code != 200:
            body = await self._body(response, 64 * 1024)
            if response.code in (404, 409):
                raise EngineError(f"container {target.name} is gone or stopped")
            raise self._refused(f"starting an exec in {target.name}", response.code, body)
        try:
            await readExecStream(response, output)
        except (CancelledError, EngineError):
            raise
        except Exception as e:
            raise EngineError(f"{what}: the exec stream broke: {reasonText(e)}") from None
        return output.result(await self._exitCode(execId, target))

    async def _exitCode(self, execId: str, target: EngineTarget) -> int:
        """
        The exec's exit code. The stream can close a moment before the
        daemon records the exit, so a still-running exec is asked again
        (the call's deadline bounds the asking).
        """
        attempt = 0
        while True:
            code, body = await self._call("GET", f"/exec/{execId}/json")
            if code == 404:
                raise EngineError(f"container {target.name} is gone")
            if code != 200:
                raise self._refused(f"inspecting an exec in {target.name}", code, body)
            info = jsonObject(_parseJSON(body, "the exec"))
            exitCode = info.get("ExitCode")
            if not info.get("Running") and isinstance(exitCode, int):
                return exitCode
            attempt += 1
            await deferLater(self._reactor, _INSPECT_PAUSE * min(attempt, 10))

    async def _send(self, method: str, path: str, body: object = None) -> IResponse:
        """One request; connection failures become L{EngineError}."""
        headers = Headers({b"Accept": [_JSON]})
        data = None
        if body is not None:
            headers.addRawHeader(b"Content-Type", _JSON)
            data = json.dumps(body).encode()
        try:
            response: IResponse = await self._http.request(
                method,
                _BASE + path,
                data=data,
                headers=headers,
                allow_redirects=False,
                unbuffered=True,
            )
        except CancelledError:
            raise
        except Exception as e:
            raise EngineError(f"cannot reach {self._where()}: {reasonText(e)}") from None
        return response

    async def _body(self, response: IResponse, limit: int = _MAX_JSON) -> bytes:
        try:
            return await readBody(response, limit, closeDelimitedOK=True)
        except CancelledError:
            raise
        except BodyTooLarge:
            raise EngineError(f"{self._where()} sent more than {limit} bytes") from None
        except Exception as e:
            raise EngineError(f"{self._where()} broke off its answer: {reasonText(e)}") from None

    async def _call(self, method: str, path: str, body: object = None) -> tuple[int, bytes]:
        response = await self._send(method, path, body)
        return response.code, await self._body(response)

    def _refused(self, doing: str, code: int, body: bytes) -> EngineError:
        message = jsonObject(jsonOrNone(body)).get("message")
        detail = f": {printable(message)}" if isinstance(message, str) else ""
        return EngineError(f"{self._where()} answered HTTP {code} {doing}{detail}")


def _parseJSON(body: bytes, what: str) -> object:
    try:
        return json.loads(body)
    except ValueError:
        raise EngineError(f"the Docker engine sent {what} as invalid JSON") from None
