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

from diegossh.bastion.plugin import chooseEngine
from diegossh.proxy.tap import Options


def options(*args: str) -> Options:
    o = Options()
    o.parseOptions(list(args))
    return o


def test_bastion_alone_needs_no_lrp_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSH_PERMIT_TARGET_HOST", raising=False)
    settings = options("--realm", "bastion")["settings"]
    assert [p.name for p in settings["enabledRealms"]] == ["bastion"]
    assert settings["sshPermitTargetHost"] == "*"
    assert settings["sshTargetKeyPath"] == "~/.ssh/id_ed25519.pub"
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
    settings = options("--realm", "bastion", f"--config={config}")["settings"]
    assert settings["sshPermitTargetHost"] == "workspace-*"  # the variable beats the file
    assert settings["sshPermitTargetPort"] == "2222"  # the file beats the default
    assert settings["manualAuthFile"] is True
    assert settings["keyRefreshInterval"] == 120.0
    flagged = options("--realm", "bastion", "--sshPermitTargetHost=db-*")["settings"]
    assert flagged["sshPermitTargetHost"] == "db-*"  # the flag beats the variable
    monkeypatch.setenv("MANUAL_AUTH_FILE", "false")
    assert options("--realm", "bastion")["settings"]["manualAuthFile"] is False


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


def test_engine_choice() -> None:
    base = {"manualAuthFile": False, "containerEngine": "auto", "kubeconfig": None}
    assert chooseEngine(base, {}) == "docker"
    assert chooseEngine(base, {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}) == "kubernetes"
    assert chooseEngine({**base, "kubeconfig": "/k"}, {}) == "kubernetes"
    assert chooseEngine(
        {**base, "containerEngine": "docker"}, {"KUBERNETES_SERVICE_HOST": "x"}
    ) == ("docker")
    assert chooseEngine({**base, "manualAuthFile": True}, {}) == "none"


def test_the_key_cache_is_the_realms_service(tmp_path: Path) -> None:
    from twisted.internet.testing import MemoryReactorClock

    from diegossh.bastion.keycache import KeyCache
    from diegossh.bastion.plugin import BastionRealmPlugin

    keysFile = tmp_path / "authorized_keys_cache"
    settings = options("--realm", "bastion", "--manualAuthFile",
                       f"--authorizedKeysCache={keysFile}")["settings"]  # fmt: skip
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
from diegossh.bastion.plugin import BastionRealmPlugin
from diegossh.proxy import tap

def build(*args):
    options = tap.Options()
    options.parseOptions(["--realm", "bastion", *args])
    return BastionRealmPlugin().build(MemoryReactorClock(), options["settings"], None)

build("--containerEngine=docker")
build("--manualAuthFile")
print("docker and manual built")
try:
    build("--containerEngine=kubernetes", "--kubeconfig=/nonexistent")
except ValueError as e:
    print("refused:", e)
"""


def test_without_the_bastion_extra_only_kubernetes_is_refused(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from diegossh.bastion import settings as bastionSettings

    env = {k: v for k, v in os.environ.items() if k not in bastionSettings.ENVIRONMENT}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    result = subprocess.run(
        [sys.executable, "-c", _WITHOUT_THE_EXTRA],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "docker and manual built"
    assert lines[1].startswith("refused: the bastion's Kubernetes engine needs pyyaml and wsproto")
    assert "pip install 'diegossh[bastion]'" in lines[1]
