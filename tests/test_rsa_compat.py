"""
RSA in memory, both ways round (issue 14):

- a server of ours with an RSA host key also offers C{ssh-rsa}, so that a
  client that knows nothing newer (the cf CLI on golang.org/x/crypto before
  November 2021) can check it; the host key proof is then a SHA-1
  signature; C{--allowedHostKeyAlgorithms} takes it away, and a list that
  leaves the host key nothing to sign with stops start-up;
- the proxy's login to a backend with an RSA route key signs with the
  C{rsa-sha2-*} algorithm the backend's C{server-sig-algs} names, and with
  C{ssh-rsa} only when the backend sends no such list.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from twisted.conch.checkers import InMemorySSHKeyDB, SSHPublicKeyChecker
from twisted.conch.ssh import common, keys
from twisted.conch.ssh import transport as conchTransport
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage
from twisted.test import iosim

from diegossh.proxy import config as proxyConfig
from diegossh.proxy.realmplugins import DiegoRealmPlugin
from diegossh.proxy.settings import ProxySettings, parseSettings
from diegossh.ssh.algorithms import (
    DEFAULT_HOST_KEY_ALGORITHMS,
    AlgorithmPolicy,
    userKeySignatureAlgorithm,
)
from diegossh.ssh.factory import SSHServerFactory
from diegossh.ssh.flags import algorithmPolicy, checkHostKey
from diegossh.sshd.tap import Options as DaemonOptions
from tests.support.keys import key
from tests.support.memoryserver import MemoryRealm, memoryServerFactory
from tests.support.proxyworld import (
    BACKEND_HOST_KEY,
    BACKEND_USER,
    MSG_USERAUTH_SUCCESS,
    ProxyWorld,
    RecordingPortal,
    diego,
    password,
    route,
)
from tests.support.sshclient import (
    ClientConnection,
    FailureCollector,
    LoginClient,
    RecordingServer,
    SessionChannel,
)

RSA_HOST_KEY = key("rsa")
CLIENT_KEY = key("p256")
RSA_ROUTE_KEY = key("rsa")
MSG_KEX_REPLY = 31  # KEXDH_REPLY / KEX_ECDH_REPLY


@pytest.fixture(autouse=True)
def noTracebacks() -> Iterator[FailureCollector]:
    with FailureCollector() as collector:
        yield collector
    assert not collector.failures, collector.describe()


class HostKeyRecordingClient(LoginClient):
    """
    Our client, offering the host key algorithms a test names (an old cf
    CLI offers only C{ssh-rsa}), and keeping the server's host key proof.
    """

    offer: list[bytes] | None = None

    def __init__(self) -> None:
        super().__init__()
        self.hostKeySignature: bytes | None = None

    def _setUpAlgorithms(self) -> None:
        super()._setUpAlgorithms()
        if self.offer is not None:
            self.supportedPublicKeys = list(self.offer)

    def dispatchMessage(self, messageNum: int, payload: bytes) -> None:
        if messageNum == MSG_KEX_REPLY and self.hostKeySignature is None:
            _hostKey, _theirs, self.hostKeySignature, _ = common.getNS(payload, 3)
        super().dispatchMessage(messageNum, payload)


def connect(
    offer: list[bytes] | None, serverPolicy: AlgorithmPolicy | None = None
) -> tuple[Any, HostKeyRecordingClient, ClientConnection]:
    """
    A server of ours with L{RSA_HOST_KEY} and a client offering C{offer},
    pumped until nothing moves.
    """
    clock = MemoryReactorClock()
    factory = memoryServerFactory(RSA_HOST_KEY, CLIENT_KEY, clock, serverPolicy)
    factory.protocol = RecordingServer
    server = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 2222))
    client = HostKeyRecordingClient()
    client.offer = offer
    client.key = CLIENT_KEY
    conn = ClientConnection()
    client.connection = conn
    client.clock = clock
    client.policy = AlgorithmPolicy.everything()
    pump = iosim.connect(
        server,
        iosim.FakeTransport(server, isServer=True),
        client,
        iosim.FakeTransport(client, isServer=False),
        clock=clock,
    )
    pump.flush()
    return server, client, conn


def hostKeyAlgorithmsOffered(transport: Any) -> list[bytes]:
    """The host key algorithm list of C{transport}'s KEXINIT."""
    _kexes, hostKeyAlgorithms, _ = common.getNS(transport.ourKexInitPayload[17:], 2)
    return list(hostKeyAlgorithms.split(b","))


def rsaPublic(k: keys.Key) -> rsa.RSAPublicKey:
    loaded = serialization.load_ssh_public_key(k.public().toString("openssh"))
    assert isinstance(loaded, rsa.RSAPublicKey)
    return loaded


def verifies(signature: bytes, data: bytes, hashAlgorithm: hashes.HashAlgorithm) -> bool:
    try:
        rsaPublic(RSA_HOST_KEY).verify(signature, data, padding.PKCS1v15(), hashAlgorithm)
    except InvalidSignature:
        return False
    return True


