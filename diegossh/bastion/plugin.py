# -*- test-case-name: tests.test_bastion_tap -*-
"""
The bastion as a realm plugin (C{--realm bastion}): settings, environment
variables, and the assembly of engine, key cache and realm.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

from twisted.plugin import IPlugin
from zope.interface import implementer

from diegossh.bastion import settings as bastionSettings
from diegossh.proxy.realms import BuiltRealm, IRealmPlugin, PoolService

IN_CLUSTER_HOST = "KUBERNETES_SERVICE_HOST"
# What the Kubernetes engine imports beyond the proxy's own dependencies:
# module -> distribution, both in the diegossh[bastion] extra.
KUBERNETES_MODULES = {"yaml": "pyyaml", "wsproto": "wsproto"}


def chooseEngine(settings: dict[str, Any], environ: dict[str, str]) -> str:
    """
    C{docker}, C{kubernetes} or C{none}. C{auto} means: in a pod (the service
    account's variables are set) or with a kubeconfig, Kubernetes; else Docker.
    """
    if settings["manualAuthFile"]:
        return "none"
    engine = str(settings["containerEngine"])
    if engine != "auto":
        return engine
    if environ.get(IN_CLUSTER_HOST) or settings["kubeconfig"]:
        return "kubernetes"
    return "docker"


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


def buildEngine(reactor: Any, settings: dict[str, Any], environ: dict[str, str]) -> Any:
    kind = chooseEngine(settings, environ)
    labels = bastionSettings.parseLabels(settings["sshTargetLabels"] or "")
    timeout = settings["communicationTimeout"]
    if kind == "none":
        return None
    if kind == "docker":
        from diegossh.bastion.docker import DockerEngine

        socketPath = settings["dockerHost"][len("unix://") :]
        return DockerEngine(reactor, socketPath, labels, timeout, network=settings["dockerNetwork"])
    requireKubernetesModules()
    from diegossh.bastion.kubernetes import KubernetesEngine

    namespace = settings["kubernetesNamespace"]
    if settings["kubeconfig"]:
        return KubernetesEngine.fromKubeconfig(
            reactor, settings["kubeconfig"], labels, timeout, namespace=namespace
        )
    return KubernetesEngine.fromInCluster(reactor, labels, timeout, namespace=namespace)


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

    def check(self, settings: dict[str, Any]) -> None:
        bastionSettings.validate(settings)

    def build(self, reactor: Any, settings: dict[str, Any], directory: Any) -> BuiltRealm:
        from twisted.web.client import Agent

        from diegossh.bastion.keycache import KeyCache
        from diegossh.bastion.policy import TargetPolicy
        from diegossh.bastion.publickey import PublicKeyAPI
        from diegossh.bastion.realm import BastionRealm

        environ = dict(os.environ)
        engine = buildEngine(reactor, settings, environ)
        timeout = settings["communicationTimeout"]
        fetch = None
        pools = PoolService(reactor)
        if engine is not None:
            agent = Agent(reactor, pool=pools.pool(persistent=False))
            port = bastionSettings.parsePort(settings["sshTargetPublickeyApiPort"])
            fetch = PublicKeyAPI(agent, reactor, port, timeout).fetch
        cache = KeyCache(
            reactor,
            engine,
            fetch,
            settings["sshTargetKeyPath"],
            settings["authorizedKeysCache"],
            settings["keyRefreshInterval"],
            settings["keyRefreshMinInterval"],
        )
        policy = TargetPolicy.fromSettings(
            settings["sshPermitTargetHost"], settings["sshPermitTargetPort"]
        )
        # The cache refreshes while the proxy runs: its timer is a service,
        # stopped (last added, first stopped) before the pools close.
        return BuiltRealm(BastionRealm(reactor, cache, policy, timeout), (pools, cache))
