"""
The bastion's settings parsed once (L{diegossh.bastion.settings.parse}):
typed and frozen, the engine C{auto} stands for resolved from the
environment given, each refusal naming its flag and variable, and the
engine built from the settings alone.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from twisted.internet.task import Clock

from diegossh.bastion.plugin import buildEngine
from diegossh.bastion.policy import TargetPolicy
from diegossh.bastion.settings import SETTINGS, BastionSettings, parse

IN_CLUSTER = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}


def raw(**given: Any) -> dict[str, Any]:
    """
    The bastion's defaults and the proxy's timeout, with C{given} over them.
    """
    settings = {flag: default for flag, (_, _, default) in SETTINGS.items()}
    return {**settings, "communicationTimeout": 7.0, **given}


def test_defaults_are_typed() -> None:
    settings = parse(raw(), {})
    assert settings.engine == "docker"  # auto, with no Kubernetes about
    assert settings.dockerSocket == "/var/run/docker.sock"
    assert settings.inClusterService is None and settings.kubeconfig is None
    assert dict(settings.labels) == {}
    assert settings.publicKeyAPIPort == 8080
    assert settings.keyPath == "~/.ssh/id_ed25519.pub"
    assert settings.authorizedKeysCache == "/etc/ssh/authorized_keys_cache"
    assert settings.targetPolicy == TargetPolicy.fromSettings("*", "*")
    assert (settings.keyRefreshInterval, settings.keyRefreshMinInterval) == (60.0, 5.0)
    assert settings.communicationTimeout == 7.0


def test_given_values_are_typed() -> None:
    settings = parse(
        raw(sshTargetLabels="team=a, tier=web", sshTargetPublickeyApiPort="9090",
            sshPermitTargetHost="ws-*", sshPermitTargetPort="22,2222", dockerNetwork="back",
            kubernetesNamespace="tools", kubeconfig="/k"),
        {},
    )  # fmt: skip
    assert settings.engine == "kubernetes"  # auto, with a kubeconfig
    assert settings.kubeconfig == "/k" and settings.dockerSocket is None
    assert dict(settings.labels) == {"team": "a", "tier": "web"}
    assert settings.publicKeyAPIPort == 9090
    assert settings.targetPolicy == TargetPolicy.fromSettings("ws-*", "22,2222")
    assert settings.namespace == "tools"


def test_settings_are_frozen() -> None:
    settings = parse(raw(sshTargetLabels="team=a"), {})
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.engine = "kubernetes"  # type: ignore[misc]
    with pytest.raises(TypeError):
        settings.labels["team"] = "b"  # type: ignore[index]


@pytest.mark.parametrize(
    ("environ", "given", "engine"),
    [
        ({}, {}, "docker"),
        (IN_CLUSTER, {}, "kubernetes"),
        ({}, {"kubeconfig": "/k"}, "kubernetes"),
        ({"KUBERNETES_SERVICE_HOST": "x"}, {"containerEngine": "docker"}, "docker"),
        ({}, {"manualAuthFile": True}, "none"),
        ({}, {"containerEngine": "none"}, "none"),
    ],
)
def test_the_engine_is_resolved_at_parse(
    environ: dict[str, str], given: dict[str, Any], engine: str
) -> None:
    assert parse(raw(**given), environ).engine == engine


def test_in_cluster_service_is_read_once() -> None:
    environ = dict(IN_CLUSTER)
    settings = parse(raw(), environ)
    environ.clear()
    assert settings.inClusterService == ("10.0.0.1", "443")


@pytest.mark.parametrize(
    ("given", "environ", "named"),
    [
        ({"dockerHost": "tcp://10.0.0.5:2375"}, {}, r"--dockerHost \(DOCKER_HOST\)"),
        ({"dockerHost": "unix://"}, {}, r"--dockerHost \(DOCKER_HOST\)"),
        ({"containerEngine": "docker", "dockerHost": "tcp://h:2375"}, {}, "--dockerHost"),
        ({"containerEngine": "podman"}, {}, r"--containerEngine \(SSH_CONTAINER_ENGINE\)"),
        ({"containerEngine": "kubernetes"}, {}, "KUBERNETES_SERVICE_HOST"),
        ({}, {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, "KUBERNETES_SERVICE_PORT"),
        ({"sshTargetLabels": "team"}, {}, r"--sshTargetLabels \(SSH_TARGET_LABELS\): 'team'"),
        ({"sshTargetPublickeyApiPort": "0"}, {}, "--sshTargetPublickeyApiPort"),
        ({"sshPermitTargetPort": "ssh"}, {}, r"--sshPermitTargetPort \(SSH_PERMIT_TARGET_PORT\)"),
        ({"sshPermitTargetHost": ","}, {}, r"--sshPermitTargetHost \(SSH_PERMIT_TARGET_HOST\): no"),
    ],
)
def test_bad_values_name_the_flag(
    given: dict[str, Any], environ: dict[str, str], named: str
) -> None:
    with pytest.raises(ValueError, match=named):
        parse(raw(**given), environ)


def test_a_tcp_docker_host_is_fine_when_docker_is_not_used() -> None:
    tcp = {"dockerHost": "tcp://10.0.0.5:2375"}
    assert parse(raw(**tcp, manualAuthFile=True), {}).engine == "none"
    assert parse(raw(**tcp, kubeconfig="/k"), {}).engine == "kubernetes"


def test_the_engine_is_built_from_the_settings_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = parse(raw(dockerHost="unix:///run/d.sock", sshTargetLabels="a=1"), {})
    # what the process's environment says later does not matter
    monkeypatch.setenv("DOCKER_HOST", "tcp://10.0.0.5:2375")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    engine = buildEngine(Clock(), settings)
    assert engine.kind == "docker"
    assert repr(engine).startswith("<DockerEngine /run/d.sock ")
    assert buildEngine(Clock(), dataclasses.replace(settings, engine="none")) is None


def test_parse_gives_bastion_settings() -> None:
    assert isinstance(parse(raw(), {}), BastionSettings)
