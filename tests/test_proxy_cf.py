"""
The real proxy with the cf realm: stand-in UAA and Cloud Controller (HTTPS,
their real formats) and the stand-in BBS, in front of a real diego-sshd.
"""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from pathlib import Path
from typing import Any

import asyncssh
import pytest
import pytest_twisted
from twisted.internet import defer, threads

from diegossh.proxy.bbs import models_pb2 as pb
from tests.fakes.bbs import PING, Behaviour, FakeBBS
from tests.fakes.cloudcontroller import FakeCloudController
from tests.fakes.tls import CertificateAuthority, makeMutualTLS
from tests.fakes.uaa import FakeUAA
from tests.support.daemon import Daemon, startDaemon
from tests.support.eventually import eventually
from tests.support.keys import key
from tests.support.proxy import Proxy, fingerprintOf, startProxy

pytestmark = pytest.mark.interop

APP = str(uuid.uuid4())


def _lookups(bbs: Any) -> list[Any]:
    """What BBS was asked, without the readiness pings (diegossh.proxy.readiness)."""
    return [request for request in bbs.requests if request[0] != PING]


class CFWorld:
    def __init__(self, tmp: Path) -> None:
        from twisted.internet import reactor

        self.tmp = tmp
        self.tls = makeMutualTLS(tmp / "pki")
        ca = self.tls.ca
        self.bbs = FakeBBS(reactor, ca, self.tls.server)
        self.uaa = FakeUAA(reactor, ca, ca.issueServer("uaa"))
        self.cc = FakeCloudController(reactor, ca, ca.issueServer("cc"), uaa=self.uaa)
        hostKey = tmp / "daemon_host_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(hostKey)],
                       check=True)  # fmt: skip
        self.daemon: Daemon = startDaemon(tmp, extraArgs=(f"--hostKey={hostKey}",))
        self.app = self.cc.addApp(APP)
        self.bbs.addLRP(
            self.app.process_guid, 0, address="127.0.0.1",
            ports=((2222, self.daemon.port, 0, 0),), preferredAddress=pb.ActualLRPNetInfo.HOST,
            route={"container_port": 2222, "user": "vcap",
                   "host_fingerprint": fingerprintOf(Path(f"{hostKey}.pub")),
                   "private_key": key("ed25519").toString("openssh").decode()},
        )  # fmt: skip
        self.proxy: Proxy | None = None

    async def start(self, uaaCA: Path | None = None, extra: tuple[str, ...] = ()) -> Proxy:
        for fake in (self.bbs, self.uaa, self.cc):
            await fake.start()
        tls = self.tls
        self.proxy = startProxy(
            self.tmp, None,
            extraArgs=(
                "--enableCFAuth", f"--ccAPIURL={self.cc.url}", f"--ccAPICACert={tls.ca.certPath}",
                f"--uaaTokenURL={self.uaa.tokenURL}", f"--uaaCACert={uaaCA or tls.ca.certPath}",
                "--uaaUsername=ssh-proxy", "--uaaPassword=ssh-proxy-secret",
                f"--bbsAddress={self.bbs.url}", f"--bbsCACert={tls.ca.certPath}",
                f"--bbsClientCert={tls.client.certPath}", f"--bbsClientKey={tls.client.keyPath}",
                "--communicationTimeout=4s", *extra,
            ),
        )  # fmt: skip
        return self.proxy

    async def stop(self) -> None:
        if self.proxy is not None:
            self.proxy.stop()
        self.daemon.stop()
        for fake in (self.bbs, self.uaa, self.cc):
            await fake.stop()


