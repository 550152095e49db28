"""
The bastion scenarios every discovery engine must pass, end to end: real
sshd targets on their own loopback addresses, the real proxy configured by
environment variables, and OpenSSH's ssh, scp, sftp and rsync going through
it with C{-J} and C{ProxyCommand}. A test module per engine builds the
L{World} with its stand-in API and subclasses L{BastionScenarios}.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor as _reactor
from twisted.internet import task

from tests.support.bastion import (
    Bastion,
    PublicKeyServer,
    Target,
    keyPair,
    portFreeOn,
    run,
    startBastion,
    startTarget,
)
from tests.support.eventually import eventually
from tests.support.proxy import fingerprintOf

reactor: Any = _reactor
ALPHA, BETA, GAMMA, OUTSIDER = "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"
LABELS = {"ssh": "yes", "team": "a"}
MIN_INTERVAL = 2.0


@dataclass
class World:
    tmp: Path
    engine: Any  # the stand-in API: add(name, address, labels, files=), remove, stop, start
    bastion: Bastion
    alpha: Target
    beta: Target
    outsider: Target
    port: int
    publickeyPort: int
    servers: list[PublicKeyServer]
    listCount: Callable[[], int]
    execCommands: Callable[[], list[list[str]]]

    async def close(self) -> None:
        self.bastion.stop()
        for target in (self.alpha, self.beta, self.outsider):
            target.stop()
        for server in self.servers:
            await server.stop()


async def buildWorld(
    tmp: Path,
    engine: Any,
    environment: Mapping[str, str],
    listCount: Callable[[], int],
    execCommands: Callable[[], list[list[str]]],
) -> World:
    """
    Three targets: alpha publishes its key over HTTP, beta only in its key
    file (read through the engine's exec), and the outsider lacks one label.
    """
    port = portFreeOn([ALPHA, BETA, GAMMA, OUTSIDER])
    publickeyPort = portFreeOn([ALPHA, BETA, GAMMA, OUTSIDER])
    alpha = startTarget(tmp, "ws-alpha", ALPHA, port)
    beta = startTarget(tmp, "ws-beta", BETA, port)
    outsider = startTarget(tmp, "ws-outsider", OUTSIDER, port)
    servers = [PublicKeyServer(reactor, ALPHA, publickeyPort, alpha.pub.read_bytes())]
    engine.add("ws-alpha", ALPHA, LABELS)
    engine.add("ws-beta", BETA, LABELS, files={"~/.ssh/id_ed25519.pub": beta.pub.read_bytes()})
    engine.add(
        "ws-outsider",
        OUTSIDER,
        {"ssh": "yes"},
        files={"~/.ssh/id_ed25519.pub": outsider.pub.read_bytes()},
    )
    bastion = startBastion(
        tmp,
        {
            "SSH_TARGET_LABELS": "ssh=yes,team=a",
            "SSH_TARGET_PUBLICKEY_API_PORT": str(publickeyPort),
            "SSH_PERMIT_TARGET_HOST": "ws-*",
            "SSH_PERMIT_TARGET_PORT": str(port),
            "SSH_KEY_REFRESH_INTERVAL": "1h",
            "SSH_KEY_REFRESH_MIN_INTERVAL": f"{MIN_INTERVAL}s",
            "SSH_AUTHORIZED_KEYS_CACHE": str(tmp / "none"),
            **environment,
        },
        extraArgs=["--communicationTimeout=3s"],
    )
    return World(
        tmp, engine, bastion, alpha, beta, outsider, port, publickeyPort, servers,
        listCount, execCommands,
    )  # fmt: skip


async def sleep(seconds: float) -> None:
    await task.deferLater(reactor, seconds, lambda: None)


class BastionScenarios:
    """
    Subclassed as C{Test...} next to a module-scoped C{world} fixture.
    """

    @pytest_twisted.ensureDeferred
    async def test_each_key_tunnels_to_its_own_target(self, world: World) -> None:
        b, alpha, beta = world.bastion, world.alpha, world.beta
        ok = await run(b.jump(alpha.key, "ws-alpha", world.port, "hostname -I; echo alpha"))
        assert ok.returncode == 0, ok.stderr
        assert ok.stdout.endswith(b"alpha\n")
        ok = await run(b.proxyCommand(beta.key, "ws-beta", world.port, "echo beta"))
        assert ok.returncode == 0, ok.stderr
        assert ok.stdout == b"beta\n"
        # the beta key came through exec, with the path as an argument
        assert any("id_ed25519.pub" in " ".join(cmd) for cmd in world.execCommands())

    @pytest_twisted.ensureDeferred
    async def test_a_key_reaches_no_other_target(self, world: World) -> None:
        b, alpha, beta = world.bastion, world.alpha, world.beta
        refused = await run(b.jump(alpha.key, "ws-beta", world.port, "echo no"))
        assert refused.returncode != 0 and b"no" not in refused.stdout
        assert b"your key does not open ws-beta" in refused.stderr
        refused = await run(b.jump(beta.key, ALPHA, world.port, "echo no"))
        assert b"your key does not open 127.0.0.2" in refused.stderr
        # a container without every label is not a target: its key logs in nowhere
        outsider = await run(b.jump(world.outsider.key, "ws-outsider", world.port, "true"))
        assert outsider.returncode != 0
        assert b"Permission denied (publickey)" in outsider.stderr

    @pytest_twisted.ensureDeferred
    async def test_hosts_and_ports_outside_the_fence_are_refused(self, world: World) -> None:
        b, alpha = world.bastion, world.alpha
        refused = await run(b.jump(alpha.key, "db-1", world.port, "true"))
        assert b"target host db-1 is not permitted by this proxy" in refused.stderr
        refused = await run(b.jump(alpha.key, "ws-alpha", world.publickeyPort, "true"))
        assert f"target port {world.publickeyPort} is not permitted".encode() in refused.stderr

    @pytest_twisted.ensureDeferred
    async def test_no_shell_on_the_proxy(self, world: World) -> None:
        shell = await run(world.bastion.direct(world.alpha.key, "-tt"))
        assert shell.returncode != 0
        assert b"only opens tunnels to targets" in shell.stderr

    @pytest_twisted.ensureDeferred
    async def test_scp_sftp_and_rsync_through_the_bastion(self, world: World) -> None:
        b, alpha = world.bastion, world.alpha
        config = b.clientConfig(alpha.key)
        jump = ["-F", str(config), "-J", "bastion"]
        source = world.tmp / "payload.bin"
        source.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
        digest = hashlib.sha256(source.read_bytes()).hexdigest()
        remote = f"diegossh-test@ws-alpha:/tmp/diegossh-test/bastion-{os.getpid()}"
        for mode in ([], ["-O"]):
            up = await run(
                ["scp", *jump, "-P", str(world.port), *mode, str(source), remote + ".scp"]
            )
            assert up.returncode == 0, up.stderr
            back = world.tmp / f"back{len(mode)}.bin"
            down = await run(
                ["scp", *jump, "-P", str(world.port), *mode, remote + ".scp", str(back)]
            )
            assert down.returncode == 0, down.stderr
            assert hashlib.sha256(back.read_bytes()).hexdigest() == digest
        sftpBack = world.tmp / "sftp-back.bin"
        batch = (
            f"put {source} bastion-{os.getpid()}.sftp\nget bastion-{os.getpid()}.sftp {sftpBack}\n"
        )
        sftp = await run(
            ["sftp", *jump, "-P", str(world.port), "diegossh-test@ws-alpha"], input=batch.encode()
        )
        assert sftp.returncode == 0, sftp.stderr
        assert hashlib.sha256(sftpBack.read_bytes()).hexdigest() == digest
        rsh = f"ssh -F {config} -J bastion -p {world.port}"
        synced = world.tmp / "rsync-back.bin"
        rsync = await run(["rsync", "-e", rsh, str(source), remote + ".rsync"])
        assert rsync.returncode == 0, rsync.stderr
        rsync = await run(["rsync", "-e", rsh, remote + ".rsync", str(synced)])
        assert rsync.returncode == 0, rsync.stderr
        assert hashlib.sha256(synced.read_bytes()).hexdigest() == digest

    @pytest_twisted.ensureDeferred
    async def test_a_new_target_appears_without_a_restart(self, world: World) -> None:
        gamma = startTarget(world.tmp, "ws-gamma", GAMMA, world.port)
        server = PublicKeyServer(reactor, GAMMA, world.publickeyPort, gamma.pub.read_bytes())
        try:
            world.engine.add("ws-gamma", GAMMA, LABELS)
            await sleep(MIN_INTERVAL)  # let an earlier knock's rate limit pass
            ok = await run(world.bastion.jump(gamma.key, "ws-gamma", world.port, "echo gamma"))
            assert ok.returncode == 0, ok.stderr
            assert ok.stdout == b"gamma\n"
        finally:
            await server.stop()
            gamma.stop()
            world.engine.remove("ws-gamma")

    @pytest_twisted.ensureDeferred
    async def test_bad_keys_do_not_hammer_the_engine(self, world: World) -> None:
        stranger, _ = keyPair(world.tmp / "stranger", "stranger")
        await sleep(MIN_INTERVAL)
        before = world.listCount()
        for _ in range(6):
            refused = await run(world.bastion.jump(stranger, "ws-alpha", world.port, "true"))
            assert b"Permission denied (publickey)" in refused.stderr
        asked = world.listCount() - before
        assert 1 <= asked <= 2, asked

    @pytest.mark.leaves_reactor(reason="restarts the world's fake engine; the world stops it")
    @pytest_twisted.ensureDeferred
    async def test_engine_down_leaves_cached_logins_working(self, world: World) -> None:
        await world.engine.stop()
        try:
            await sleep(MIN_INTERVAL)
            stranger, _ = keyPair(world.tmp / "stranger", "stranger")
            # an unknown key now makes the proxy ask the dead engine: refused, no hang
            refused = await run(world.bastion.jump(stranger, "ws-alpha", world.port, "true"))
            assert b"Permission denied (publickey)" in refused.stderr
            ok = await run(
                world.bastion.jump(world.alpha.key, "ws-alpha", world.port, "echo cached")
            )
            assert ok.returncode == 0, ok.stderr
            assert ok.stdout == b"cached\n"
            assert (
                "target discovery failed, keeping what is cached" in world.bastion.log.read_text()
            )
        finally:
            await world.engine.start()

    @pytest_twisted.ensureDeferred
    async def test_logins_and_tunnels_are_in_the_access_log(self, world: World) -> None:
        alpha = world.alpha
        ok = await run(
            world.bastion.jump(alpha.key, "ws-alpha", world.port, "head -c 1000 /dev/zero")
        )
        assert ok.returncode == 0 and len(ok.stdout) == 1000
        fingerprint = fingerprintOf(alpha.pub)

        def tunnelsClosed() -> list[dict[str, Any]]:
            return [
                e
                for e in world.bastion.accessEvents()
                if e.get("event") == "tunnel"
                and e.get("outcome") == "closed"
                and e.get("fingerprint") == fingerprint
            ]

        closed = await eventually(tunnelsClosed, "the tunnel's closed event in the access log")
        events = world.bastion.accessEvents()
        logins = [e for e in events if e.get("event") == "login" and e.get("outcome") == "success"]
        assert any(e["fingerprint"] == fingerprint and e["username"] == "limited" for e in logins)
        last = closed[-1]
        assert last["target"] == "ws-alpha" and last["port"] == world.port
        assert last["address"] == ALPHA
        assert last["bytes_to_client"] > 1000 and last["bytes_from_client"] > 0
        assert last["duration"] >= 0
        stranger = fingerprintOf(world.tmp / "stranger" / "stranger_id_ed25519.pub")
        assert any(
            e.get("event") == "login"
            and e.get("outcome") == "denied"
            and e.get("fingerprint") == stranger
            for e in events
        )
        refused = [
            e for e in events if e.get("event") == "tunnel" and e.get("outcome") == "refused"
        ]
        assert any(e["target"] == "ws-beta" for e in refused)
        assert "PRIVATE KEY" not in world.bastion.accessLog.read_text()
