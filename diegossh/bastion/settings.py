# -*- test-case-name: tests.test_bastion_settings -*-
"""
The bastion realm's settings: flags and JSON keys like the proxy's others,
and the environment variables of ml-tooling's ssh-proxy, so a container
that configured that bastion configures this one.
"""

from __future__ import annotations

import re
from typing import Any

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


def validate(settings: dict[str, Any]) -> None:
    """
    Raise L{ValueError} naming the first setting that cannot work.
    """
    if settings["containerEngine"] not in ENGINES:
        raise ValueError(
            f"--containerEngine must be one of {', '.join(ENGINES)}, "
            f"not {settings['containerEngine']!r}"
        )
    parseLabels(settings["sshTargetLabels"] or "")
    parsePort(settings["sshTargetPublickeyApiPort"])
    from diegossh.bastion.policy import TargetPolicy

    TargetPolicy.fromSettings(settings["sshPermitTargetHost"], settings["sshPermitTargetPort"])
    host = settings["dockerHost"] or ""
    if settings["containerEngine"] == "docker" and not host.startswith("unix://"):
        raise ValueError(f"--dockerHost must be unix:///path/to/docker.sock, not {host!r}")
