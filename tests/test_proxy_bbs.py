"""
The real proxy finding containers through a stand-in BBS (HTTPS with client
certificates, protobuf bodies): success, and BBS down, slow, and answering
errors or garbage, each a clear denial while the proxy keeps serving.
"""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import threads

from diegossh.proxy.bbs import models_pb2 as pb
from tests.fakes.bbs import PING, Behaviour, FakeBBS
from tests.fakes.tls import makeMutualTLS
from tests.support.daemon import Daemon, freePort, startDaemon
from tests.support.keys import key
from tests.support.proxy import Proxy, fingerprintOf, startProxy

pytestmark = pytest.mark.interop


async def ssh(proxy: Proxy, user: str, command: str) -> subprocess.CompletedProcess[bytes]:
    argv = proxy.ssh(user, command, options=("NumberOfPasswordPrompts=1",))
    return await threads.deferToThread(
        subprocess.run, argv, env=proxy.env(), capture_output=True, timeout=60,
        stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip


async def ready(proxy: Proxy, path: str = "/ready") -> tuple[int, bytes]:
    def get() -> tuple[int, bytes]:
        url = f"http://127.0.0.1:{proxy.healthPort}{path}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return int(response.status), response.read()
        except urllib.error.HTTPError as e:
            return int(e.code), e.read()

    return await threads.deferToThread(get)


async def eventuallyReady(proxy: Proxy, status: int, within: float = 15) -> None:
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    deadline = time.monotonic() + within
    while (await ready(proxy))[0] != status:
        assert time.monotonic() < deadline, f"/ready never answered {status}"
        await deferLater(reactor, 0.2)


class Setup:
    def __init__(self, tmp: Path) -> None:
        from twisted.internet import reactor

        self.tmp = tmp
        self.tls = makeMutualTLS(tmp / "pki")
        self.bbs = FakeBBS(reactor, self.tls.ca, self.tls.server)
        hostKey = tmp / "daemon_host_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(hostKey)],
                       check=True)  # fmt: skip
        self.daemon: Daemon = startDaemon(tmp, extraArgs=(f"--hostKey={hostKey}",))
        self.route = {
            "container_port": 2222,
            "host_fingerprint": fingerprintOf(Path(f"{hostKey}.pub")),
            "user": "vcap",
            "private_key": key("ed25519").toString("openssh").decode(),
        }
        self.proxy: Proxy | None = None

    async def start(self, timeout: str = "4s") -> Proxy:
        await self.bbs.start()
        tls = self.tls
        self.proxy = startProxy(
            self.tmp,
            None,
            extraArgs=(
                f"--bbsAddress={self.bbs.url}", f"--bbsCACert={tls.ca.certPath}",
                f"--bbsClientCert={tls.client.certPath}", f"--bbsClientKey={tls.client.keyPath}",
                f"--communicationTimeout={timeout}",
            ),
        )  # fmt: skip
        return self.proxy

    async def stop(self) -> None:
        if self.proxy is not None:
            self.proxy.stop()
        self.daemon.stop()
        await self.bbs.stop()

    def addApp(self, guid: str = "app", port: int | None = None) -> None:
        self.bbs.addLRP(
            guid,
            0,
            address="127.0.0.1",
            ports=((2222, port or self.daemon.port, 0, 0),),
            preferredAddress=pb.ActualLRPNetInfo.HOST,
            route=self.route,
        )


@pytest_twisted.ensureDeferred
async def test_login_found_through_bbs_and_failures(tmp_path: Path) -> None:
    setup = Setup(tmp_path)
    try:
        setup.addApp("app")
        proxy = await setup.start()
        ok = await ssh(proxy, "diego:app/0", "echo via bbs")
        assert ok.stdout == b"via bbs\n", ok.stderr
        paths = [path for path, _ in setup.bbs.requests if path != PING]  # readiness's
        assert paths[:2] == [b"/v1/actual_lrps/list", b"/v1/desired_lrps/get_by_process_guid.r3"]

        missing = await ssh(proxy, "diego:nothere/0", "true")
        assert missing.returncode != 0
        assert b"diego-ssh-proxy:" in missing.stderr

        setup.bbs.setBehaviour(Behaviour(mode="garbage"))
        garbage = await ssh(proxy, "diego:app/0", "true")
        assert garbage.returncode != 0 and b"diego-ssh-proxy:" in garbage.stderr

        setup.bbs.setBehaviour(Behaviour(mode="status", status=500))
        erroring = await ssh(proxy, "diego:app/0", "true")
        assert erroring.returncode != 0 and b"diego-ssh-proxy:" in erroring.stderr

        setup.bbs.setBehaviour(Behaviour(mode="hang"))
        slow = await ssh(proxy, "diego:app/0", "true")
        assert slow.returncode != 0 and b"in time" in slow.stderr, slow.stderr

        setup.bbs.setBehaviour(Behaviour(mode="normal"))
        again = await ssh(proxy, "diego:app/0", "echo recovered")
        assert again.stdout == b"recovered\n", again.stderr
    finally:
        await setup.stop()


@pytest_twisted.ensureDeferred
async def test_bbs_down(tmp_path: Path) -> None:
    setup = Setup(tmp_path)
    proxy: Any = None
    try:
        await setup.bbs.start()
        url = f"https://127.0.0.1:{freePort()}"
        tls = setup.tls
        proxy = startProxy(
            tmp_path, None,
            extraArgs=(f"--bbsAddress={url}", f"--bbsCACert={tls.ca.certPath}",
                       f"--bbsClientCert={tls.client.certPath}",
                       f"--bbsClientKey={tls.client.keyPath}", "--communicationTimeout=4s"),
        )  # fmt: skip
        down = await ssh(proxy, "diego:app/0", "true")
        assert down.returncode != 0
        assert b"diego-ssh-proxy:" in down.stderr
        assert await ready(proxy) == (503, b"route source unavailable\n")
        assert await ready(proxy, "/") == (200, b"ok\n")  # upstream's meaning
        assert "Traceback" not in proxy.log.read_text()
    finally:
        if proxy is not None:
            proxy.stop()
        setup.daemon.stop()
        await setup.bbs.stop()


@pytest_twisted.ensureDeferred
async def test_ready_follows_the_bbs(tmp_path: Path) -> None:
    """
    C{GET /ready}: 200 once BBS answers its ping; 503 while BBS hangs (each
    ping bounded, one at a time, every 5 s however often the check is
    polled); 200 again when it answers.
    """
    setup = Setup(tmp_path)
    try:
        proxy = await setup.start()
        await eventuallyReady(proxy, 200)
        setup.bbs.setBehaviour(Behaviour(mode="hang"), PING)
        await eventuallyReady(proxy, 503)
        assert await ready(proxy, "/") == (200, b"ok\n")
        pings = len([p for p, _ in setup.bbs.requests if p == PING])
        for _ in range(20):  # a flood of checks asks BBS nothing
            assert (await ready(proxy))[0] == 503
        assert len([p for p, _ in setup.bbs.requests if p == PING]) <= pings + 1
        setup.bbs.setBehaviour(Behaviour(mode="normal"), PING)
        await eventuallyReady(proxy, 200)
        assert "the route source cannot be read: not ready" in proxy.log.read_text()
    finally:
        await setup.stop()
