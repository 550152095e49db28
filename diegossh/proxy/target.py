# -*- test-case-name: tests.test_target -*-
"""
What a directory lookup yields: the C{diego-ssh} route and the address to dial.

Both directories (BBS and the local table) describe an instance in BBS terms,
an L{NetInfo} with L{PortMapping}s plus the desired LRP's C{diego-ssh} route,
and share L{buildTarget}, so the rule for picking an address (the wire
reference's "Which address to dial") lives in one pure function,
L{chooseAddress}, testable without any network.

The route carries backend credentials. They are kept out of C{repr} and
C{str} because targets end up in log lines.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from diegossh.proxy.errors import LoginDenied

__all__ = [
    "SSH_ROUTE_KEY",
    "DialAddress",
    "DynamicTag",
    "LRPTarget",
    "NetInfo",
    "PortMapping",
    "PreferredAddress",
    "SSHRoute",
    "buildTarget",
    "chooseAddress",
    "resolveMetricTag",
]

SSH_ROUTE_KEY = "diego-ssh"
"""The key of the SSH route in a desired LRP's C{routes} map."""

_MAX_PORT = 65535


class PreferredAddress(enum.IntEnum):
    """C{ActualLRPNetInfo.preferred_address}: which address Diego says to use."""

    UNKNOWN = 0
    INSTANCE = 1
    HOST = 2


class DynamicTag(enum.IntEnum):
    """C{MetricTagValue.dynamic}: a metric tag whose value depends on the instance."""

    INDEX = 1
    INSTANCE_GUID = 2


def resolveMetricTag(static: str, dynamic: int, index: int, instanceGuid: str) -> str:
    """
    The value of one metric tag for one instance: the dynamic value when set
    (Diego's rule), else the static one.
    """
    if dynamic == DynamicTag.INDEX:
        return str(index)
    if dynamic == DynamicTag.INSTANCE_GUID:
        return instanceGuid
    return static


@dataclass(frozen=True)
class PortMapping:
    """One C{PortMapping} of an actual LRP; 0 means "not mapped"."""

    container_port: int
    host_port: int = 0
    container_tls_proxy_port: int = 0
    host_tls_proxy_port: int = 0


@dataclass(frozen=True)
class NetInfo:
    """The parts of C{ActualLRPNetInfo} that decide where to dial."""

    address: str = ""
    instance_address: str = ""
    ports: tuple[PortMapping, ...] = ()
    preferred_address: PreferredAddress = PreferredAddress.UNKNOWN


def _optionalString(obj: Mapping[str, Any], key: str) -> str:
    value = obj.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise LoginDenied(f"invalid {SSH_ROUTE_KEY} route: {key} must be a string")
    return value


@dataclass(frozen=True)
class SSHRoute:
    """
    The C{diego-ssh} route of a desired LRP: which container port the daemon
    listens on, the host key to expect and how to log in to it.
    """

    container_port: int
    host_fingerprint: str = ""
    user: str = ""
    password: str = field(default="", repr=False)
    private_key: str = field(default="", repr=False)

    @classmethod
    def fromMapping(cls, obj: object) -> SSHRoute:
        """
        Validate a decoded route object; raise L{LoginDenied} when it is not
        one, since a broken route means nobody can log in to that app.
        """
        if not isinstance(obj, Mapping):
            raise LoginDenied(f"invalid {SSH_ROUTE_KEY} route: not a JSON object")
        port = obj.get("container_port")
        if port is None:
            raise LoginDenied(f"invalid {SSH_ROUTE_KEY} route: container_port is missing")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port <= _MAX_PORT:
            raise LoginDenied(f"invalid {SSH_ROUTE_KEY} route: container_port is not a port")
        return cls(
            container_port=port,
            host_fingerprint=_optionalString(obj, "host_fingerprint"),
            user=_optionalString(obj, "user"),
            password=_optionalString(obj, "password"),
            private_key=_optionalString(obj, "private_key"),
        )

    @classmethod
    def fromJSON(cls, raw: bytes | str) -> SSHRoute:
        """Parse the route's raw JSON, as BBS stores it in C{ProtoRoutes}."""
        try:
            obj = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise LoginDenied(f"invalid {SSH_ROUTE_KEY} route: not valid JSON") from None
        return cls.fromMapping(obj)

    @classmethod
    def fromRoutes(cls, routes: Mapping[str, bytes | str]) -> SSHRoute:
        """Pick and parse the C{diego-ssh} route from a desired LRP's routes."""
        raw = routes.get(SSH_ROUTE_KEY)
        if raw is None:
            raise LoginDenied(f"the process has no {SSH_ROUTE_KEY} route (ssh is not enabled)")
        return cls.fromJSON(raw)


