# -*- test-case-name: tests.test_bastion_tap -*-
"""
The bastion as a realm plugin (C{--realm bastion}): settings, environment
variables, and the assembly of engine, key cache and realm.

Everything is parsed and checked once, at start-up, into a
L{BastionSettings} (L{diegossh.bastion.settings.parse}), the engine C{auto}
stands for included; C{build} reads nothing else, not even the environment.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from typing import Any

from twisted.plugin import IPlugin
from zope.interface import implementer

from diegossh.bastion import settings as bastionSettings
from diegossh.bastion.settings import IN_CLUSTER_HOST, IN_CLUSTER_PORT, BastionSettings
from diegossh.proxy.realms import BuiltRealm, IRealmPlugin, PoolService

# What the Kubernetes engine imports beyond the proxy's own dependencies:
# module -> distribution, both in the diegossh[bastion] extra.
KUBERNETES_MODULES = {"yaml": "pyyaml", "wsproto": "wsproto"}


def requireKubernetesModules() -> None:
    """
    Refuse to start on Kubernetes, with a message saying what to install,
    when the modules only that engine uses are missing. Nothing else in the
    bastion imports them: the Kubernetes modules are imported only once
    that engine is chosen.
    """
    missing = [
        distribution
        for module, distribution in KUBERNETES_MODULES.items()
        if importlib.util.find_spec(module) is None
    ]
    if missing:
        raise ValueError(
            f"the bastion's Kubernetes engine needs {' and '.join(missing)}, which are not "
            "installed: pip install 'diegossh[bastion]' (or choose --containerEngine=docker)"
        )


def buildEngine(reactor: Any, settings: BastionSettings) -> Any:
    """
    The container engine C{settings} chose, or L{None} for C{none}.
    """
    labels = dict(settings.labels)
    timeout = settings.communicationTimeout
    if settings.engine == "none":
        return None
    if settings.engine == "docker":
        from diegossh.bastion.docker import DockerEngine

        assert settings.dockerSocket is not None
        return DockerEngine(
            reactor, settings.dockerSocket, labels, timeout, network=settings.dockerNetwork
        )
    from diegossh.bastion.kubernetes import KubernetesEngine

    namespace = settings.namespace
    if settings.kubeconfig:
        return KubernetesEngine.fromKubeconfig(
            reactor, settings.kubeconfig, labels, timeout, namespace=namespace
        )
    assert settings.inClusterService is not None
    host, port = settings.inClusterService
    return KubernetesEngine.fromInCluster(
        reactor, labels, timeout, namespace=namespace,
        environ={IN_CLUSTER_HOST: host, IN_CLUSTER_PORT: port},
    )  # fmt: skip


@implementer(IPlugin, IRealmPlugin)
class BastionRealmPlugin:
    name = "bastion"
    description = (
        "a bastion for Docker or Kubernetes containers: keys the targets publish, "
        "direct-tcpip tunnels only (ssh -J)"
    )
    settings = bastionSettings.SETTINGS
    environment = bastionSettings.ENVIRONMENT
    secrets: dict[str, str] = {}
    usesDirectory = False

    def parse(self, settings: Mapping[str, Any]) -> BastionSettings:
        parsed = bastionSettings.parse(settings, dict(os.environ))
        if parsed.engine == "kubernetes":
            requireKubernetesModules()  # at start-up, as a usage error
        return parsed

    def build(self, reactor: Any, settings: BastionSettings, directory: Any) -> BuiltRealm:
        from twisted.web.client import Agent

        from diegossh.bastion.keycache import KeyCache
        from diegossh.bastion.publickey import PublicKeyAPI
        from diegossh.bastion.realm import BastionRealm

        engine = buildEngine(reactor, settings)
        timeout = settings.communicationTimeout
        fetch = None
        pools = PoolService(reactor)
        if engine is not None:
            agent = Agent(reactor, pool=pools.pool(persistent=False))
            fetch = PublicKeyAPI(agent, reactor, settings.publicKeyAPIPort, timeout).fetch
        cache = KeyCache(
            reactor,
            engine,
            fetch,
            settings.keyPath,
            settings.authorizedKeysCache,
            settings.keyRefreshInterval,
            settings.keyRefreshMinInterval,
        )
        # The cache refreshes while the proxy runs: its timer is a service,
        # stopped (last added, first stopped) before the pools close.
        realm = BastionRealm(reactor, cache, settings.targetPolicy, timeout)
        return BuiltRealm(realm, (pools, cache))
