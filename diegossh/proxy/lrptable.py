# -*- test-case-name: tests.test_lrptable -*-
"""
L{LRPTable}: an L{ILRPDirectory} read from a local JSON file
(C{--lrpDirectory FILE.json}), for running the proxy without Diego.

The file mirrors BBS: per process, the desired LRP's C{routes},
C{log_guid} and C{metric_tags}, and its instances with BBS's net info
(C{address}, C{instance_address}, C{preferred_address}, C{ports}) or, for
the simple case, a direct C{host}/C{port}. The format is described in
C{docs/lrp-directory.md}.

The file is validated entirely at load, with errors that name the offending
field. Each lookup compares the file's mtime, size and inode with the loaded
version and reloads on change; a broken edit is logged and the previous
table kept, so a typo does not lock everyone out.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from zope.interface import implementer

from diegossh.interfaces import ILRPDirectory
from diegossh.proxy.errors import LoginDenied
from diegossh.proxy.target import (
    SSH_ROUTE_KEY,
    DynamicTag,
    LRPTarget,
    NetInfo,
    PortMapping,
    PreferredAddress,
    SSHRoute,
    buildTarget,
    resolveMetricTag,
)

__all__ = ["LRPTable", "LRPTableError", "TableEntry", "parseLRPTable"]

_INT32_MAX = 2**31 - 1


class LRPTableError(ValueError):
    """The LRP directory file is unreadable or invalid; the message says where."""


@dataclass(frozen=True)
class TableEntry:
    """One instance as the table describes it, ready for L{buildTarget}."""

    processGuid: str
    index: int
    instanceGuid: str
    cellId: str
    netInfo: NetInfo
    route: SSHRoute | None
    routeError: str | None
    logGuid: str
    metricTags: Mapping[str, tuple[str, int]]


def _fail(where: str, message: str) -> LRPTableError:
    return LRPTableError(f"{where}: {message}")


def _object(value: object, where: str, allowed: set[str], required: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(where, "must be a JSON object")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise _fail(where, f"unknown field(s) {', '.join(unknown)}")
    missing = sorted(required - set(value))
    if missing:
        raise _fail(where, f"missing field(s) {', '.join(missing)}")
    return value


def _string(obj: Mapping[str, Any], key: str, where: str, default: str = "") -> str:
    value = obj.get(key, default)
    if not isinstance(value, str):
        raise _fail(f"{where}.{key}", "must be a string")
    return value


def _integer(
    obj: Mapping[str, Any], key: str, where: str, low: int, high: int, default: int = 0
) -> int:
    value = obj.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _fail(f"{where}.{key}", f"must be an integer from {low} to {high}")
    return value


def _list(obj: Mapping[str, Any], key: str, where: str) -> list[Any]:
    value = obj.get(key, [])
    if not isinstance(value, list):
        raise _fail(f"{where}.{key}", "must be a JSON array")
    return value


_PORT_FIELDS = ("container_port", "host_port", "container_tls_proxy_port", "host_tls_proxy_port")


def _portMapping(value: object, where: str) -> PortMapping:
    obj = _object(value, where, set(_PORT_FIELDS), {"container_port"})
    ports = [_integer(obj, name, where, 0, 65535) for name in _PORT_FIELDS]
    if ports[0] == 0:
        raise _fail(f"{where}.container_port", "must be an integer from 1 to 65535")
    return PortMapping(*ports)


def _preferred(obj: Mapping[str, Any], where: str) -> PreferredAddress:
    name = _string(obj, "preferred_address", where, "UNKNOWN")
    try:
        return PreferredAddress[name]
    except KeyError:
        raise _fail(f"{where}.preferred_address", "must be UNKNOWN, INSTANCE or HOST") from None


def _netInfo(obj: Mapping[str, Any], where: str, route: SSHRoute | None) -> NetInfo:
    direct = "host" in obj or "port" in obj
    if direct:
        clash = sorted({"address", "instance_address", "ports", "preferred_address"} & set(obj))
        if clash:
            raise _fail(where, f"host/port cannot be combined with {', '.join(clash)}")
        if "host" not in obj or "port" not in obj:
            raise _fail(where, "host and port go together")
        host = _string(obj, "host", where)
        port = _integer(obj, "port", where, 1, 65535)
        tlsPort = _integer(obj, "tls_port", where, 0, 65535)
        if not host:
            raise _fail(f"{where}.host", "must not be empty")
        # The route's container port is what maps to this host port: a
        # direct entry is exactly one BBS port mapping, in host mode.
        containerPort = route.container_port if route else 0
        return NetInfo(
            address=host,
            ports=(PortMapping(containerPort, port, 0, tlsPort),) if containerPort else (),
            preferred_address=PreferredAddress.HOST,
        )
    if "tls_port" in obj:
        raise _fail(f"{where}.tls_port", "only with host/port; use ports[] otherwise")
    return NetInfo(
        address=_string(obj, "address", where),
        instance_address=_string(obj, "instance_address", where),
        ports=tuple(
            _portMapping(p, f"{where}.ports[{i}]") for i, p in enumerate(_list(obj, "ports", where))
        ),
        preferred_address=_preferred(obj, where),
    )


def _metricTags(value: object, where: str) -> dict[str, tuple[str, int]]:
    if not isinstance(value, dict):
        raise _fail(where, "must be a JSON object")
    tags: dict[str, tuple[str, int]] = {}
    for name, tag in value.items():
        here = f"{where}.{name}"
        obj = _object(tag, here, {"static", "dynamic"}, set())
        dynamicName = _string(obj, "dynamic", here)
        dynamic = 0
        if dynamicName:
            try:
                dynamic = DynamicTag[dynamicName]
            except KeyError:
                raise _fail(f"{here}.dynamic", "must be INDEX or INSTANCE_GUID") from None
        tags[name] = (_string(obj, "static", here), dynamic)
    return tags


_LRP_FIELDS = {"process_guid", "log_guid", "routes", "metric_tags", "instances"}
_INSTANCE_FIELDS = {
    "index",
    "instance_guid",
    "cell_id",
    "address",
    "instance_address",
    "preferred_address",
    "ports",
    "host",
    "port",
    "tls_port",
}


def _lrp(value: object, where: str) -> list[TableEntry]:
    obj = _object(value, where, _LRP_FIELDS, {"process_guid", "instances"})
    processGuid = _string(obj, "process_guid", where)
    if not processGuid:
        raise _fail(f"{where}.process_guid", "must not be empty")
    routes = obj.get("routes", {})
    if not isinstance(routes, dict):
        raise _fail(f"{where}.routes", "must be a JSON object")
    route: SSHRoute | None = None
    routeError: str | None = f"the process has no {SSH_ROUTE_KEY} route (ssh is not enabled)"
    if SSH_ROUTE_KEY in routes:
        try:
            route = SSHRoute.fromMapping(routes[SSH_ROUTE_KEY])
        except LoginDenied as e:
            raise _fail(f"{where}.routes.{SSH_ROUTE_KEY}", e.reason) from None
        routeError = None
    logGuid = _string(obj, "log_guid", where)
    tags = _metricTags(obj.get("metric_tags", {}), f"{where}.metric_tags")
    entries = []
    for i, instance in enumerate(_list(obj, "instances", where)):
        here = f"{where}.instances[{i}]"
        inst = _object(instance, here, _INSTANCE_FIELDS, {"index", "instance_guid"})
        entries.append(
            TableEntry(
                processGuid=processGuid,
                index=_integer(inst, "index", here, 0, _INT32_MAX),
                instanceGuid=_string(inst, "instance_guid", here),
                cellId=_string(inst, "cell_id", here),
                netInfo=_netInfo(inst, here, route),
                route=route,
                routeError=routeError,
                logGuid=logGuid,
                metricTags=tags,
            )
        )
    return entries


def parseLRPTable(
    text: str | bytes, source: str = "<lrp directory>"
) -> dict[tuple[str, int], TableEntry]:
    """
    Validate a whole table; raise L{LRPTableError} naming C{source} and the
    field at fault.
    """
    try:
        document = json.loads(text)
    except (ValueError, UnicodeDecodeError) as e:
        raise LRPTableError(f"{source}: not valid JSON: {e}") from None
    top = _object(document, source, {"lrps"}, {"lrps"})
    table: dict[tuple[str, int], TableEntry] = {}
    for i, lrp in enumerate(_list(top, "lrps", source)):
        for entry in _lrp(lrp, f"{source}: lrps[{i}]"):
            key = (entry.processGuid, entry.index)
            if key in table:
                raise LRPTableError(
                    f"{source}: lrps[{i}]: instance {entry.index} of {entry.processGuid} "
                    "is listed twice"
                )
            table[key] = entry
    return table


def _stamp(path: Path) -> tuple[int, int, int]:
    st = os.stat(path)
    return (st.st_mtime_ns, st.st_size, st.st_ino)


@implementer(ILRPDirectory)
class LRPTable:
    """
    The local LRP directory. Raises L{LRPTableError} at construction when the
    file is missing or invalid: a proxy should not start on a broken table.
    """

    log = Logger()

    def __init__(
        self,
        path: str | Path,
        *,
        connectToInstanceAddress: bool = False,
        backendsTLSEnabled: bool = False,
    ) -> None:
        self.path = Path(path)
        self._connectToInstanceAddress = connectToInstanceAddress
        self._backendsTLSEnabled = backendsTLSEnabled
        self._invalid: str | None = None  # why the file's current content is not in use
        try:
            self._stamp = _stamp(self.path)
            text = self.path.read_bytes()
        except OSError as e:
            raise LRPTableError(f"{self.path}: cannot read: {e.strerror}") from None
        self._table = parseLRPTable(text, str(self.path))

    def _reloadIfChanged(self) -> None:
        try:
            stamp = _stamp(self.path)
            if stamp == self._stamp:
                return
            text = self.path.read_bytes()
            self._stamp = stamp
            self._table = parseLRPTable(text, str(self.path))
            self._invalid = None
        except OSError as e:
            self.log.error(
                "LRP directory {path} unreadable, keeping the previous table: {error}",
                path=str(self.path),
                error=e.strerror,
            )
        except LRPTableError as e:
            self._invalid = str(e)
            self.log.error(
                "LRP directory invalid, keeping the previous table: {error}", error=str(e)
            )
        else:
            self.log.info(
                "LRP directory {path} reloaded: {count} instances",
                path=str(self.path),
                count=len(self._table),
            )

    def check(self) -> None:
        """
        Raise L{LRPTableError} unless the file can be opened now and its
        current content is the table in use (readiness:
        L{diegossh.proxy.readiness}); a changed file is loaded, as a lookup
        would.
        """
        try:
            stamp = _stamp(self.path)
            with self.path.open("rb"):
                pass
        except OSError as e:
            raise LRPTableError(f"{self.path}: cannot read: {e.strerror}") from None
        if stamp != self._stamp:
            self._reloadIfChanged()
        if self._invalid is not None:
            raise LRPTableError(self._invalid)

    def lookup(self, processGuid: str, index: int) -> Deferred[LRPTarget]:
        """See L{ILRPDirectory.lookup}."""
        self._reloadIfChanged()
        entry = self._table.get((processGuid, index))
        try:
            if entry is None:
                raise LoginDenied(f"no instance {index} of process {processGuid}")
            if entry.route is None:
                raise LoginDenied(entry.routeError or f"no {SSH_ROUTE_KEY} route")
            target = buildTarget(
                processGuid,
                index,
                entry.instanceGuid,
                entry.netInfo,
                entry.route,
                connectToInstanceAddress=self._connectToInstanceAddress,
                backendsTLSEnabled=self._backendsTLSEnabled,
                logGuid=entry.logGuid,
                cellId=entry.cellId,
                metricTags={
                    name: resolveMetricTag(static, dynamic, index, entry.instanceGuid)
                    for name, (static, dynamic) in entry.metricTags.items()
                },
            )
        except LoginDenied as e:
            return fail(e)
        return succeed(target)
