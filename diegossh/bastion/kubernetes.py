# -*- test-case-name: tests.test_bastion_kubernetes -*-
"""
The Kubernetes API as an L{IContainerEngine}: running pods of one
namespace found by label selector, files read with C{pods/exec} over
WebSocket.

The service account (or kubeconfig user) needs, in that namespace,
C{list} on C{pods} (targets are only ever listed, never fetched one by
one) and C{create} on C{pods/exec} (clusters before 1.31 check C{get} on
C{pods/exec} for a WebSocket exec instead: grant both).

Build one with L{KubernetesEngine.fromInCluster} in a pod, with
L{KubernetesEngine.fromKubeconfig} elsewhere, or with the constructor
from parts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from twisted.internet.defer import CancelledError
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol, wrapClientTLS
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.web.client import Agent
from twisted.web.http_headers import Headers
from twisted.web.iweb import IPolicyForHTTPS, IResponse
from zope.interface import implementer

from diegossh._http import BodyTooLarge, httpClient, jsonOrNone, readBody
from diegossh.bastion._engineapi import (
    EngineClient,
    ExecOutput,
    jsonObject,
    printable,
    reasonText,
)
from diegossh.bastion._kubernetes_config import (
    SERVICE_ACCOUNT_DIR,
    KubernetesAccess,
    TokenSource,
    checkAPIURL,
    checkNamespace,
    fromInCluster,
    fromKubeconfig,
)
from diegossh.bastion._kubernetes_exec import ExecProtocol
from diegossh.bastion.targets import EngineError, EngineTarget
from diegossh.interfaces import IContainerEngine

__all__ = ["KubernetesAccess", "KubernetesEngine"]

_MAX_LIST = 64 * 1024 * 1024
"""A pod is a few KiB of JSON; thousands fit."""
_MAX_ERROR = 64 * 1024
_JSON = b"application/json"
_USER_AGENT = b"diegossh-bastion"
_LABEL_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_LABEL_KEY = re.compile(
    r"([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?" + _LABEL_NAME
)
_LABEL_VALUE = re.compile(f"({_LABEL_NAME})?")


def _checkLabels(labels: Mapping[str, str]) -> dict[str, str]:
    """Label syntax as Kubernetes has it, so the selector means what it says."""
    for key, value in labels.items():
        prefix = key.rpartition("/")[0]
        if not _LABEL_KEY.fullmatch(key) or len(prefix) > 253:
            raise ValueError(f"{key!r} is not a Kubernetes label key")
        if not _LABEL_VALUE.fullmatch(value):
            raise ValueError(f"{value!r} (label {key}) is not a Kubernetes label value")
    return dict(labels)


@implementer(IContainerEngine)
class KubernetesEngine(EngineClient):
    """
    Finds running pods in C{namespace} that carry every label in C{labels}
    and reads files inside them.

    @param reactor: connects, and times every call.
    @param apiURL: the API server, e.g. C{https://10.96.0.1:443}; a path
        (a proxy's prefix) is kept.
    @param timeout: seconds each L{listTargets} and each L{readFile} may
        take, connection and TLS included.
    @param tlsPolicy: how the server is verified and who we are in TLS
        (see L{diegossh.tls.tlsPolicyFromPEM}).
    @param token: gives the bearer token for each call (or None: no token,
        e.g. with a client certificate).
    @param container: the container to exec in, for pods with more than
        one (sidecars); Kubernetes refuses to guess.
    """

    kind = "kubernetes"

    def __init__(
        self,
        reactor: Any,
        apiURL: str,
        namespace: str,
        labels: Mapping[str, str],
        timeout: float,
        tlsPolicy: IPolicyForHTTPS,
        token: TokenSource | None = None,
        *,
        container: str | None = None,
    ) -> None:
        self._reactor = reactor
        self._apiURL = checkAPIURL(apiURL)
        self._namespace = checkNamespace(namespace)
        self._labels = _checkLabels(labels)
        self._timeout = timeout
        self._tlsPolicy = tlsPolicy
        self._token = token
        self._container = container
        self._http = httpClient(Agent(reactor, contextFactory=tlsPolicy, connectTimeout=timeout))

    @classmethod
    def fromAccess(
        cls,
        reactor: Any,
        access: KubernetesAccess,
        labels: Mapping[str, str],
        timeout: float,
        *,
        container: str | None = None,
    ) -> KubernetesEngine:
        return cls(
            reactor,
            access.apiURL,
            access.namespace,
            labels,
            timeout,
            access.tlsPolicy,
            access.token,
            container=container,
        )

    @classmethod
    def fromInCluster(
        cls,
        reactor: Any,
        labels: Mapping[str, str],
        timeout: float,
        namespace: str | None = None,
        *,
        directory: str | Path = SERVICE_ACCOUNT_DIR,
        environ: Mapping[str, str] | None = None,
        container: str | None = None,
    ) -> KubernetesEngine:
        """
        The engine for a proxy running in a pod, as its service account;
        C{namespace} defaults to the pod's own. C{directory} and
        C{environ} say where the account and the service address are (the
        standard places by default). Raises L{ValueError} or L{OSError}.
        """
        access = fromInCluster(reactor, namespace, Path(directory), environ)
        return cls.fromAccess(reactor, access, labels, timeout, container=container)

    @classmethod
    def fromKubeconfig(
        cls,
        reactor: Any,
        path: str | Path,
        labels: Mapping[str, str],
        timeout: float,
        namespace: str | None = None,
        context: str | None = None,
        *,
        container: str | None = None,
    ) -> KubernetesEngine:
        """
        The engine as the kubeconfig at C{path} says (see
        L{diegossh.bastion._kubernetes_config.fromKubeconfig}). Raises
        L{ValueError} or L{OSError}.
        """
        access = fromKubeconfig(reactor, path, namespace, context)
        return cls.fromAccess(reactor, access, labels, timeout, container=container)

    def __repr__(self) -> str:
        return f"<KubernetesEngine {self._apiURL} namespace={self._namespace}>"

    @property
    def namespace(self) -> str:
        return self._namespace

    def _where(self) -> str:
        return f"the Kubernetes API at {self._apiURL}"

    def _headers(self) -> list[tuple[bytes, bytes]]:
        headers = [(b"Accept", _JSON), (b"User-Agent", _USER_AGENT)]
        token = self._token() if self._token is not None else None
        if token:
            headers.append((b"Authorization", b"Bearer " + token.encode("ascii")))
        return headers

    def _podsPath(self) -> str:
        return f"{urlsplit(self._apiURL).path}/api/v1/namespaces/{self._namespace}/pods"

    async def _list(self) -> list[EngineTarget]:
        query = [("fieldSelector", "status.phase=Running")]
        if self._labels:
            selector = ",".join(f"{key}={value}" for key, value in self._labels.items())
            query.insert(0, ("labelSelector", selector))
        url = self._origin() + self._podsPath() + "?" + urlencode(query, quote_via=quote)
        headers = Headers()
        for name, value in self._headers():
            headers.addRawHeader(name, value)
        try:
            response: IResponse = await self._http.get(
                url, headers=headers, allow_redirects=False, unbuffered=True
            )
        except CancelledError:
            raise
        except Exception as e:
            raise EngineError(f"cannot reach {self._where()}: {reasonText(e)}") from None
        body = await self._body(response, _MAX_LIST if response.code == 200 else _MAX_ERROR)
        if response.code == 401:
            raise EngineError(f"{self._where()} refused the credentials (HTTP 401)")
        if response.code != 200:
            message = jsonObject(jsonOrNone(body)).get("message")
            detail = f": {printable(message)}" if isinstance(message, str) else ""
            raise EngineError(f"{self._where()} answered HTTP {response.code} listing pods{detail}")
        podList = jsonObject(jsonOrNone(body))
        items = podList.get("items")
        if podList.get("kind") != "PodList" or not isinstance(items, list):
            raise EngineError(f"{self._where()} did not send a PodList")
        targets = []
        for pod in items:
            target = self._target(jsonObject(pod))
            if target is not None:
                targets.append(target)
        return targets

    def _target(self, pod: Mapping[str, Any]) -> EngineTarget | None:
        """The target a pod makes, or None when it is not one (now)."""
        metadata = jsonObject(pod.get("metadata"))
        status = jsonObject(pod.get("status"))
        labels = jsonObject(metadata.get("labels"))
        if (
            metadata.get("deletionTimestamp")
            or status.get("phase") != "Running"
            or any(labels.get(key) != value for key, value in self._labels.items())
        ):
            return None
        name, uid, address = metadata.get("name"), metadata.get("uid"), status.get("podIP")
        if not all(isinstance(v, str) and v for v in (name, uid, address)):
            return None
        return EngineTarget(name=str(name), id=str(uid), address=str(address))

    async def _body(self, response: IResponse, limit: int) -> bytes:
        try:
            return await readBody(response, limit, closeDelimitedOK=True)
        except CancelledError:
            raise
        except BodyTooLarge:
            raise EngineError(f"{self._where()} sent more than {limit} bytes") from None
        except Exception as e:
            raise EngineError(f"{self._where()} broke off its answer: {reasonText(e)}") from None

    def _origin(self) -> str:
        parts = urlsplit(self._apiURL)
        return f"{parts.scheme}://{parts.netloc}"

    def _endpoint(self) -> IStreamClientEndpoint:
        parts = urlsplit(self._apiURL)
        assert parts.hostname is not None
        secure = parts.scheme == "https"
        port = parts.port or (443 if secure else 80)
        tcp = HostnameEndpoint(self._reactor, parts.hostname, port, timeout=self._timeout)
        if not secure:
            return tcp
        creator = self._tlsPolicy.creatorForNetloc(parts.hostname.encode("idna"), port)
        return wrapClientTLS(creator, tcp)

    async def _read(self, target: EngineTarget, path: str, command: list[str]) -> bytes:
        query = [("command", arg) for arg in command] + [("stdout", "true"), ("stderr", "true")]
        if self._container is not None:
            query.append(("container", self._container))
        resource = f"{self._podsPath()}/{quote(target.name, safe='')}/exec?" + urlencode(
            query, quote_via=quote
        )
        output = ExecOutput(f"cat {path} in pod {target.name}")
        protocol = ExecProtocol(
            urlsplit(self._apiURL).netloc,
            resource,
            self._headers(),
            output,
            self._where(),
            target.name,
        )
        try:
            await connectProtocol(self._endpoint(), protocol)
        except CancelledError:
            raise
        except Exception as e:
            raise EngineError(f"cannot reach {self._where()}: {reasonText(e)}") from None
        return output.result(await protocol.done)
