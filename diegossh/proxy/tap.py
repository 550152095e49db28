# -*- test-case-name: tests.test_proxy_settings,tests.test_proxy_protocol -*-
"""
C{twistd diego-ssh-proxy}: options and service assembly.

The flags and JSON keys are upstream ssh-proxy's (L{diegossh.proxy.config}),
so a deployment can switch without rewriting its manifests. C{postOptions}
merges them once and parses the result once into a frozen
L{diegossh.proxy.settings.ProxySettings} (C{self["settings"]}); assembly
reads its attributes and nothing else.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService
from twisted.cred.portal import Portal
from twisted.logger import Logger
from twisted.python import usage

from diegossh import secretargs
from diegossh.addresses import serverEndpoint
from diegossh.debugserver import RecordedLevel, debugService
from diegossh.interfaces import IKeyRealm, IProxyMetrics
from diegossh.proxy import accesslog, readiness, workers
from diegossh.proxy import config as proxyConfig
from diegossh.proxy.backend import connectBackend
from diegossh.proxy.drain import DrainService, DrainState
from diegossh.proxy.health import healthSite
from diegossh.proxy.keylogin import KeyRealmChecker
from diegossh.proxy.login import RealmDispatcher
from diegossh.proxy.metrics import RelayedBytesFlush, building, timed
from diegossh.proxy.pools import PoolService
from diegossh.proxy.realmplugins import installedRealms
from diegossh.proxy.realms import BuiltRealm
from diegossh.proxy.server import ProxyFactory, ProxyRealm
from diegossh.proxy.settings import ProxySettings, parseSettings
from diegossh.proxy.shutdown import ClosingService, LiveConnections, StopInOrder
from diegossh.ssh import admission
from diegossh.ssh.algorithms import AlgorithmPolicy
from diegossh.ssh.keys import hostKeyOrGenerated
from diegossh.ssh.metrics import NO_METRICS

_log = Logger()
_REALMS = installedRealms()
_SETTINGS: proxyConfig.Settings = dict(proxyConfig.SETTINGS)
# environment variable -> flag, for realms whose deployments configure them so
_ENVIRONMENT: dict[str, str] = {}
for _plugin in _REALMS.values():
    _SETTINGS.update(_plugin.settings)
    _ENVIRONMENT.update(getattr(_plugin, "environment", {}))
# secret settings -> their environment variable (config.SECRETS, and any a realm
# plugin declares as C{secrets}); each also has a --SFile setting and variable
_SECRETS: dict[str, str] = dict(proxyConfig.SECRETS)
for _plugin in _REALMS.values():
    _SECRETS.update(getattr(_plugin, "secrets", {}))
_SETTINGS.update(proxyConfig.secretFileSettings(_SECRETS, _SETTINGS))
_ENVIRONMENT.update(proxyConfig.secretEnvironment(_SECRETS))


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "The user-facing SSH endpoint: authenticates a user in an auth realm, finds the "
        "container and relays to the SSH daemon there. Realms installed: "
        + "; ".join(f"{name} ({plugin.description})" for name, plugin in sorted(_REALMS.items()))
    )
    optParameters = [["config", None, None, "JSON config file with upstream's keys."]] + [
        [flag, None, None, f"(JSON: {key}; default {default!r})"]
        for flag, (key, kind, default) in _SETTINGS.items()
        if kind != "bool"
    ]
    optFlags = [
        [flag, None, f"(JSON: {key})"]
        for flag, (key, kind, _) in _SETTINGS.items()
        if kind == "bool"
    ]

    def __init__(self) -> None:
        super().__init__()
        self["realms"] = []

    def opt_realm(self, name: str) -> None:
        """Enable an auth realm by name (repeatable)."""
        self["realms"].append(name)

    # Algorithm lists (by flag) for those neither given nor in the config file:
    # the ssh-proxy script sets upstream's pinned ones; twistd keeps ours.
    algorithmDefaults: dict[str, str] = {}

    def postOptions(self) -> None:
        secretargs.moveOffCommandLine("diego-ssh-proxy", _SECRETS, self.longOpt)
        self.update(secretargs.takeMoved(_SECRETS))
        given = {flag: self[flag] for flag in _SETTINGS}
        try:
            environment = proxyConfig.fromEnvironment(_ENVIRONMENT, dict(os.environ), _SETTINGS)
            for variable in proxyConfig.secretEnvironment(_SECRETS):
                os.environ.pop(variable, None)  # read once; no child inherits it
            raw = proxyConfig.merge(given, self["config"], _SETTINGS, environment)
            for flag, default in self.algorithmDefaults.items():
                if not raw.get(flag):
                    raw[flag] = default
            proxyConfig.resolveSecrets(raw, given, environment, _SECRETS)
            for flag in _SECRETS:
                self[flag] = raw[flag]  # what a worker gets on its stdin
            self["settings"] = parseSettings(raw, _REALMS, self["realms"])
        except ValueError as e:
            name = getattr(e, "lager", None)
            if name is None and isinstance(e, proxyConfig.ConfigError):
                name = "failed-to-parse-config"
            raise Refusal(str(e), name) from None


class Refusal(usage.UsageError):
    """
    Options that cannot start the proxy: the text names the flag, and
    C{lager} is upstream's message for it when upstream has one
    (L{diegossh.proxy.settings.Refused}); the C{ssh-proxy} script logs it.
    """

    def __init__(self, text: str, lager: str | None = None) -> None:
        super().__init__(text)
        self.lager = lager


def _directory(
    reactor: Any, settings: ProxySettings, pools: PoolService, metrics: Any = NO_METRICS
) -> Any:
    """
    The LRP directory: the local table, or the BBS client (its kept-alive
    connections in a pool of C{pools}), or L{None}.
    """
    if not settings.usesDirectory:
        return None  # only realms that find their own targets are enabled
    placement: dict[str, Any] = {
        "connectToInstanceAddress": settings.connectToInstanceAddress,
        "backendsTLSEnabled": settings.backendTLS is not None,
    }
    if settings.lrpDirectory:
        from diegossh.proxy.lrptable import LRPTable

        return LRPTable(settings.lrpDirectory, **placement)
    from diegossh.proxy.bbs import BBSClient
    from diegossh.tls import makeHTTPSAgent, tlsPolicyFromPEMFiles

    bbs = settings.bbs
    assert bbs is not None
    assert bbs.caCert is not None  # parseSettings requires all three files
    policy = tlsPolicyFromPEMFiles(bbs.caCert, bbs.clientCert, bbs.clientKey)
    pool = pools.pool(persistent=True, maxPersistentPerHost=bbs.maxIdleConnsPerHost)
    agent = timed(makeHTTPSAgent(reactor, policy, pool=pool), "bbs", reactor, metrics)
    return BBSClient(
        agent, bbs.address, reactor, communicationTimeout=settings.communicationTimeout,
        **placement,
    )  # fmt: skip


def _backendTLS(settings: ProxySettings) -> Any:
    """
    Each backend's TLS options by server name (the instance guid), verified
    against C{--backendsTLSCACertificates}, presenting the client certificate
    when one is given; L{ValueError} names a file that does not parse.
    """
    tls = settings.backendTLS
    if tls is None:
        return None
    from diegossh.tls import tlsPolicyFromPEMFiles

    return tlsPolicyFromPEMFiles(
        tls.caCertificates, tls.clientCertificate, tls.clientPrivateKey
    ).creatorForName


def _realms(reactor: Any, settings: ProxySettings, directory: Any) -> list[BuiltRealm]:
    """
    Each enabled realm, built, with the services it runs while it serves.
    """
    return [each.plugin.build(reactor, each.parsed, directory) for each in settings.realms]


def _loggregator(reactor: Any, settings: ProxySettings) -> Any:
    """
    The Loggregator emitter when the C{loggregator} object turns v2 on
    (docs/loggregator.md), else L{None}; gRPC is imported only when it starts.
    """
    if settings.loggregator is None:
        return None
    from diegossh.proxy.loggregator import makeEmitter

    each = settings.loggregator
    return makeEmitter(reactor, each.tls, each.identity, each.address, batchSize=each.batchSize)


def _metrics(
    reactor: Any, settings: ProxySettings, parent: bool
) -> tuple[IProxyMetrics, list[IService], dict[bytes, Any] | None]:
    """
    The process's metrics, the services they need, and the debug site's
    C{/metrics} page (the parent's), when the debug listener serves them; else
    L{NO_METRICS}. C{prometheus_client} is imported only then. Under
    C{--workers} every process writes to the parent's directory
    (L{diegossh.proxy.prometheus}: why, and how).
    """
    if settings.debugAddress is None:
        return NO_METRICS, [], None
    from diegossh.proxy import prometheus
    from diegossh.ssh.prometheus import metricsChildren

    services: list[IService] = []
    render = None
    if parent and settings.workers > 1:
        directory = prometheus.MetricsDirectory()
        services.append(directory)
        render = prometheus.multiprocessExposition(directory.path)
    elif not parent and os.environ.get(prometheus.SLOT_VARIABLE, "").isdigit():
        shared = os.environ.get(prometheus.MULTIPROC_VARIABLE)
        if shared:
            prometheus.useMultiprocess(shared, int(os.environ[prometheus.SLOT_VARIABLE]))
    realms = [each.plugin.name for each in settings.realms]
    metrics = prometheus.PrometheusProxyMetrics(realms, settings.policy.keyExchanges)
    if render is None:
        render = metrics.exposition
    services.append(RelayedBytesFlush(metrics, reactor))
    return metrics, services, metricsChildren(render)


def makeService(config: Options) -> IService:
    from twisted.internet import reactor

    settings: ProxySettings = config["settings"]
    # a --workers child (inheritedListenFD) leaves these to its parent
    parent = settings.inheritedListenFD is None
    for deprecated in settings.deprecated if parent else ():
        _log.warn(
            "ignoring deprecated config key {key}",
            key=deprecated,
            lager="deprecated-config-key",
            lager_data={"key": deprecated.partition(":")[0], "reason": deprecated},
        )
    hostKey = hostKeyOrGenerated(settings.hostKey)
    metrics, metricsServices, metricsPages = _metrics(reactor, settings, parent)
    directoryPools = PoolService(reactor)
    directory = _directory(reactor, settings, directoryPools, metrics)
    tlsOptions = _backendTLS(settings)
    policy = settings.policy
    timeout = settings.communicationTimeout

    def connect(target: Any) -> Any:
        return connectBackend(
            reactor, target, AlgorithmPolicy.everything(), timeout, tlsOptions, metrics
        )

    with building(metrics):  # the cf realm's HTTP clients are timed
        built = _realms(reactor, settings, directory)
    realms = [each.realm for each in built]
    keyRealms = [realm for realm in realms if IKeyRealm.providedBy(realm)]
    passwordRealms = [realm for realm in realms if not IKeyRealm.providedBy(realm)]
    checkers: list[Any] = []
    if passwordRealms:
        checkers.append(RealmDispatcher(passwordRealms))
    if keyRealms:
        checkers.append(KeyRealmChecker(keyRealms))
    emitter = _loggregator(reactor, settings)
    telemetry = None
    if emitter is not None:
        from diegossh.proxy.loggregator import ConnectionTelemetry, TargetTelemetry

        telemetry = TargetTelemetry(ConnectionTelemetry(emitter))
    portal = Portal(ProxyRealm(connect, reactor, telemetry, metrics), checkers)
    factory = ProxyFactory(portal, [hostKey], policy, reactor, settings.idleConnectionTimeout)
    factory.loginGraceTime = settings.loginGraceTime
    factory.maxAuthTries = settings.maxAuthTries
    factory.metrics = metrics
    limited = admission.fromSettings(factory, reactor, settings.admission)
    limited.admission.metrics = metrics
    live = LiveConnections(limited.admission, reactor)
    listening: Any = admission.AdmittingFactory(factory, live)
    if settings.proxyProtocol is not None:
        from diegossh.proxy.proxyprotocol import ProxyProtocolFactory

        # admission asked once each balancer's header has given the client
        listening = ProxyProtocolFactory(
            listening, settings.proxyProtocol, reactor, settings.admission.maxStartups.full
        )
    # Started in this order, stopped in the reverse one, each stop awaited
    # (diegossh.proxy.shutdown): the access log is the last to go.
    top = StopInOrder()
    for service in metricsServices:
        service.setServiceParent(top)  # the last to stop: the final counts
    if settings.accessLog.path:
        accesslog.AccessLogService(
            settings.accessLog.path,
            reactor,
            settings.accessLog.maxBytes,
            settings.accessLog.maxFiles,
        ).setServiceParent(top)
    if emitter is not None:
        emitter.setServiceParent(top)  # stops after the connections' last envelopes
    directoryPools.setServiceParent(top)
    for each in built:
        for service in each.services:
            service.setServiceParent(top)
    ClosingService(live, reactor).setServiceParent(top)
    listener: Any = workers.listeningService(reactor, config, listening, metrics)
    listener.setServiceParent(top)
    # SIGTERM drains (diegossh.proxy.drain): 503, the listener, the sessions
    state = DrainState()
    drain = DrainService(state, reactor, reactor.stop, listener.stopAccepting,
                         [live, *([listener] if hasattr(listener, "drain") else [])],
                         timeout=settings.drainTimeout, signals=reactor,
                         metrics=metrics)  # fmt: skip
    if settings.healthCheckAddress is not None:
        routes = readiness.probeFor(directory)
        check = readiness.RouteSourceCheck(routes, reactor) if routes else None
        if check is not None:
            check.setServiceParent(top)
        StreamServerEndpointService(
            serverEndpoint(reactor, settings.healthCheckAddress), healthSite(state, check)
        ).setServiceParent(top)
    if settings.debugAddress is not None and parent:
        # /log-level changes what the ssh-proxy script's lager observer
        # writes (config["logLevelControl"]); under twistd only a held level
        control = config.get("logLevelControl") or RecordedLevel(settings.logLevel)
        debugService(reactor, settings.debugAddress, control, metricsPages).setServiceParent(top)
    drain.setServiceParent(top)  # stopped first: no drain timer runs during the stop
    return top