async def ssh(proxy: Proxy, code: str, command: str, index: int = 0) -> Any:
    argv = proxy.ssh(f"cf:{APP}/{index}", command, options=("NumberOfPasswordPrompts=1",))
    return await threads.deferToThread(
        subprocess.run, argv, env=proxy.env(code), capture_output=True, timeout=60,
        stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip


@pytest.fixture
def world(tmp_path: Path) -> CFWorld:
    return CFWorld(tmp_path)


@pytest_twisted.ensureDeferred
async def test_good_code_gets_a_session_and_connections_are_reused(world: CFWorld) -> None:
    try:
        proxy = await world.start()
        for i in range(3):
            result = await ssh(proxy, world.uaa.issueCode("alice"), f"echo cf {i}")
            assert result.stdout == f"cf {i}\n".encode(), result.stderr
        assert world.uaa.connectionsAccepted == 1
        assert world.cc.connectionsAccepted == 1
        logins = [e for e in proxy.accessEvents() if e.get("outcome") == "success"]
        assert logins[-1]["realm"] == "cf" and logins[-1]["user_name"] == "alice"
    finally:
        await world.stop()


@pytest_twisted.ensureDeferred
async def test_failures_stop_the_login_and_leave_later_services_unasked(world: CFWorld) -> None:
    try:
        proxy = await world.start()
        bad = await ssh(proxy, "not-a-code", "true")
        assert bad.returncode != 0
        assert world.cc.requests == [] and _lookups(world.bbs) == []

        world.app.deny = 403
        denied = await ssh(proxy, world.uaa.issueCode(), "true")
        assert denied.returncode != 0, (world.cc.requests, proxy.log.read_text()[-3000:])
        assert b"Fetching application data failed" in denied.stderr
        assert _lookups(world.bbs) == []
        world.app.deny = None

        malformed = await threads.deferToThread(
            subprocess.run, proxy.ssh("cf:not-a-uuid/0", "true"), env=proxy.env("x"),
            capture_output=True, timeout=60, stdin=subprocess.DEVNULL, check=False,
        )  # fmt: skip
        assert malformed.returncode != 0
        uaaCalls = len(world.uaa.requests)

        # The first UAA call hangs; a login started after it still gets through.
        world.uaa.setBehaviour(Behaviour(mode="hang", times=1))
        hanging = defer.ensureDeferred(ssh(proxy, world.uaa.issueCode(), "true"))
        await eventually(lambda: len(world.uaa.requests) > uaaCalls, "the hung UAA call")
        other = await ssh(proxy, world.uaa.issueCode(), "echo other")
        assert other.stdout == b"other\n", other.stderr
        assert not hanging.called
        slow = await hanging
        assert slow.returncode != 0
        assert b"UAA did not answer in time" in slow.stderr
        log = proxy.log.read_text()
        assert "Traceback" not in log
        for secret in ("ssh-proxy-secret", "not-a-code"):
            assert secret not in log
    finally:
        await world.stop()


@pytest_twisted.ensureDeferred
async def test_uaa_certificate_from_the_wrong_ca_is_refused(world: CFWorld) -> None:
    other = CertificateAuthority.create(world.tmp / "other-ca")
    try:
        proxy = await world.start(uaaCA=other.certPath)
        result = await ssh(proxy, world.uaa.issueCode(), "true")
        assert result.returncode != 0
        assert world.cc.requests == []
    finally:
        await world.stop()


@pytest_twisted.ensureDeferred
async def test_what_the_cf_cli_sends(world: CFWorld) -> None:
    """Password auth, a pty shell with window changes, exec, -L, and the CLI's keepalive."""
    try:
        proxy = await world.start()
        code = world.uaa.issueCode()

        async def cli() -> Any:
            async with asyncssh.connect(
                "127.0.0.1", proxy.port, username=f"cf:{APP}/0", password=code,
                known_hosts=None, agent_path=None, client_keys=None,
            ) as conn:  # fmt: skip
                keepalive = await conn._make_global_request("keepalive@cloudfoundry.org")
                shell = await conn.create_process(term_type="xterm", term_size=(80, 24))
                shell.change_terminal_size(100, 30)
                shell.stdin.write("stty size; exit\n")
                output = await shell.stdout.read()
                exec_ = await conn.run("echo exec")
                return keepalive, output, exec_.stdout

        keepalive, output, execOut = (
            await defer.Deferred.fromFuture(asyncio.ensure_future(asyncio.wait_for(cli(), 60)))
            if False
            else await threads.deferToThread(lambda: asyncio.run(cli()))
        )
        assert keepalive is not None  # answered, not left hanging
        assert "30 100" in output
        assert execOut == "exec\n"
    finally:
        await world.stop()
