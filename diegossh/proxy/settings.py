# -*- test-case-name: tests.test_proxy_settings -*-
"""
The proxy's settings, parsed once: L{ProxySettings}, a frozen value built by
L{parseSettings} from the raw mapping L{diegossh.proxy.config.merge} gives
(defaults, config file, environment, flags).

Everything that can be wrong with a setting is found here, at start-up, with
a L{ValueError} that names the flag; assembly (C{tap.makeService}, the realm
plugins' C{build}, a worker's hand-off) then reads typed attributes and never
a string key. Each enabled realm plugin parses its own settings from a
read-only view of the raw mapping (C{IRealmPlugin.parse}); what it returns
travels here, beside the plugin, to its C{build}.

Secrets (the host key, the realms' credentials) stay out of reprs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from twisted.conch.ssh.keys import Key

from diegossh import lager
from diegossh.addresses import parseAddress
from diegossh.proxy.config import deprecatedGiven
from diegossh.proxy.loggregator.settings import LoggregatorSettings, parseLoggregator
from diegossh.proxy.proxyprotocol import ProxyProtocolSettings
from diegossh.ssh import admission
from diegossh.ssh.algorithms import AlgorithmPolicy
from diegossh.ssh.flags import algorithmPolicy, checkHostKey, named
from diegossh.ssh.keys import loadHostKey

# upstream's switches, kept: each enables one of the realms
LEGACY_SWITCHES = {"enableDiegoAuth": "diego", "enableCFAuth": "cf"}


class Refused(ValueError):
    """
    A start-up refusal upstream's ssh-proxy names with a lager message
    (C{lager}, e.g. C{failed-to-parse-host-key}), which the C{ssh-proxy}
    script logs as a fatal line; the text still names the flag.
    """

    def __init__(self, lagerMessage: str, text: str) -> None:
        super().__init__(text)
        self.lager = lagerMessage


@dataclass(frozen=True, slots=True)
class EnabledRealm:
    """
    A realm plugin the operator enabled, with the settings its C{parse}
    returned (handed to its C{build}).
    """

    plugin: Any
    parsed: object

    @property
    def name(self) -> str:
        return str(self.plugin.name)


@dataclass(frozen=True, slots=True)
class BBSSettings:
    """
    Diego's BBS: its address and the mutual-TLS files for it.
    """

    address: str
    caCert: str | None
    clientCert: str | None
    clientKey: str | None
    # bbs_client_session_cache_size: accepted and checked, not used (Twisted
    # gives no hook for client-side TLS session resumption; docs/cloudfoundry.md)
    sessionCacheSize: int | None = None
    # bbs_max_idle_conns_per_host: the pool's maxPersistentPerHost (None: 2)
    maxIdleConnsPerHost: int | None = None


@dataclass(frozen=True, slots=True)
class BackendTLSSettings:
    """
    TLS to the backends (C{--backendsTLSEnabled}): the CAs that verify each
    daemon, and the client certificate to present, if any.
    """

    caCertificates: str
    clientCertificate: str | None
    clientPrivateKey: str | None


@dataclass(frozen=True, slots=True)
class AccessLogSettings:
    """
    Where the access log goes (L{None}: nowhere) and how it rotates.
    """

    path: str | None
    maxBytes: int
    maxFiles: int


@dataclass(frozen=True, slots=True)
class ProxySettings:
    """
    Everything C{makeService} and a worker need, typed and checked.

    C{healthCheckAddress} is L{None} when no health check is served
    (C{--disableHealthCheckServer}, or in a worker); C{inheritedListenFD} is
    set only in a worker, which listens on its parent's socket.
    """

    address: str
    healthCheckAddress: str | None
    policy: AlgorithmPolicy
    hostKey: Key | None = field(repr=False)
    realms: tuple[EnabledRealm, ...]
    lrpDirectory: str | None
    bbs: BBSSettings | None
    connectToInstanceAddress: bool
    backendTLS: BackendTLSSettings | None
    communicationTimeout: float
    idleConnectionTimeout: float
    loginGraceTime: float
    maxAuthTries: int
    admission: admission.AdmissionLimits
    accessLog: AccessLogSettings
    workers: int
    inheritedListenFD: int | None = None
    # lager's level and timestamp format for the ssh-proxy script's log
    # (twistd keeps its own text log), and debugserver's listener (None: off)
    logLevel: str = "info"
    timeFormat: str = "unix-epoch"
    debugAddress: str | None = None
    # "json_key: why" for each deprecated key that was set, warned at start
    deprecated: tuple[str, ...] = ()
    # Loggregator v2 (docs/loggregator.md); None: off, as upstream by default
    loggregator: LoggregatorSettings | None = None
    # The PROXY protocol on the SSH listener (docs/operations.md); None: off
    proxyProtocol: ProxyProtocolSettings | None = None
    # How long sessions may go on after SIGTERM (docs/operations.md); 0: none
    drainTimeout: float = 30.0

    @property
    def usesDirectory(self) -> bool:
        """
        Whether an LRP directory (a local table or BBS) is configured.
        """
        return bool(self.lrpDirectory or self.bbs)


def _checkTLSFiles(flags: str, caFile: str, certFile: str | None, keyFile: str | None) -> None:
    """
    Read and parse TLS files now, so that a missing or broken one stops
    start-up naming the flag and the file, not the first login.
    """
    from diegossh.tls import tlsPolicyFromPEMFiles

    try:
        tlsPolicyFromPEMFiles(caFile, certFile, keyFile)
    except (ValueError, OSError) as e:
        raise ValueError(f"--{flags}: {e}") from None


def _text(raw: Mapping[str, Any], flag: str) -> str | None:
    """
    A string setting, or L{None} when unset or empty.
    """
    value = raw.get(flag)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"--{flag}: {value!r} is not a string")
    return value


def _number(raw: Mapping[str, Any], flag: str) -> float:
    value = raw.get(flag)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"--{flag}: {value!r} is not a number")
    return float(value)


def _count(raw: Mapping[str, Any], flag: str) -> int:
    value = raw.get(flag)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"--{flag}: {value!r} is not a whole number of at least 1")
    return value


def _size(raw: Mapping[str, Any], flag: str) -> int | None:
    """
    A Go size where 0 or unset means "the library's default": L{None}.
    """
    value = raw.get(flag)
    if value is None or value == 0:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"--{flag}: {value!r} is not a whole number")
    return value


def enabledRealms(
    raw: Mapping[str, Any], installed: Mapping[str, Any], requested: Sequence[str]
) -> tuple[EnabledRealm, ...]:
    """
    The realms the legacy switches and C{--realm} name, each with the
    settings its plugin parsed from a read-only view of C{raw}.
    """
    names = [realm for switch, realm in LEGACY_SWITCHES.items() if raw.get(switch)]
    names += list(requested)
    if not names:
        raise ValueError(
            "no auth realm enabled: give --realm NAME (installed: "
            + ", ".join(sorted(installed))
            + ") or --enableDiegoAuth / --enableCFAuth"
        )
    view = MappingProxyType(dict(raw))
    enabled = []
    for name in dict.fromkeys(names):
        plugin = installed.get(name)
        if plugin is None:
            raise ValueError(f"unknown realm {name!r}; installed: {', '.join(sorted(installed))}")
        enabled.append(EnabledRealm(plugin, plugin.parse(view)))
    return tuple(enabled)


def parseSettings(
    raw: Mapping[str, Any], installed: Mapping[str, Any], requested: Sequence[str]
) -> ProxySettings:
    """
    The proxy's settings from the merged raw mapping (flag -> value, as
    L{diegossh.proxy.config.merge} gives it), the installed realm plugins by
    name and the C{--realm} names given.

    @raise ValueError: naming the flag.
    """
    address = _text(raw, "address") or ""
    named("address", parseAddress, address)
    healthCheckAddress = None
    if not raw.get("disableHealthCheckServer"):
        healthCheckAddress = _text(raw, "healthCheckAddress") or ""
        named("healthCheckAddress", parseAddress, healthCheckAddress)
    policy = algorithmPolicy(
        _text(raw, "allowedCiphers"),
        _text(raw, "allowedMACs"),
        _text(raw, "allowedKeyExchanges"),
        _text(raw, "allowedHostKeyAlgorithms"),
    )
    hostKeyText = _text(raw, "hostKey")
    try:
        hostKey = named("hostKey", loadHostKey, hostKeyText) if hostKeyText else None
    except ValueError as e:
        raise Refused("failed-to-parse-host-key", str(e)) from None
    checkHostKey(policy, hostKey)
    logLevel = _text(raw, "logLevel") or "info"
    named("logLevel", lager.parseLogLevel, logLevel)
    timeFormat = _text(raw, "timeFormat") or "unix-epoch"
    named("timeFormat", lager.parseTimeFormat, timeFormat)
    debugAddress = _text(raw, "debugAddr")
    if debugAddress is not None:
        named("debugAddr", parseAddress, debugAddress)
    realms = enabledRealms(raw, installed, requested)
    limits = admission.AdmissionLimits.parse(
        raw["maxStartups"],
        raw["perSourceMaxStartups"],
        raw["perSourcePenalties"] or "yes",
        raw["perSourcePenaltyExemptList"],
        admission.DEFAULT_PENALTIES,
    )
    proxyProtocol = ProxyProtocolSettings.parse(
        bool(raw.get("proxyProtocol")), _text(raw, "proxyProtocolTrusted")
    )
    lrpDirectory = _text(raw, "lrpDirectory")
    bbsAddress = _text(raw, "bbsAddress")
    needsDirectory = any(getattr(each.plugin, "usesDirectory", True) for each in realms)
    if needsDirectory and not lrpDirectory and not bbsAddress:
        raise Refused(
            "bbs-address-required", "give --bbsAddress (Diego) or --lrpDirectory (a local table)"
        )
    bbs = None
    if bbsAddress:
        bbs = BBSSettings(
            bbsAddress, _text(raw, "bbsCACert"), _text(raw, "bbsClientCert"),
            _text(raw, "bbsClientKey"), _size(raw, "bbsClientSessionCacheSize"),
            _size(raw, "bbsMaxIdleConnsPerHost"),
        )  # fmt: skip
        for flag, path in (
            ("bbsCACert", bbs.caCert),
            ("bbsClientCert", bbs.clientCert),
            ("bbsClientKey", bbs.clientKey),
        ):
            if not path:
                raise ValueError(f"--bbsAddress needs --{flag}: BBS is always mutual TLS")
        _checkTLSFiles("bbsCACert, --bbsClientCert, --bbsClientKey", bbs.caCert or "",
                       bbs.clientCert, bbs.clientKey)  # fmt: skip
    backendTLS = None
    if raw.get("backendsTLSEnabled"):
        caCertificates = _text(raw, "backendsTLSCACertificates")
        if not caCertificates:
            raise ValueError("--backendsTLSEnabled needs --backendsTLSCACertificates")
        backendTLS = BackendTLSSettings(
            caCertificates,
            _text(raw, "backendsTLSClientCertificate"),
            _text(raw, "backendsTLSClientPrivateKey"),
        )
        _checkTLSFiles(
            "backendsTLSCACertificates, --backendsTLSClientCertificate, "
            "--backendsTLSClientPrivateKey",
            backendTLS.caCertificates,
            backendTLS.clientCertificate,
            backendTLS.clientPrivateKey,
        )
    try:
        loggregator = parseLoggregator(raw.get("loggregator"))
    except ValueError as e:
        raise Refused("failed-to-initialize-metron-client", str(e)) from None
    return ProxySettings(
        address=address,
        healthCheckAddress=healthCheckAddress,
        policy=policy,
        hostKey=hostKey,
        realms=realms,
        lrpDirectory=lrpDirectory,
        bbs=bbs,
        connectToInstanceAddress=bool(raw.get("connectToInstanceAddress")),
        backendTLS=backendTLS,
        communicationTimeout=_number(raw, "communicationTimeout"),
        idleConnectionTimeout=_number(raw, "idleConnectionTimeout"),
        loginGraceTime=_number(raw, "loginGraceTime"),
        maxAuthTries=_count(raw, "maxAuthTries"),
        admission=limits,
        accessLog=AccessLogSettings(
            _text(raw, "accessLog"),
            _count(raw, "accessLogMaxBytes"),
            _count(raw, "accessLogMaxFiles"),
        ),
        workers=_count(raw, "workers"),
        logLevel=logLevel,
        timeFormat=timeFormat,
        debugAddress=debugAddress,
        deprecated=tuple(deprecatedGiven(dict(raw)).values()),
        loggregator=loggregator,
        proxyProtocol=proxyProtocol,
        drainTimeout=_number(raw, "drainTimeout"),
    )
