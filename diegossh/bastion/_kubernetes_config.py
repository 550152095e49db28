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

import yaml
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import SSL
from OpenSSL.crypto import FILETYPE_PEM, X509
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator, IReactorTime
from twisted.internet.ssl import (
    Certificate,
    CertificateOptions,
    KeyPair,
    PrivateCertificate,
    trustRootFromCertificates,
)
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from diegossh.proxy.bbs.tls import MutualTLSPolicy

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
    "tlsPolicy",
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


def _certificates(pem: bytes, where: str) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError:
        certs = []
    if not certs:
        raise ValueError(f"{where}: no PEM certificate found")
    return certs


def _twisted(cert: x509.Certificate) -> Certificate:
    return Certificate.loadPEM(cert.public_bytes(Encoding.PEM))


def _clientIdentity(
    certPEM: bytes | None, keyPEM: bytes | None
) -> tuple[PrivateCertificate | None, list[X509]]:
    if certPEM is None and keyPEM is None:
        return None, []
    if certPEM is None or keyPEM is None:
        raise ValueError("a client certificate needs its key, and a key its certificate")
    leaf, *chain = _certificates(certPEM, "client certificate")
    try:
        keyPair = KeyPair.load(keyPEM, format=FILETYPE_PEM)
    except Exception:
        raise ValueError("client key: not a PEM private key") from None
    identity = PrivateCertificate.fromCertificateAndKeyPair(_twisted(leaf), keyPair)
    if not identity.getPublicKey().matches(keyPair):
        raise ValueError("the client key does not match the client certificate")
    return identity, [X509.from_cryptography(c) for c in chain]


@implementer(IOpenSSLClientConnectionCreator)
class _Unverified:
    """TLS with the server's name sent (SNI) but its certificate not checked."""

    def __init__(self, options: CertificateOptions, hostname: str) -> None:
        self._options = options
        self._hostname = hostname

    def clientConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:
        connection = SSL.Connection(self._options.getContext(), None)
        if not (isIPAddress(self._hostname) or isIPv6Address(self._hostname)):
            connection.set_tlsext_host_name(self._hostname.encode("idna"))
        connection.set_connect_state()
        return connection


@implementer(IPolicyForHTTPS)
class _UnverifiedPolicy:
    def __init__(self, options: CertificateOptions) -> None:
        self._options = options

    def creatorForNetloc(self, hostname: bytes, port: int) -> _Unverified:
        return _Unverified(self._options, hostname.decode("ascii"))


def tlsPolicy(
    caPEM: bytes | None = None,
    clientCertPEM: bytes | None = None,
    clientKeyPEM: bytes | None = None,
    *,
    serverName: str | None = None,
    insecure: bool = False,
) -> IPolicyForHTTPS:
    """
    The TLS policy for an API server: verified against C{caPEM} (the
    system's roots when None) by name (C{serverName} when it differs from
    the URL's host), presenting the client certificate when one is given.
    C{insecure} skips the server's verification, and cannot go with a CA.
    """
    identity, chain = _clientIdentity(clientCertPEM, clientKeyPEM)
    if insecure:
        if caPEM is not None:
            raise ValueError("a CA certificate and insecure-skip-tls-verify exclude each other")
        options: dict[str, Any] = {"verify": False}
        if identity is not None:
            options.update(
                certificate=identity.original,
                privateKey=identity.privateKey.original,
                extraCertChain=chain,
            )
        return _UnverifiedPolicy(CertificateOptions(**options))
    trustRoot = None
    if caPEM is not None:
        trustRoot = trustRootFromCertificates(
            [_twisted(c) for c in _certificates(caPEM, "certificate authority")]
        )
    return MutualTLSPolicy(trustRoot, identity, chain, serverName=serverName)


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
        tlsPolicy=tlsPolicy((directory / "ca.crt").read_bytes()),
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


def _material(entry: Mapping[str, Any], key: str, base: Path, path: Path) -> bytes | None:
    """C{key-data} (base64) or C{key} (a file, relative to the kubeconfig)."""
    data = entry.get(key + "-data")
    if data:
        try:
            return base64.b64decode(str(data), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"{path}: {key}-data is not base64") from None
    name = entry.get(key)
    if name:
        return (base / os.path.expanduser(str(name))).read_bytes()
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
    policy = tlsPolicy(
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
