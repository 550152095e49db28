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


def test_the_key_cache_is_the_realms_service(tmp_path: Path) -> None:
    from twisted.internet.testing import MemoryReactorClock

    from diegossh.bastion.keycache import KeyCache
    from diegossh.bastion.plugin import BastionRealmPlugin

    keysFile = tmp_path / "authorized_keys_cache"
    settings = bastion(options("--realm", "bastion", "--manualAuthFile",
                               f"--authorizedKeysCache={keysFile}"))  # fmt: skip
    reactor = MemoryReactorClock()
    built = BastionRealmPlugin().build(reactor, settings, None)
    caches = [service for service in built.services if isinstance(service, KeyCache)]
    assert len(caches) == 1 and built.realm.cache is caches[0]  # type: ignore[attr-defined]
    # building starts nothing, and asks the reactor for no start-up or shutdown hook
    assert reactor.getDelayedCalls() == []
    assert reactor.whenRunningHooks == [] and reactor.triggers == {}
    caches[0].startService()
    assert reactor.getDelayedCalls() != []  # the refresh timer
    caches[0].stopService()
    assert reactor.getDelayedCalls() == []


_WITHOUT_THE_EXTRA = """
import sys
sys.modules["yaml"] = None  # as if pyyaml and wsproto were not installed
sys.modules["wsproto"] = None
from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage
from diegossh.proxy import tap

def build(*args):
    options = tap.Options()
    options.parseOptions(["--realm", "bastion", *args])
    for realm in options["settings"].realms:
        realm.plugin.build(MemoryReactorClock(), realm.parsed, None)

build("--containerEngine=docker")
build("--manualAuthFile")
print("docker and manual built")
try:
    build("--containerEngine=kubernetes", "--kubeconfig=/nonexistent")
except usage.UsageError as e:  # at start-up, before anything is built
    print("refused:", e)
"""


@pytest.mark.slow  # over half a second of wall-clock time: not in make unit
def test_without_the_bastion_extra_only_kubernetes_is_refused(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from diegossh.bastion import settings as bastionSettings

    env = {k: v for k, v in os.environ.items() if k not in bastionSettings.ENVIRONMENT}
    for variable in ENGINE_VARIABLES:
        env.pop(variable, None)
    result = subprocess.run(
        [sys.executable, "-c", _WITHOUT_THE_EXTRA],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "docker and manual built"
    assert lines[1].startswith("refused: the bastion's Kubernetes engine needs pyyaml and wsproto")
    assert "pip install 'diegossh[bastion]'" in lines[1]
