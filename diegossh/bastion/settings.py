# -*- test-case-name: tests.test_bastion_settings -*-
"""
The bastion realm's settings: flags and JSON keys like the proxy's others,
and the environment variables of ml-tooling's ssh-proxy, so a container
that configured that bastion configures this one.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from diegossh.bastion.policy import TargetPolicy

# flag -> (JSON key, kind, default)
SETTINGS: dict[str, tuple[str, str, Any]] = {
    "containerEngine": ("container_engine", "str", "auto"),
    "dockerHost": ("docker_host", "str", "unix:///var/run/docker.sock"),
    "dockerNetwork": ("docker_network", "str", None),
    "kubeconfig": ("kubeconfig", "str", None),
    "kubernetesNamespace": ("kubernetes_namespace", "str", None),
    "sshTargetLabels": ("ssh_target_labels", "str", ""),
    "sshTargetPublickeyApiPort": ("ssh_target_publickey_api_port", "str", "8080"),
    "sshTargetKeyPath": ("ssh_target_key_path", "str", "~/.ssh/id_ed25519.pub"),
    "manualAuthFile": ("manual_auth_file", "bool", False),
    "authorizedKeysCache": ("authorized_keys_cache", "str", "/etc/ssh/authorized_keys_cache"),
    "sshPermitTargetHost": ("ssh_permit_target_host", "str", "*"),
    "sshPermitTargetPort": ("ssh_permit_target_port", "str", "*"),
    "keyRefreshInterval": ("key_refresh_interval", "duration", 60.0),
    "keyRefreshMinInterval": ("key_refresh_min_interval", "duration", 5.0),
}

# environment variable -> flag
ENVIRONMENT: dict[str, str] = {
    "SSH_CONTAINER_ENGINE": "containerEngine",
    "DOCKER_HOST": "dockerHost",
    "SSH_TARGET_NETWORK": "dockerNetwork",
    "KUBECONFIG": "kubeconfig",
    "SSH_TARGET_NAMESPACE": "kubernetesNamespace",
    "SSH_TARGET_LABELS": "sshTargetLabels",
    "SSH_TARGET_PUBLICKEY_API_PORT": "sshTargetPublickeyApiPort",
    "SSH_TARGET_KEY_PATH": "sshTargetKeyPath",
    "MANUAL_AUTH_FILE": "manualAuthFile",
    "SSH_AUTHORIZED_KEYS_CACHE": "authorizedKeysCache",
    "SSH_PERMIT_TARGET_HOST": "sshPermitTargetHost",
    "SSH_PERMIT_TARGET_PORT": "sshPermitTargetPort",
    "SSH_KEY_REFRESH_INTERVAL": "keyRefreshInterval",
    "SSH_KEY_REFRESH_MIN_INTERVAL": "keyRefreshMinInterval",
}

# flag -> environment variable
_VARIABLES = {flag: variable for variable, flag in ENVIRONMENT.items()}

ENGINES = ("auto", "docker", "kubernetes", "none")

_LABEL_KEY = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._/-]*[A-Za-z0-9])?")


def parseLabels(text: str) -> dict[str, str]:
    """
    C{a=1,b=2} as a dict; every label must match. Empty means no filter.
    """
    labels: dict[str, str] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        key, equals, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not equals or not _LABEL_KEY.fullmatch(key):
            raise ValueError(f"SSH_TARGET_LABELS: {part!r} is not label=value")
        if "," in value or "=" in value:
            raise ValueError(f"SSH_TARGET_LABELS: {part!r} is not label=value")
        labels[key] = value
    return labels


def parsePort(text: str) -> int:
    """
    A TCP port number, 1 to 65535.
    """
    if not re.fullmatch(r"[0-9]{1,5}", text.strip()) or not 0 < int(text) < 65536:
        raise ValueError(f"{text!r} is not a TCP port")
    return int(text)


T = TypeVar("T")
IN_CLUSTER_HOST = "KUBERNETES_SERVICE_HOST"
IN_CLUSTER_PORT = "KUBERNETES_SERVICE_PORT"
_UNIX = "unix://"


@dataclass(frozen=True, slots=True)
class BastionSettings:
    """
    The bastion's settings, typed and checked: what
    L{diegossh.bastion.plugin.BastionRealmPlugin.build} builds from, and
    nothing else.

    C{engine} is resolved (C{docker}, C{kubernetes} or C{none}, never
    C{auto}); C{dockerSocket} is set for C{docker}; C{kubeconfig} or
    C{inClusterService} (the pod's C{KUBERNETES_SERVICE_HOST} and C{_PORT},
    read once at start-up) for C{kubernetes}.
    """

    engine: str
    labels: Mapping[str, str]
    dockerSocket: str | None
    dockerNetwork: str | None
    kubeconfig: str | None
    inClusterService: tuple[str, str] | None
    namespace: str | None
    publicKeyAPIPort: int
    keyPath: str
    authorizedKeysCache: str | None
    targetPolicy: TargetPolicy
    keyRefreshInterval: float
    keyRefreshMinInterval: float
    communicationTimeout: float


def chooseEngine(
    containerEngine: str, manualAuthFile: bool, kubeconfig: str | None, environ: Mapping[str, str]
) -> str:
    """
    C{docker}, C{kubernetes} or C{none}. C{auto} means: in a pod (the service
    account's variables are set) or with a kubeconfig, Kubernetes; else Docker.
    """
    if manualAuthFile:
        return "none"
    if containerEngine != "auto":
        return containerEngine
    if environ.get(IN_CLUSTER_HOST) or kubeconfig:
        return "kubernetes"
    return "docker"


def _dockerSocket(host: str, chosen: bool) -> str:
    """
    The socket path in C{unix:///path}; anything else names the setting.
    """
    path = host[len(_UNIX) :] if host.startswith(_UNIX) else ""
    if not path:
        why = (
            " (--containerEngine auto chose Docker: no KUBERNETES_SERVICE_HOST, no --kubeconfig)"
            if chosen
            else ""
        )
        raise ValueError(
            f"--dockerHost (DOCKER_HOST) must be unix:///path/to/docker.sock, not {host!r}"
            f"{why}; only a local Docker socket is supported"
        )
    return path


def _checked(flag: str, parse: Callable[[str], T], value: str) -> T:
    """
    C{parse(value)}; its L{ValueError} names the flag and its variable.
    """
    try:
        return parse(value)
    except ValueError as e:
        variable = _VARIABLES[flag]
        reason = str(e).removeprefix(f"{variable}: ")
        raise ValueError(f"--{flag} ({variable}): {reason}") from None


def parse(settings: Mapping[str, Any], environ: Mapping[str, str]) -> BastionSettings:
    """
    The bastion's settings from the proxy's merged raw settings, with the
    engine C{auto} stands for resolved from C{environ} (the process's
    environment at start-up). Raise L{ValueError} naming the first setting
    that cannot work.
    """
    from diegossh.bastion.policy import TargetPolicy

    containerEngine = settings["containerEngine"]
    if containerEngine not in ENGINES:
        raise ValueError(
            f"--containerEngine (SSH_CONTAINER_ENGINE) must be one of {', '.join(ENGINES)}, "
            f"not {containerEngine!r}"
        )
    labels = _checked("sshTargetLabels", parseLabels, settings["sshTargetLabels"] or "")
    port = _checked("sshTargetPublickeyApiPort", parsePort, settings["sshTargetPublickeyApiPort"])
    hosts, ports = settings["sshPermitTargetHost"], settings["sshPermitTargetPort"]
    _checked("sshPermitTargetPort", lambda text: TargetPolicy.fromSettings("*", text), ports)
    policy = _checked(
        "sshPermitTargetHost", lambda text: TargetPolicy.fromSettings(text, ports), hosts
    )
    kubeconfig = settings["kubeconfig"] or None
    engine = chooseEngine(containerEngine, bool(settings["manualAuthFile"]), kubeconfig, environ)
    dockerSocket = None
    if engine == "docker":
        dockerSocket = _dockerSocket(settings["dockerHost"] or "", containerEngine == "auto")
    inCluster = None
    if engine == "kubernetes" and not kubeconfig:
        host, servicePort = environ.get(IN_CLUSTER_HOST, ""), environ.get(IN_CLUSTER_PORT, "")
        if not host or not servicePort:
            raise ValueError(
                "the Kubernetes engine needs --kubeconfig (KUBECONFIG), or "
                f"{IN_CLUSTER_HOST} and {IN_CLUSTER_PORT} (in a pod)"
            )
        inCluster = (host, servicePort)
    return BastionSettings(
        engine=engine,
        labels=MappingProxyType(labels),
        dockerSocket=dockerSocket,
        dockerNetwork=settings["dockerNetwork"] or None,
        kubeconfig=kubeconfig,
        inClusterService=inCluster,
        namespace=settings["kubernetesNamespace"] or None,
        publicKeyAPIPort=port,
        keyPath=settings["sshTargetKeyPath"],
        authorizedKeysCache=settings["authorizedKeysCache"],
        targetPolicy=policy,
        keyRefreshInterval=float(settings["keyRefreshInterval"]),
        keyRefreshMinInterval=float(settings["keyRefreshMinInterval"]),
        communicationTimeout=float(settings["communicationTimeout"]),
    )