# -- the host key: ssh-rsa for old clients


def test_an_rsa_host_key_offers_ssh_rsa_by_default() -> None:
    server, _client, _conn = connect(None)
    assert hostKeyAlgorithmsOffered(server) == [b"rsa-sha2-512", b"rsa-sha2-256", b"ssh-rsa"]


def test_a_client_offering_only_ssh_rsa_logs_in_and_gets_a_sha1_proof() -> None:
    server, client, conn = connect([b"ssh-rsa"])
    assert server.keyAlg == client.keyAlg == b"ssh-rsa"
    assert conn.started.called, "the old client never logged in"
    channel = SessionChannel(b"echo")
    conn.openChannel(channel)
    assert client.hostKeySignature is not None
    algorithm, blob = common.getNS(client.hostKeySignature, 2)[:2]
    assert algorithm == b"ssh-rsa"
    # The proof is the exchange hash (the session id) signed with SHA-1.
    assert verifies(blob, client.sessionID, hashes.SHA1())
    assert not verifies(blob, client.sessionID, hashes.SHA256())


def test_a_current_client_still_gets_sha2() -> None:
    server, client, conn = connect(None)
    assert server.keyAlg == b"rsa-sha2-512"
    assert conn.started.called
    assert client.hostKeySignature is not None
    algorithm, blob = common.getNS(client.hostKeySignature, 2)[:2]
    assert algorithm == b"rsa-sha2-512"
    assert verifies(blob, client.sessionID, hashes.SHA512())


def test_ssh_rsa_turned_off_is_not_offered_and_an_old_client_is_refused() -> None:
    policy = AlgorithmPolicy.fromOptions(hostKeyAlgorithms="rsa-sha2-512,rsa-sha2-256")
    server, client, conn = connect([b"ssh-rsa"], policy)
    assert hostKeyAlgorithmsOffered(server) == [b"rsa-sha2-512", b"rsa-sha2-256"]
    assert not conn.started.called
    codes = {d[0] for d in (server.disconnectSent, client.disconnectSent) if d is not None}
    assert codes == {conchTransport.DISCONNECT_KEY_EXCHANGE_FAILED}


def test_an_ed25519_host_key_never_offers_ssh_rsa() -> None:
    clock = MemoryReactorClock()
    factory = memoryServerFactory(key("ed25519"), CLIENT_KEY, clock)
    server = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 2222))
    server.makeConnection(iosim.FakeTransport(server, isServer=True))
    assert hostKeyAlgorithmsOffered(server) == [b"ssh-ed25519"]


def test_our_client_never_offers_ssh_rsa() -> None:
    _server, client, _conn = connect(None)
    offered = hostKeyAlgorithmsOffered(client)
    assert b"ssh-rsa" not in offered and b"rsa-sha2-512" in offered
    assert "ssh-rsa" not in AlgorithmPolicy.everything().clientHostKeyAlgorithms()


# -- the setting


def test_the_default_is_every_host_key_algorithm() -> None:
    policy = AlgorithmPolicy.fromOptions()
    assert policy.hostKeyAlgorithms == tuple(DEFAULT_HOST_KEY_ALGORITHMS.split(","))
    assert "ssh-rsa" in policy.hostKeyAlgorithms
    assert AlgorithmPolicy.fromOptions(hostKeyAlgorithms="") == policy


def test_an_unknown_host_key_algorithm_names_the_flag() -> None:
    with pytest.raises(ValueError, match=r"^--allowedHostKeyAlgorithms: unknown host key algo"):
        algorithmPolicy(None, None, None, "rsa-sha2-512,ssh-dss")


@pytest.mark.parametrize(
    ("hostKey", "allowed"),
    [(None, "rsa-sha2-512,ssh-rsa"), (RSA_HOST_KEY, "ssh-ed25519"), (key("p256"), "ssh-rsa")],
    ids=["generated-ed25519", "rsa", "p256"],
)
def test_a_list_leaving_the_host_key_nothing_is_refused(
    hostKey: keys.Key | None, allowed: str
) -> None:
    policy = algorithmPolicy(None, None, None, allowed)
    with pytest.raises(ValueError, match=r"^--allowedHostKeyAlgorithms: .* host key can sign"):
        checkHostKey(policy, hostKey)


def proxySettings(tmp_path: Path, **given: Any) -> ProxySettings:
    """
    The proxy's settings from a JSON config file holding C{given}, as the
    BOSH job writes one.
    """
    config = tmp_path / "ssh_proxy.json"
    config.write_text(json.dumps(given))
    raw = proxyConfig.merge({}, str(config))
    return parseSettings(raw, {"diego": DiegoRealmPlugin()}, [])


