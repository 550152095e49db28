"""
The C{loggregator} object of the proxy's config, and the proxy telling
Loggregator about the connections it relays: parsed once (every refusal
naming its key), and end to end through a real proxy, a real daemon and
OpenSSH to the stand-in v2 agent.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from diegossh.proxy import config as proxyConfig
from diegossh.proxy.loggregator import ComponentIdentity, TargetTelemetry
from diegossh.proxy.loggregator.settings import parseLoggregator
from diegossh.proxy.target import LRPTarget, SSHRoute
from tests.fakes.loggregator import FakeIngress
from tests.fakes.tls import CertificateAuthority
from tests.support.eventually import eventuallyBlocking
from tests.support.proxy import daemonBehindRoute, lrp, startProxy


class Agent:
    """A stand-in agent with mutual TLS, and the files a proxy needs for it."""

    def __init__(self, tmp: Path) -> None:
        self.ca = CertificateAuthority.create(tmp / "ca")
        self.client = self.ca.issueClient("ssh-proxy")
        self.ingress = FakeIngress(self.ca.issueServer("metron", dnsNames=("metron",)), self.ca)

    def config(self, **overrides: Any) -> dict[str, Any]:
        """The object the BOSH job renders, with v2 on."""
        return {
            "loggregator_use_v2_api": True,
            "loggregator_api_port": self.ingress.port,
            "loggregator_ca_path": str(self.ca.certPath),
            "loggregator_cert_path": str(self.client.certPath),
            "loggregator_key_path": str(self.client.keyPath),
            "loggregator_job_deployment": "cf",
            "loggregator_job_name": "ssh_proxy",
            "loggregator_job_index": "0",
            "loggregator_job_ip": "10.0.0.9",
            "loggregator_job_origin": "ssh_proxy",
            "loggregator_source_id": "ssh_proxy",
            "loggregator_instance_id": "vm-guid-1",
            **overrides,
        }


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    a = Agent(tmp_path)
    a.ingress.start()
    yield a
    a.ingress.stop()


# -- parsing


def test_off_unless_v2_is_on(agent: Agent) -> None:
    assert parseLoggregator(None) is None
    assert parseLoggregator({}) is None
    assert parseLoggregator({"loggregator_use_v2_api": False, "loggregator_api_port": 1}) is None


def test_the_rendered_object_parses(agent: Agent) -> None:
    settings = parseLoggregator(agent.config())
    assert settings is not None
    assert settings.address == f"127.0.0.1:{agent.ingress.port}"
    assert settings.identity == ComponentIdentity("ssh_proxy", "ssh_proxy", "vm-guid-1")
    assert settings.batchSize == 100
    assert settings.tls.certPEM == agent.client.certPEM
    defaults = parseLoggregator(agent.config(loggregator_api_port=0))
    assert defaults is not None and defaults.port == 3458  # Go's zero: the default


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"loggregator_usev2": True}, "unknown key 'loggregator_usev2'"),
        ({"loggregator_use_v2_api": "yes"}, "loggregator_use_v2_api: 'yes' is not true or false"),
        ({"loggregator_api_port": 70000}, "loggregator_api_port: 70000"),
        ({"loggregator_api_port": "3458"}, "loggregator_api_port: '3458'"),
        ({"loggregator_cert_path": ""}, "loggregator_cert_path: needed"),
        ({"loggregator_ca_path": "/nonexistent/ca.pem"}, "/nonexistent/ca.pem"),
        ({"loggregator_job_origin": 7}, "loggregator_job_origin: 7 is not a string"),
    ],
)
def test_refusals_name_the_key(agent: Agent, overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match="loggregator") as caught:
        parseLoggregator(agent.config(**overrides))
    assert message in str(caught.value)


def test_a_key_for_the_key_file_is_checked_at_start_up(agent: Agent) -> None:
    other = agent.ca.issueClient("someone-else")
    with pytest.raises(ValueError, match="loggregator"):
        parseLoggregator(agent.config(loggregator_key_path=str(other.keyPath)))


def test_the_config_key_and_its_flag_take_a_json_object() -> None:
    kind = proxyConfig.SETTINGS["loggregator"][1]
    assert kind == "object"
    given = {"loggregator_use_v2_api": False}
    assert proxyConfig._convert("loggregator", kind, given) == given
    assert proxyConfig._convert("loggregator", kind, json.dumps(given)) == given
    for bad in ("[1]", "{", 5):
        with pytest.raises(proxyConfig.ConfigError, match="loggregator"):
            proxyConfig._convert("loggregator", kind, bad)


# -- the relay's side, in memory


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def connectionRelayed(self, client: str, tags: Any) -> Any:
        self.calls.append(("relayed", tags))
        return lambda: self.calls.append(("ended", client))


def test_lrp_targets_give_their_log_tags_other_targets_none() -> None:
    recorder = Recorder()
    telemetry = TargetTelemetry(recorder)  # type: ignore[arg-type]
    target = LRPTarget(
        process_guid="p", index=3, instance_guid="i", host="h", port=1,
        route=SSHRoute(2222), log_guid="log-1", metric_tags={"app_name": "dora"},
    )  # fmt: skip
    telemetry.connectionRelayed("10.0.0.1:5", target)()
    telemetry.connectionRelayed("10.0.0.1:6", object())
    assert recorder.calls == [
        ("relayed", {"app_name": "dora", "source_id": "log-1", "instance_id": "3"}),
        ("ended", "10.0.0.1:5"),
        ("relayed", None),
    ]


# -- end to end


@pytest.mark.interop
def test_a_session_through_the_proxy_reaches_cf_logs(tmp_path: Path, agent: Agent) -> None:
    """
    What C{cf logs} shows for C{cf ssh}: the start and end app logs with the
    LRP's tags, and the C{ssh-connections} gauge up then down.
    """
    daemon, route = daemonBehindRoute(tmp_path)
    entry = lrp("app", "127.0.0.1", daemon.port, route, index=1)
    entry.update(log_guid="app-log-guid", metric_tags={"app_name": {"static": "dora"}})
    configFile = tmp_path / "ssh_proxy.json"
    configFile.write_text(json.dumps({"loggregator": agent.config()}))
    proxy = startProxy(tmp_path, [entry], extraArgs=(f"--config={configFile}",))
    try:
        result = subprocess.run(
            proxy.ssh("diego:app/1", "echo hello"), env=proxy.env(), capture_output=True,
            stdin=subprocess.DEVNULL, timeout=60, check=False,
        )  # fmt: skip
        assert result.returncode == 0 and result.stdout == b"hello\n", result.stderr

        def fourEnvelopes() -> bool:
            return len(agent.ingress.envelopes()) >= 4

        eventuallyBlocking(fourEnvelopes, "the session's four envelopes at the agent")
    finally:
        proxy.stop()
        daemon.stop()
    start, up, down, end = agent.ingress.envelopes()
    assert start.log.payload.startswith(b"Successful remote access by 127.0.0.1:")
    assert end.log.payload.startswith(b"Remote access ended for 127.0.0.1:")
    for log in (start, end):
        assert (log.source_id, log.instance_id) == ("app-log-guid", "1")
        assert log.tags["source_type"] == "SSH" and log.tags["app_name"] == "dora"
    assert [e.gauge.metrics["ssh-connections"].value for e in (up, down)] == [1.0, 0.0]
    assert (up.source_id, up.instance_id) == ("ssh_proxy", "vm-guid-1")
    assert agent.ingress.clientNames() == ["ssh-proxy"] * len(agent.ingress.clientNames())