@dataclass(frozen=True)
class DialAddress:
    """Where to connect: C{tls_port} is L{None} when the backend is dialled in clear."""

    host: str
    port: int
    tls_port: int | None = None


def chooseAddress(
    netInfo: NetInfo,
    containerPort: int,
    *,
    connectToInstanceAddress: bool,
    backendsTLSEnabled: bool,
) -> DialAddress:
    """
    Which address and port to dial (docs/bbs.md, "Which address is dialled").

    The mapping whose C{container_port} is the route's wins. Diego's
    C{preferred_address} overrides the proxy's C{connectToInstanceAddress}
    unless it is C{UNKNOWN}. With backend TLS on, a mapping without a TLS
    proxy port (0) denies the login: unlike upstream, never a silent fallback
    to plain TCP.
    """
    mapping = next((m for m in netInfo.ports if m.container_port == containerPort), None)
    if mapping is None:
        raise LoginDenied(
            f"the instance has no port mapping for the ssh container port {containerPort}"
        )
    preferred = netInfo.preferred_address
    if preferred == PreferredAddress.INSTANCE:
        instance = True
    elif preferred == PreferredAddress.HOST:
        instance = False
    else:
        instance = connectToInstanceAddress

    if instance:
        host, port, tlsPort = (
            netInfo.instance_address,
            mapping.container_port,
            mapping.container_tls_proxy_port,
        )
        if not host:
            raise LoginDenied("the instance has no instance address to connect to")
    else:
        host, port, tlsPort = netInfo.address, mapping.host_port, mapping.host_tls_proxy_port
        if not host or not port:
            raise LoginDenied(
                f"the instance has no host address for the ssh container port {containerPort}"
            )
    if backendsTLSEnabled and not tlsPort:
        raise LoginDenied(
            f"backend TLS is on but the instance has no TLS port for container port {containerPort}"
        )
    return DialAddress(host=host, port=port, tls_port=tlsPort if backendsTLSEnabled else None)


@dataclass(frozen=True)
class LRPTarget:
    """
    One instance to relay a login to, with everything the relay and the
    access log need. C{tls_server_name} is the name to verify when
    C{tls_port} is set: Diego's instance guid.
    """

    process_guid: str
    index: int
    instance_guid: str
    host: str
    port: int
    route: SSHRoute
    tls_port: int | None = None
    tls_server_name: str = ""
    log_guid: str = ""
    cell_id: str = ""
    metric_tags: Mapping[str, str] = field(default_factory=dict, hash=False)

    @property
    def address(self) -> str:
        """C{host:port} of the clear-text endpoint, IPv6 hosts bracketed."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def buildTarget(
    processGuid: str,
    index: int,
    instanceGuid: str,
    netInfo: NetInfo,
    route: SSHRoute,
    *,
    connectToInstanceAddress: bool,
    backendsTLSEnabled: bool,
    logGuid: str = "",
    cellId: str = "",
    metricTags: Mapping[str, str] | None = None,
) -> LRPTarget:
    """Combine an instance's net info and its route into an L{LRPTarget}."""
    dial = chooseAddress(
        netInfo,
        route.container_port,
        connectToInstanceAddress=connectToInstanceAddress,
        backendsTLSEnabled=backendsTLSEnabled,
    )
    return LRPTarget(
        process_guid=processGuid,
        index=index,
        instance_guid=instanceGuid,
        host=dial.host,
        port=dial.port,
        route=route,
        tls_port=dial.tls_port,
        tls_server_name=instanceGuid,
        log_guid=logGuid,
        cell_id=cellId,
        metric_tags=dict(metricTags or {}),
    )
