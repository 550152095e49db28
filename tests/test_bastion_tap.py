"""
The bastion's settings at start-up: flags, environment variables (the names
ml-tooling's ssh-proxy reads) and the config file, in that order of
precedence, checked before the proxy starts.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from twisted.python import usage

from diegossh.bastion.policy import TargetPolicy
from diegossh.bastion.settings import BastionSettings, chooseEngine
from diegossh.proxy.tap import Options

# what decides the engine `auto` stands for
ENGINE_VARIABLES = (
    "DOCKER_HOST",
    "KUBECONFIG",
    "KUBERNETES_SERVICE_HOST",
    "KUBERNETES_SERVICE_PORT",
    "SSH_CONTAINER_ENGINE",
    "MANUAL_AUTH_FILE",
)


@pytest.fixture(autouse=True)
def _noEngineEnvironment(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ENGINE_VARIABLES:
        monkeypatch.delenv(variable, raising=False)


def options(*args: str) -> Options:
    o = Options()
    o.parseOptions(list(args))
    return o


def bastion(o: Options) -> BastionSettings:
    (realm,) = [each for each in o["settings"].realms if each.name == "bastion"]
    assert isinstance(realm.parsed, BastionSettings)
    return realm.parsed


def test_bastion_alone_needs_no_lrp_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSH_PERMIT_TARGET_HOST", raising=False)
    parsed = options("--realm", "bastion")
    assert [each.name for each in parsed["settings"].realms] == ["bastion"]
    settings = bastion(parsed)
    assert settings.targetPolicy == TargetPolicy.fromSettings("*", "*")
    assert settings.keyPath == "~/.ssh/id_ed25519.pub"
    assert (settings.engine, settings.dockerSocket) == ("docker", "/var/run/docker.sock")
    # a relaying realm beside it still needs one
    with pytest.raises(usage.UsageError, match="bbsAddress"):
        options("--realm", "bastion", "--realm", "diego", "--diegoCredentials=x")


def test_environment_then_flags(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "proxy.json"
    config.write_text(json.dumps({"ssh_permit_target_host": "from-file-*",
                                  "ssh_permit_target_port": "2222"}))  # fmt: skip
    monkeypatch.setenv("SSH_PERMIT_TARGET_HOST", "workspace-*")
    monkeypatch.setenv("MANUAL_AUTH_FILE", "true")
    monkeypatch.setenv("SSH_KEY_REFRESH_INTERVAL", "2m")
    settings = bastion(options("--realm", "bastion", f"--config={config}"))
    # the variable beats the file; the file beats the default
    assert settings.targetPolicy == TargetPolicy.fromSettings("workspace-*", "2222")
    assert settings.engine == "none"  # discovery off
    assert settings.keyRefreshInterval == 120.0
    flagged = bastion(options("--realm", "bastion", "--sshPermitTargetHost=db-*"))
    assert flagged.targetPolicy == TargetPolicy.fromSettings("db-*", "*")  # the flag wins
    monkeypatch.setenv("MANUAL_AUTH_FILE", "false")
    assert bastion(options("--realm", "bastion")).engine == "docker"


@pytest.mark.parametrize(
    ("variable", "value", "complaint"),
    [
        ("SSH_TARGET_LABELS", "team", "label=value"),
        ("SSH_PERMIT_TARGET_PORT", "ssh", "not a TCP port"),
        ("SSH_TARGET_PUBLICKEY_API_PORT", "99999", "not a TCP port"),
        ("MANUAL_AUTH_FILE", "yes", "not true or false"),
        ("SSH_CONTAINER_ENGINE", "podman", "containerEngine"),
        ("SSH_KEY_REFRESH_INTERVAL", "often", "not a duration"),
    ],
)
def test_bad_settings_stop_the_start(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, complaint: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(usage.UsageError, match=complaint):
        options("--realm", "bastion")


def test_auto_with_a_tcp_docker_host_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    With no Kubernetes about, C{auto} means Docker, which speaks only to a
    local socket: a TCP C{DOCKER_HOST} stops the start, naming the setting,
    rather than becoming a socket path made of the address's tail.
    """
    monkeypatch.setenv("DOCKER_HOST", "tcp://10.0.0.5:2375")
    with pytest.raises(usage.UsageError, match=r"--dockerHost \(DOCKER_HOST\).*tcp://10\.0\.0\.5"):
        options("--realm", "bastion")
    with pytest.raises(usage.UsageError, match="dockerHost"):
        options("--realm", "bastion", "--containerEngine=docker")
    # Kubernetes chosen, or discovery off: the Docker host does not matter
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    settings = bastion(options("--realm", "bastion"))
    assert (settings.engine, settings.inClusterService) == ("kubernetes", ("10.0.0.1", "443"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST")
    assert bastion(options("--realm", "bastion", "--manualAuthFile")).engine == "none"


def test_kubernetes_without_a_cluster_is_refused() -> None:
    with pytest.raises(usage.UsageError, match="KUBERNETES_SERVICE_HOST"):
        options("--realm", "bastion", "--containerEngine=kubernetes")


def test_engine_choice() -> None:
    assert chooseEngine("auto", False, None, {}) == "docker"
    assert chooseEngine("auto", False, None, {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}) == (
        "kubernetes"
    )
    assert chooseEngine("auto", False, "/k", {}) == "kubernetes"
    assert chooseEngine("docker", False, None, {"KUBERNETES_SERVICE_HOST": "x"}) == "docker"
    assert chooseEngine("auto", True, None, {}) == "none"
