"""
The transport against the real OpenSSH client: every cipher, every MAC with
every CTR cipher, every key exchange and host key type, each moving 32 MiB both
ways with rekeys (RekeyLimit=4M) in between, verified by hash.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import threads

from diegossh.ssh.algorithms import CIPHERS, KEY_EXCHANGES, MACS
from tests.support.keys import HOST_KEY_TYPES, key, writePrivateKey
from tests.support.memoryserver import memoryServerFactory
from tests.support.openssh import run, sshCommand

pytestmark = pytest.mark.interop

SIZE = 32 * 1024 * 1024
CTR = [c for c in CIPHERS if c.endswith("-ctr")]
# OpenSSH 9.2 has no ML-KEM hybrid; it is exercised with asyncssh elsewhere.
CLIENT_KEXES = [k for k in KEY_EXCHANGES if k != "mlkem768x25519-sha256"]


@pytest.fixture(scope="module")
def payload(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("data") / "payload"
    data = os.urandom(SIZE)
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def identity(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return writePrivateKey(key("ed25519"), tmp_path_factory.mktemp("id") / "id_ed25519")


def listen(hostKind: str = "ed25519"):  # type: ignore[no-untyped-def]
    from twisted.internet import reactor

    factory = memoryServerFactory(key(hostKind), key("ed25519"), reactor)
    return reactor.listenTCP(0, factory, interface="127.0.0.1")


async def echoThrough(
    options: list[str], payload: tuple[Path, str], identity: Path, tmp: Path, hostKind: str
) -> None:
    port = listen(hostKind)
    try:
        out = tmp / "out"
        argv = sshCommand(
            port.getHost().port, identity, "tester", ["echo"], [*options, "RekeyLimit=4M"]
        )
        result = await threads.deferToThread(run, argv, payload[0], out)
        assert result.returncode == 0, result.stderr.decode()
        assert out.stat().st_size == SIZE
        assert hashlib.sha256(out.read_bytes()).hexdigest() == payload[1]
    finally:
        await port.stopListening()


@pytest.mark.parametrize("cipher", CIPHERS)
@pytest_twisted.ensureDeferred
async def test_cipher(cipher: str, payload, identity, tmp_path) -> None:  # type: ignore[no-untyped-def]
    await echoThrough([f"Ciphers={cipher}"], payload, identity, tmp_path, "ed25519")


@pytest.mark.parametrize("mac", MACS)
@pytest.mark.parametrize("cipher", CTR)
@pytest_twisted.ensureDeferred
async def test_mac(cipher: str, mac: str, payload, identity, tmp_path) -> None:  # type: ignore[no-untyped-def]
    await echoThrough([f"Ciphers={cipher}", f"MACs={mac}"], payload, identity, tmp_path, "ed25519")


@pytest.mark.parametrize("kex", CLIENT_KEXES)
@pytest_twisted.ensureDeferred
async def test_key_exchange(kex: str, payload, identity, tmp_path) -> None:  # type: ignore[no-untyped-def]
    await echoThrough([f"KexAlgorithms={kex}"], payload, identity, tmp_path, "ed25519")


@pytest.mark.parametrize("hostKeyAlgorithm", sorted(HOST_KEY_TYPES))
@pytest_twisted.ensureDeferred
async def test_host_key(hostKeyAlgorithm: str, payload, identity, tmp_path) -> None:  # type: ignore[no-untyped-def]
    await echoThrough(
        [f"HostKeyAlgorithms={hostKeyAlgorithm}"],
        payload,
        identity,
        tmp_path,
        HOST_KEY_TYPES[hostKeyAlgorithm],
    )