def test_the_proxy_reads_the_setting_from_its_config_file(tmp_path: Path) -> None:
    given = {
        "enable_diego_auth": True, "diego_credentials": "s", "lrp_directory": "/lrps.json",
        "host_key": RSA_HOST_KEY.toString("openssh").decode(),
    }  # fmt: skip
    settings = proxySettings(tmp_path, **given, allowed_host_key_algorithms="rsa-sha2-256")
    assert settings.policy.hostKeyAlgorithms == ("rsa-sha2-256",)
    assert proxySettings(tmp_path, **given).policy == AlgorithmPolicy.fromOptions()
    with pytest.raises(ValueError, match=r"^--allowedHostKeyAlgorithms: the ssh-rsa host key"):
        proxySettings(tmp_path, **given, allowed_host_key_algorithms="ssh-ed25519")


def test_the_daemon_takes_the_flag() -> None:
    options = DaemonOptions()
    options.parseOptions(
        ["--allowUnauthenticatedClients", "--allowedHostKeyAlgorithms=ssh-ed25519"]
    )
    assert options["settings"].policy.hostKeyAlgorithms == ("ssh-ed25519",)
    options = DaemonOptions()
    with pytest.raises(
        usage.UsageError, match=r"^--allowedHostKeyAlgorithms: a generated ssh-ed25519"
    ):
        options.parseOptions(
            ["--allowUnauthenticatedClients", "--allowedHostKeyAlgorithms=ssh-rsa"]
        )


# -- the backend login: which RSA signature


@pytest.mark.parametrize(
    ("keyType", "serverSigAlgs", "expected"),
    [
        (b"ssh-rsa", b"ssh-ed25519,rsa-sha2-256,rsa-sha2-512", b"rsa-sha2-512"),
        (b"ssh-rsa", b"rsa-sha2-256,ssh-rsa", b"rsa-sha2-256"),
        (b"ssh-rsa", b"ssh-ed25519, rsa-sha2-512", b"rsa-sha2-512"),
        (b"ssh-rsa", b"ssh-ed25519,ssh-rsa", b"ssh-rsa"),
        (b"ssh-rsa", None, b"ssh-rsa"),
        (b"ssh-ed25519", b"rsa-sha2-512", b"ssh-ed25519"),
        (b"ecdsa-sha2-nistp384", None, b"ecdsa-sha2-nistp384"),
    ],
)
def test_user_key_signature_algorithm(
    keyType: bytes, serverSigAlgs: bytes | None, expected: bytes
) -> None:
    assert userKeySignatureAlgorithm(keyType, serverSigAlgs) == expected


class SigAlgsBackend(RecordingServer):
    """
    A backend whose EXT_INFO lists C{serverSigAlgs}, or that sends none
    (L{None}), as servers older than RFC 8308 do.
    """

    serverSigAlgs: bytes | None = None

    def sendExtInfo(self, extensions: list[tuple[bytes, bytes]]) -> None:
        if self.serverSigAlgs is not None:
            conchTransport.SSHTransportBase.sendExtInfo(
                self, [(b"server-sig-algs", self.serverSigAlgs)]
            )


def rsaBackend(clock: Any, serverSigAlgs: bytes | None) -> SSHServerFactory:
    """A container that takes only the RSA route key."""
    checker = SSHPublicKeyChecker(
        InMemorySSHKeyDB({BACKEND_USER.encode(): [RSA_ROUTE_KEY.public()]})
    )
    factory = SSHServerFactory(
        RecordingPortal(MemoryRealm(), [checker]),
        [BACKEND_HOST_KEY],
        AlgorithmPolicy.everything(),
        clock,
        b"SSH-2.0-OpenSSH_9.6 memory-backend",
    )
    protocol = type("Backend", (SigAlgsBackend,), {"serverSigAlgs": serverSigAlgs})
    factory.protocol = protocol
    return factory


@pytest.fixture
def world() -> Iterator[ProxyWorld]:
    w = ProxyWorld()
    try:
        yield w
        w.closeAll()
        assert w.outcomes.failures == [], w.outcomes.text()
    finally:
        w.stop()


@pytest.mark.parametrize(
    ("serverSigAlgs", "expected"),
    [
        (b"ssh-ed25519,rsa-sha2-512,rsa-sha2-256", b"rsa-sha2-512"),
        (b"rsa-sha2-256", b"rsa-sha2-256"),
        (None, b"ssh-rsa"),
    ],
    ids=["both", "sha256-only", "no-ext-info"],
)
def test_the_proxy_signs_an_rsa_route_key_as_the_backend_asks(
    world: ProxyWorld, serverSigAlgs: bytes | None, expected: bytes
) -> None:
    world.directory.route = route(
        private_key=RSA_ROUTE_KEY.toString("openssh").decode(), password=""
    )
    world.backendFactory = rsaBackend(world.clock, serverSigAlgs)
    user = world.user(password(diego(0)))
    for _ in range(10):
        if user.answers or user.disconnectReceived:
            break
        world.advance(1)
    assert user.answers == [MSG_USERAUTH_SUCCESS]
    attempts = world.backendFactory.portal.attempts  # type: ignore[attr-defined]
    # The offer (no signature) and the signed request both name it.
    assert [(c.algName, c.signature is not None) for c in attempts] == [
        (expected, False),
        (expected, True),
    ]
    signatureType = common.getNS(attempts[1].signature)[0]
    assert signatureType == expected
