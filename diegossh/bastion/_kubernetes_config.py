# -*- test-case-name: tests.test_bastion_kubernetes -*-
"""
Where a Kubernetes API server is and how to be someone there, read from a
pod's service account or from a kubeconfig file.

Everything is read and checked at start-up, so a wrong path or a broken
certificate stops the proxy instead of failing the first login; only a
service account token is read again later (at most once a minute: bound
tokens are rotated by the kubelet while the pod runs).

TLS is verified against the cluster's CA (or the system's roots when a
kubeconfig names none); only C{insecure-skip-tls-verify: true} in the
kubeconfig turns that off, the operator's choice by name.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IPolicyForHTTPS

from diegossh.tls import PEM, tlsPolicyFromPEM

__all__ = [
    "SERVICE_ACCOUNT_DIR",
    "KubernetesAccess",
    "StaticToken",
    "TokenFile",
    "TokenSource",
    "checkAPIURL",
    "checkNamespace",
    "fromInCluster",
    "fromKubeconfig",
]

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
TOKEN_REREAD = 60.0

TokenSource = Callable[[], str | None]
"""Gives the bearer token to send now, or None to send none."""

_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_TOKEN = re.compile(r"[\x21-\x7e]+")


def checkNamespace(namespace: str) -> str:
    if not _NAMESPACE.fullmatch(namespace):
        raise ValueError(f"{namespace!r} is not a Kubernetes namespace name")
    return namespace


def checkAPIURL(url: str) -> str:
    """C{url} without a trailing slash, if it can be an API server's."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname or parts.query:
        raise ValueError(f"{url!r} is not an http(s) URL of a Kubernetes API server")
    parts.port  # noqa: B018 (raises ValueError on a bad port)
    return url.rstrip("/")


def _checkToken(token: str, where: str) -> str:
    token = token.strip()
    if not _TOKEN.fullmatch(token):
        raise ValueError(f"{where}: the token is empty or not printable ASCII")
    return token


class StaticToken:
    """One token for the engine's life; its repr keeps it out of logs."""

    def __init__(self, token: str) -> None:
        self._token = _checkToken(token, "token")

    def __call__(self) -> str:
        return self._token

    def __repr__(self) -> str:
        return "<StaticToken>"


class TokenFile:
    """
    A token kept in a file that its owner rotates (a projected service
    account token): read at start-up, then again when more than
    C{interval} seconds on C{clock} have passed since the last read. A
    failed re-read keeps the token it had.
    """

    def __init__(self, clock: IReactorTime, path: Path, interval: float = TOKEN_REREAD) -> None:
        self._clock = clock
        self._path = path
        self._interval = interval
        self._token = self._read()
        self._readAt = clock.seconds()

    def _read(self) -> str:
        return _checkToken(self._path.read_text("ascii"), str(self._path))

    def __call__(self) -> str:
        now = self._clock.seconds()
        if now - self._readAt >= self._interval:
            self._readAt = now
            try:
                self._token = self._read()
            except (OSError, ValueError):
                pass  # the kubelet rewrites it atomically; next minute will tell
        return self._token

    def __repr__(self) -> str:
        return f"<TokenFile {self._path}>"


@dataclass(frozen=True)
class KubernetesAccess:
    """What L{KubernetesEngine} needs to reach the API as someone."""

    apiURL: str
    namespace: str
    tlsPolicy: IPolicyForHTTPS
    token: TokenSource | None = field(default=None, repr=False)


def fromInCluster(
    clock: IReactorTime,
    namespace: str | None = None,
    directory: Path = SERVICE_ACCOUNT_DIR,
    environ: Mapping[str, str] | None = None,
) -> KubernetesAccess:
    """
    The API as a pod sees it: C{KUBERNETES_SERVICE_HOST}/C{_PORT}, the
    service account's CA, token (re-read as it rotates) and namespace.
    """
    env = os.environ if environ is None else environ
    host = env.get("KUBERNETES_SERVICE_HOST", "")
    port = env.get("KUBERNETES_SERVICE_PORT", "")
    if not host or not port:
        raise ValueError(
            "KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are unset: not in a pod"
        )
    if ":" in host:
        host = f"[{host}]"
    if namespace is None:
        namespace = (directory / "namespace").read_text("utf-8").strip()
    return KubernetesAccess(
        apiURL=checkAPIURL(f"https://{host}:{port}"),
        namespace=checkNamespace(namespace),
        tlsPolicy=tlsPolicyFromPEM(PEM.fromFile(directory / "ca.crt")),
        token=TokenFile(clock, directory / "token"),
    )


