"""
The proxy as the BOSH job runs it: C{ssh-proxy -config=FILE} with the
rendered C{ssh_proxy.json} of docs/examples (every key the current template
writes, the spec's defaults; paths, addresses and secrets substituted),
against the stand-in BBS (mutual TLS) and the stand-in Loggregator agent,
a real daemon behind it and OpenSSH in front: upstream's lager lines on
stdout, the debug server's C{/log-level}, the dropped keys' warnings, the
refusals and the exit statuses.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import threads

from diegossh.proxy.bbs import models_pb2 as pb
from tests.fakes.bbs import FakeBBS
from tests.fakes.loggregator import FakeIngress
from tests.fakes.tls import CertificateAuthority, makeMutualTLS
from tests.support.daemon import Daemon, freePort, startDaemon
from tests.support.eventually import eventually
from tests.support.keys import key
from tests.support.proxy import CLIENT_OPTIONS, fingerprintOf

pytestmark = pytest.mark.interop

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "docs" / "examples" / "ssh_proxy.json"
SSH_PROXY = str(Path(sys.executable).with_name("ssh-proxy"))
CREDENTIALS = "diego-secret-from-the-manifest"
# the keys the current template writes (jobs/ssh_proxy/templates/ssh_proxy.json.erb)
TEMPLATE_KEYS = {
    "address", "health_check_address", "disable_health_check_server", "host_key",
    "skip_cert_verify", "log_level", "debug_address", "connect_to_instance_address",
    "communication_timeout", "cc_api_url", "cc_api_ca_cert", "idle_connection_timeout",
    "bbs_address", "bbs_client_cert", "bbs_client_key", "bbs_ca_cert", "enable_diego_auth",
    "diego_credentials", "enable_cf_auth", "uaa_ca_cert", "uaa_token_url", "uaa_password",
    "uaa_username", "allowed_ciphers", "allowed_macs", "allowed_key_exchanges",
    "bbs_client_session_cache_size", "bbs_max_idle_conns_per_host", "time_format",
    "loggregator", "backends_tls_enabled", "backends_tls_ca_certificates",
    "backends_tls_client_certificate", "backends_tls_client_private_key",
}  # fmt: skip


def example() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(EXAMPLE.read_text())
    return loaded


def lagerLines(path: Path) -> list[dict[str, Any]]:
    """
    Every line of the script's stdout, each of which must be a lager line.
    """
    if not path.exists():
        return []
    lines = []
    for text in path.read_text().splitlines():
        line = json.loads(text)
        assert list(line) == ["timestamp", "source", "message", "log_level", "data"], line
        assert line["source"] == "ssh-proxy" and isinstance(line["data"], dict)
        float(line["timestamp"])  # epoch seconds, as a string
        lines.append(line)
    return lines


def messages(path: Path) -> list[str]:
    return [line["message"] for line in lagerLines(path)]


class World:
    """
    The stand-ins and the files the rendered config points at.
    """

    def __init__(self, tmp: Path) -> None:
        from twisted.internet import reactor

        self.tmp = tmp
        self.tls = makeMutualTLS(tmp / "pki")
        self.bbs = FakeBBS(reactor, self.tls.ca, self.tls.server)
        self.loggregatorCA = CertificateAuthority.create(tmp / "loggregator")
        self.loggregatorClient = self.loggregatorCA.issueClient("ssh-proxy")
        self.agent = FakeIngress(
            self.loggregatorCA.issueServer("metron", dnsNames=("metron",)), self.loggregatorCA
        )
        hostKey = tmp / "daemon_host_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(hostKey)],
                       check=True)  # fmt: skip
        self.daemon: Daemon = startDaemon(tmp, extraArgs=(f"--hostKey={hostKey}",))
        self.daemonFingerprint = fingerprintOf(Path(f"{hostKey}.pub"))
        proxyKey = tmp / "proxy_host_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-m", "PEM", "-N", "",
                        "-f", str(proxyKey)], check=True)  # fmt: skip
        self.proxyHostKey = proxyKey.read_text()
        self.port, self.healthPort, self.debugPort = freePort(), freePort(), freePort()
        self.proc: subprocess.Popen[bytes] | None = None
        self.stdout = tmp / "ssh-proxy.stdout"

    async def start(self) -> None:
        await self.bbs.start()
        self.agent.start()
        self.bbs.addLRP(
            "app", 0, address="127.0.0.1",
            ports=((2222, self.daemon.port, 0, 0),),
            preferredAddress=pb.ActualLRPNetInfo.HOST,
            route={"container_port": 2222, "host_fingerprint": self.daemonFingerprint,
                   "user": "vcap", "private_key": key("ed25519").toString("openssh").decode()},
        )  # fmt: skip

    def render(self, **extra: Any) -> Path:
        """
        The example with this machine's paths, ports and secrets.
        """
        config = example()
        ca, client = self.tls.ca.certPath, self.tls.client
        config.update(
            address=f"127.0.0.1:{self.port}",
            health_check_address=f"127.0.0.1:{self.healthPort}",
            debug_address=f"127.0.0.1:{self.debugPort}",
            host_key=self.proxyHostKey,
            cc_api_ca_cert=str(ca), uaa_ca_cert=str(ca),
            bbs_address=self.bbs.url, bbs_ca_cert=str(ca),
            bbs_client_cert=str(client.certPath), bbs_client_key=str(client.keyPath),
            diego_credentials=CREDENTIALS, uaa_password="uaa-secret",
        )  # fmt: skip
        config["loggregator"].update(
            loggregator_api_port=self.agent.port,
            loggregator_ca_path=str(self.loggregatorCA.certPath),
            loggregator_cert_path=str(self.loggregatorClient.certPath),
            loggregator_key_path=str(self.loggregatorClient.keyPath),
        )
        config.update(extra)
        path = self.tmp / "ssh_proxy.json"
        path.write_text(json.dumps(config))
        return path

    def startProxy(self, config: Path) -> subprocess.Popen[bytes]:
        with self.stdout.open("wb") as out:
            self.proc = subprocess.Popen(
                [SSH_PROXY, f"-config={config}"], stdout=out, stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL, cwd=str(self.tmp),
            )  # fmt: skip
        return self.proc

    async def ssh(self, command: str) -> subprocess.CompletedProcess[bytes]:
        argv = ["sshpass", "-e", "ssh", *CLIENT_OPTIONS, "-o", "PubkeyAuthentication=no",
                "-o", "NumberOfPasswordPrompts=1", "-p", str(self.port),
                "diego:app/0@127.0.0.1", command]  # fmt: skip
        return await threads.deferToThread(
            subprocess.run, argv, env={**os.environ, "SSHPASS": CREDENTIALS},
            capture_output=True, timeout=60, stdin=subprocess.DEVNULL, check=False,
        )  # fmt: skip

    async def setLevel(self, level: bytes) -> tuple[int, bytes]:
        def post() -> tuple[int, bytes]:
            request = urllib.request.Request(
                f"http://127.0.0.1:{self.debugPort}/log-level", data=level, method="POST"
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read()

        return await threads.deferToThread(post)

    async def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.daemon.stop()
        self.agent.stop()
        await self.bbs.stop()


def test_the_example_has_every_key_of_the_template() -> None:
    config = example()
    assert set(config) == TEMPLATE_KEYS
    assert config["loggregator"]["loggregator_use_v2_api"] is True


@pytest_twisted.ensureDeferred
async def test_the_rendered_example_runs_as_the_bosh_job_starts_it(tmp_path: Path) -> None:
    world = World(tmp_path)
    try:
        await world.start()
        # and the keys older templates wrote, which upstream has dropped
        config = world.render(consul_cluster="http://127.0.0.1:8500", dropsonde_port=3457)
        proc = world.startProxy(config)

        await eventually(lambda: "ssh-proxy.started" in messages(world.stdout)
                         or proc.poll() is not None, "ssh-proxy.started")  # fmt: skip
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else None
        lines = lagerLines(world.stdout)
        (started,) = [line for line in lines if line["message"] == "ssh-proxy.started"]
        assert started["log_level"] == 1 and started["data"] == {}
        dropped = {line["data"]["key"] for line in lines
                   if line["message"] == "ssh-proxy.deprecated-config-key"}  # fmt: skip
        assert dropped == {"consul_cluster", "dropsonde_port"}

        ok = await world.ssh("echo through the drop-in")
        assert ok.stdout == b"through the drop-in\n", ok.stderr
        # Loggregator on, as the example has it: the app's log line at the agent
        await eventually(
            lambda: any(e.log.payload.startswith(b"Successful remote access by 127.0.0.1:")
                        for e in world.agent.envelopes()),
            "the access log envelope at the stand-in agent",
        )  # fmt: skip

        # what a login logs at info, then nothing below error after /log-level
        infoBefore = len([line for line in lagerLines(world.stdout) if line["log_level"] == 1])
        assert infoBefore > 1
        assert await world.setLevel(b"error") == (
            200,
            b"/log-level was invoked with Level: error\n",
        )
        quiet = await world.ssh("echo quietly")
        assert quiet.stdout == b"quietly\n", quiet.stderr
        infoAfter = len([line for line in lagerLines(world.stdout) if line["log_level"] == 1])
        assert infoAfter == infoBefore
        assert await world.setLevel(b"debug") == (
            200,
            b"/log-level was invoked with Level: debug\n",
        )
        again = await world.ssh("echo loudly")
        assert again.stdout == b"loudly\n", again.stderr
        await eventually(
            lambda: (
                len([line for line in lagerLines(world.stdout) if line["log_level"] < 2])
                > infoAfter
            ),
            "info lines again after /log-level debug",
        )

        proc.send_signal(signal.SIGTERM)
        status = await threads.deferToThread(proc.wait, 30)
        assert status == 0
        assert messages(world.stdout)[-1] == "ssh-proxy.exited"
    finally:
        await world.stop()


def run(*argv: str, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([SSH_PROXY, *argv], capture_output=True, timeout=60, check=False,
                          cwd=str(cwd), stdin=subprocess.DEVNULL)  # fmt: skip


def fatal(result: subprocess.CompletedProcess[bytes]) -> dict[str, Any]:
    """
    The last stdout line, a fatal lager line; the exit is Go's after a panic.
    """
    lines = [json.loads(text) for text in result.stdout.decode().splitlines()]
    assert lines, result.stderr
    last: dict[str, Any] = lines[-1]
    assert last["log_level"] == 3 and result.returncode == 2, (lines, result.returncode)
    return last


def test_the_example_as_shipped_is_refused_for_its_placeholder_host_key(tmp_path: Path) -> None:
    result = run(f"-config={EXAMPLE}", cwd=tmp_path)
    line = fatal(result)
    assert line["message"] == "ssh-proxy.failed-to-parse-host-key"
    assert "hostKey" in line["data"]["error"]
    assert b"BEGIN" not in result.stdout  # not even the placeholder's shape


def test_an_unknown_key_is_named(tmp_path: Path) -> None:
    config = tmp_path / "ssh_proxy.json"
    config.write_text(json.dumps({**example(), "log_levle": "debug"}))
    line = fatal(run(f"-config={config}", cwd=tmp_path))
    assert line["message"] == "ssh-proxy.failed-to-parse-config"
    assert "'log_levle'" in line["data"]["error"]


def test_a_missing_config_file_and_a_bad_flag(tmp_path: Path) -> None:
    line = fatal(run("-config", str(tmp_path / "nowhere.json"), cwd=tmp_path))
    assert line["message"] == "ssh-proxy.failed-to-parse-config"
    flag = run("-nosuchflag=1", cwd=tmp_path)
    assert flag.returncode == 2 and flag.stdout == b""
    assert b"flag provided but not defined: -nosuchflag" in flag.stderr
    secret = run("-hostKey=PEM", cwd=tmp_path)
    assert secret.returncode == 2 and b"-hostKeyFile" in secret.stderr


def test_a_listener_that_cannot_bind_exits_non_zero(tmp_path: Path) -> None:
    table = tmp_path / "lrps.json"
    table.write_text('{"lrps": []}')
    port = freePort()
    config = tmp_path / "ssh_proxy.json"
    config.write_text(json.dumps({
        "address": f"127.0.0.1:{port}", "health_check_address": f"127.0.0.1:{port}",
        "enable_diego_auth": True, "diego_credentials": "x", "lrp_directory": str(table),
    }))  # fmt: skip
    result = run(f"-config={config}", cwd=tmp_path)
    assert result.returncode == 1
    lines = [json.loads(text) for text in result.stdout.decode().splitlines()]
    failed = [line for line in lines if line["message"] == "ssh-proxy.exited-with-failure"]
    assert failed and "already in use" in failed[0]["data"]["error"], lines
    assert "ssh-proxy.started" not in [line["message"] for line in lines]


def test_a_refusal_is_written_in_the_configured_time_format(tmp_path: Path) -> None:
    config = tmp_path / "ssh_proxy.json"
    config.write_text(json.dumps({**example(), "time_format": "rfc3339"}))
    result = run(f"-config={config}", cwd=tmp_path)
    assert result.returncode == 2
    last = json.loads(result.stdout.decode().splitlines()[-1])
    assert list(last) == ["timestamp", "source", "message", "level", "data"]
    assert last["message"] == "ssh-proxy.failed-to-parse-host-key" and last["level"] == "fatal"
    assert last["timestamp"].endswith("Z") and "T" in last["timestamp"]