def _named(config: Mapping[str, Any], section: str, name: object, path: Path) -> dict[str, Any]:
    """The entry called C{name} in a kubeconfig list such as C{clusters}."""
    entries = config.get(section) or []
    if not isinstance(entries, list):
        raise ValueError(f"{path}: {section} is not a list")
    for entry in entries:
        if isinstance(entry, dict) and entry.get("name") == name:
            body = entry.get(section[:-1]) or {}
            if not isinstance(body, dict):
                raise ValueError(f"{path}: {section[:-1]} {name!r} is not a mapping")
            return body
    raise ValueError(f"{path}: no {section[:-1]} named {name!r}")


def _material(entry: Mapping[str, Any], key: str, base: Path, path: Path) -> PEM | None:
    """
    C{key-data} (base64) or C{key} (a file, relative to the kubeconfig),
    named for the errors of L{tlsPolicyFromPEM}.
    """
    data = entry.get(key + "-data")
    if data:
        try:
            return PEM(base64.b64decode(str(data), validate=True), f"{path}: {key}-data")
        except (binascii.Error, ValueError):
            raise ValueError(f"{path}: {key}-data is not base64") from None
    name = entry.get(key)
    if name:
        return PEM.fromFile(base / os.path.expanduser(str(name)))
    return None


def fromKubeconfig(
    clock: IReactorTime,
    path: str | Path,
    namespace: str | None = None,
    context: str | None = None,
) -> KubernetesAccess:
    """
    The API as kubectl would reach it with the kubeconfig file at C{path}
    and C{context} (the file's current context by default): the cluster's
    server, CA and TLS settings, the user's token or client certificate,
    and the context's namespace (C{default} if none) unless C{namespace}
    is given. Credential plugins (C{exec}, C{auth-provider}), basic auth,
    impersonation and proxies are refused rather than ignored.
    """
    import yaml  # the diegossh[bastion] extra; only kubeconfig files need it

    path = Path(path)
    config = yaml.safe_load(path.read_text("utf-8"))
    if not isinstance(config, dict):
        raise ValueError(f"{path}: not a kubeconfig")
    contextName = context or config.get("current-context")
    if not contextName:
        raise ValueError(f"{path}: no current-context, and no context named")
    ctx = _named(config, "contexts", contextName, path)
    cluster = _named(config, "clusters", ctx.get("cluster"), path)
    user = _named(config, "users", ctx.get("user"), path) if ctx.get("user") else {}
    for unsupported in ("exec", "auth-provider", "username", "password", "as", "as-groups"):
        if user.get(unsupported):
            raise ValueError(f"{path}: user setting {unsupported!r} is not supported")
    if cluster.get("proxy-url"):
        raise ValueError(f"{path}: cluster setting 'proxy-url' is not supported")
    base = path.parent
    server = cluster.get("server")
    if not isinstance(server, str):
        raise ValueError(f"{path}: cluster {ctx.get('cluster')!r} has no server")

    token: TokenSource | None = None
    if user.get("token"):
        token = StaticToken(str(user["token"]))
    elif user.get("tokenFile"):
        token = TokenFile(clock, base / os.path.expanduser(str(user["tokenFile"])))
    insecure = cluster.get("insecure-skip-tls-verify") is True
    serverName = cluster.get("tls-server-name")
    policy = tlsPolicyFromPEM(
        _material(cluster, "certificate-authority", base, path),
        _material(user, "client-certificate", base, path),
        _material(user, "client-key", base, path),
        serverName=str(serverName) if serverName else None,
        insecure=insecure,
    )
    return KubernetesAccess(
        apiURL=checkAPIURL(server),
        namespace=checkNamespace(namespace or str(ctx.get("namespace") or "default")),
        tlsPolicy=policy,
        token=token,
    )
