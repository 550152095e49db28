"""
The private parts of Twisted that diegossh relies on, checked against the
installed Twisted.

Everything here is reached in two modules only, L{diegossh.ssh._conch} (Conch)
and L{diegossh._twisted} (the reactor's process and port internals); each test
names one private name or shape and says what breaks without it. A Twisted
upgrade that changes one fails here, by name. C{docs/twisted.md} says what to
do then.
"""

from __future__ import annotations

import inspect
import socket
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from twisted.conch.ssh import _kex, channel, common, connection, factory, keys, userauth
from twisted.conch.ssh import transport as conchTransport
from twisted.internet import abstract, process, tcp
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from zope.interface import Interface

from diegossh import _twisted
from diegossh.ssh import _conch, kex
from diegossh.ssh import connection as ourConnection
from diegossh.ssh import factory as ourFactory
from diegossh.ssh import transport as ourTransport
from diegossh.sshd import process as ourProcess
from diegossh.sshd import session as ourSession


def parameters(function: Callable[..., Any]) -> list[str]:
    return list(inspect.signature(function).parameters)


def source(function: Callable[..., Any]) -> str:
    return inspect.getsource(function)


# -- Conch's transport: key-exchange state


def test_key_exchange_states_are_distinct_strings() -> None:
    base = conchTransport.SSHTransportBase
    states = {
        base._KEY_EXCHANGE_NONE,
        base._KEY_EXCHANGE_REQUESTED,
        base._KEY_EXCHANGE_PROGRESSING,
    }
    assert len(states) == 3
    assert all(isinstance(s, str) for s in states)
    assert _conch.KEY_EXCHANGE_NONE == base._KEY_EXCHANGE_NONE
    assert _conch.KEY_EXCHANGE_REQUESTED == base._KEY_EXCHANGE_REQUESTED


def test_transport_starts_idle_with_nothing_held() -> None:
    base = conchTransport.SSHTransportBase
    assert base._keyExchangeState == base._KEY_EXCHANGE_NONE
    assert base._blockedByKeyExchange is None


def test_conch_kexinit_answers_through_our_sendKexInit() -> None:
    """
    Conch's C{ssh_KEXINIT} moves REQUESTED on (our KEXINIT went first) and
    otherwise calls C{sendKexInit}, ours, which starts holding messages back.
    """
    text = source(conchTransport.SSHTransportBase.ssh_KEXINIT)
    assert "self._keyExchangeState == self._KEY_EXCHANGE_REQUESTED" in text
    assert "self._KEY_EXCHANGE_PROGRESSING" in text
    assert "self.sendKexInit()" in text


def test_allowed_key_exchange_message_type() -> None:
    method = conchTransport.SSHTransportBase._allowedKeyExchangeMessageType
    assert parameters(method) == ["self", "messageType"]
    t = conchTransport.SSHTransportBase()
    assert t._allowedKeyExchangeMessageType(conchTransport.MSG_NEWKEYS)
    assert t._allowedKeyExchangeMessageType(30)  # KEXDH_INIT
    assert t._allowedKeyExchangeMessageType(conchTransport.MSG_DISCONNECT)
    # A second KEXINIT waits for the exchange under way to end.
    assert not t._allowedKeyExchangeMessageType(conchTransport.MSG_KEXINIT)
    assert not t._allowedKeyExchangeMessageType(conchTransport.MSG_SERVICE_REQUEST)
    assert not t._allowedKeyExchangeMessageType(94)  # CHANNEL_DATA


def test_key_setup_hook() -> None:
    """
    Every Conch key exchange ends in C{self._keySetup(sharedSecret,
    exchangeHash)}, which our transport extends (C{keySetup}).
    """
    for cls in (
        conchTransport.SSHTransportBase,
        conchTransport.SSHServerTransport,
        conchTransport.SSHClientTransport,
    ):
        assert parameters(cls._keySetup) == ["self", "sharedSecret", "exchangeHash"]
    for cls in (conchTransport.SSHServerTransport, conchTransport.SSHClientTransport):
        assert "self._keySetup(sharedSecret, exchangeHash)" in inspect.getsource(cls)


def test_client_early_newkeys_flag() -> None:
    """
    Conch's client clears C{_gotNewKeys} in the C{connectionMade} we replace
    and reads it in C{_keySetup}.
    """
    assert "self._gotNewKeys = 0" in source(conchTransport.SSHClientTransport.connectionMade)
    assert "self._gotNewKeys" in source(conchTransport.SSHClientTransport._keySetup)


def test_transport_internals_reach_conch_state() -> None:
    t = ourTransport.SSHClientTransport()
    assert t.keyExchangeState == _conch.KEY_EXCHANGE_NONE
    t.keyExchangeState = _conch.KEY_EXCHANGE_REQUESTED
    assert t._keyExchangeState == conchTransport.SSHTransportBase._KEY_EXCHANGE_REQUESTED
    t.heldForKeyExchange = [(94, b"x")]
    assert t._blockedByKeyExchange == [(94, b"x")]
    t.clearEarlyNewKeys()
    assert t._gotNewKeys == 0
    assert t.sendableDuringKeyExchange(conchTransport.MSG_NEWKEYS)
    assert not t.sendableDuringKeyExchange(94)


# -- Conch's user authentication


def test_userauth_ends_in_private_callbacks() -> None:
    server = userauth.SSHUserAuthServer
    assert parameters(server._cbFinishedAuth) == ["self", "result"]
    assert parameters(server._ebBadAuth) == ["self", "reason"]
    text = source(server.ssh_USERAUTH_REQUEST)
    assert "self._cbFinishedAuth" in text
    assert "self._ebBadAuth" in text


def test_userauth_internals_forward() -> None:
    mro = ourFactory.UserAuthServer.__mro__
    assert mro.index(_conch.UserAuthServerInternals) < mro.index(userauth.SSHUserAuthServer)
    assert "_cbFinishedAuth" not in vars(ourFactory.UserAuthServer)
    assert "_ebBadAuth" not in vars(ourFactory.UserAuthServer)


# -- RSA signature algorithms (issue 14): public names whose behaviour we rely on


def test_server_offers_what_its_host_keys_can_sign_and_signs_with_the_negotiated_one() -> None:
    """
    Conch's factory fills C{supportedPublicKeys} with every signature
    algorithm of its host keys (an RSA key: ssh-rsa too), which our
    transport filters by C{--allowedHostKeyAlgorithms}; its server signs the
    host key proof with the negotiated name, so C{ssh-rsa} means SHA-1.
    """
    assert "supportedSignatureAlgorithms()" in source(factory.SSHFactory.buildProtocol)
    rsaKey = keys.Key(rsa.generate_private_key(65537, 2048))
    assert set(rsaKey.supportedSignatureAlgorithms()) == {
        b"rsa-sha2-512",
        b"rsa-sha2-256",
        b"ssh-rsa",
    }
    assert "signatureType=self.keyAlg" in inspect.getsource(conchTransport.SSHServerTransport)


def test_client_keeps_the_servers_extensions() -> None:
    """
    The proxy's backend login reads C{server-sig-algs} from
    C{peerExtensions}, which Conch's C{ssh_EXT_INFO} fills.
    """
    client = conchTransport.SSHClientTransport()
    assert client.peerExtensions == {}
    client.ssh_EXT_INFO(b"\0\0\0\1" + common.NS(b"server-sig-algs") + common.NS(b"rsa-sha2-512"))
    assert client.peerExtensions == {b"server-sig-algs": b"rsa-sha2-512"}


def test_userauth_client_hooks_overridden_by_the_backend_login() -> None:
    """
    L{diegossh.proxy.backend.RouteUserAuth} replaces C{auth_publickey} (the
    offer) and C{ssh_USERAUTH_PK_OK_publickey} (the signature), because
    Conch's name the key type, C{ssh-rsa} for RSA; Conch reaches them by name.
    """
    client = userauth.SSHUserAuthClient
    assert 'getattr(self, "auth_" + ' in source(client.tryAuth)
    assert '"ssh_USERAUTH_PK_OK_%s"' in source(client.ssh_USERAUTH_PK_OK)
    assert parameters(client.auth_publickey) == ["self"]
    assert parameters(client.ssh_USERAUTH_PK_OK_publickey) == ["self", "packet"]
    started = source(client.serviceStarted)
    assert "self.triedPublicKeys" in started and "self.lastPublicKey" in started


# -- Conch's loggers


@pytest.mark.parametrize(
    ("ours", "conchs"),
    [
        (ourTransport.SSHServerTransport, conchTransport.SSHTransportBase),
        (ourTransport.SSHClientTransport, conchTransport.SSHTransportBase),
        (ourConnection.SSHConnection, connection.SSHConnection),
        (ourFactory.UserAuthServer, userauth.SSHUserAuthServer),
        (ourFactory.SSHServerFactory, factory.SSHFactory),
        (ourSession.SessionChannel, channel.SSHChannel),
    ],
    ids=lambda cls: cls.__name__,
)
def test_conch_logs_through_class_attribute(ours: type, conchs: type) -> None:
    """
    Conch's classes log through the class attribute C{_log}, where
    L{_conch.routeConchLog} puts our logger.
    """
    assert isinstance(inspect.getattr_static(conchs, "_log"), Logger)
    assert "self._log." in inspect.getsource(conchs)
    assert conchs in ours.__mro__
    assert inspect.getattr_static(ours, "_log") is inspect.getattr_static(ours, "log")


# -- Conch's key-exchange registry


def test_kex_registry_is_a_dict_of_algorithms() -> None:
    registry = _kex._kexAlgorithms
    assert isinstance(registry, dict)
    assert all(isinstance(name, bytes) for name in registry)
    assert b"diffie-hellman-group14-sha1" in registry
    assert _kex.getKex(b"diffie-hellman-group14-sha1") is registry[b"diffie-hellman-group14-sha1"]


def test_fixed_group_interface() -> None:
    iface = _kex._IFixedGroupKexAlgorithm
    assert issubclass(iface, Interface)
    assert {"preference", "hashProcessor", "prime", "generator"} <= set(iface.names(all=True))
    assert _conch.IFixedGroupKexAlgorithm is iface


def test_fixed_group_lookup() -> None:
    generator, prime = _conch.fixedGroup(b"diffie-hellman-group14-sha1")
    assert generator == 2
    assert prime.bit_length() == 2048


def test_registered_groups_are_used_by_conch() -> None:
    kex.install()
    for name in (b"diffie-hellman-group14-sha256", b"diffie-hellman-group16-sha512"):
        assert _kex.isFixedGroup(name)
        assert name in _kex.getSupportedKeyExchanges()
        assert _kex.getDHGeneratorAndPrime(name)[0] == 2


# -- the reactor's process internals


def test_process_steps() -> None:
    base = process._BaseProcess
    assert parameters(base._fork) == [
        "self", "path", "uid", "gid", "executable", "args", "environment", "kwargs",
    ]  # fmt: skip
    assert parameters(base._execChild) == [
        "self", "path", "uid", "gid", "executable", "args", "environment",
    ]  # fmt: skip
    assert parameters(process.Process._setupChild) == ["self", "fdmap"]
    assert parameters(process.PTYProcess._setupChild) == ["self", "masterfd", "slavefd"]
    text = source(base._fork)
    assert "self._trySpawnInsteadOfFork(" in text
    assert "self._setupChild(**kwargs)" in text
    assert "self._execChild(path, uid, gid, executable, args, environment)" in text


def test_pty_process_forks_with_its_descriptors_as_keywords() -> None:
    """
    L{ourProcess.PTYSessionProcess.forkChild} closes C{masterfd} and
    C{slavefd} from the keywords when the fork fails.
    """
    text = source(process.PTYProcess.__init__)
    assert "self._fork(" in text
    assert "masterfd=" in text and "slavefd=" in text


def test_spawn_instead_of_fork() -> None:
    assert parameters(process._BaseProcess._trySpawnInsteadOfFork) == [
        "self", "path", "uid", "gid", "executable", "args", "environment", "kwargs",
    ]  # fmt: skip


def test_process_internals_sit_before_twisted() -> None:
    for cls in (ourProcess.PipeProcess, ourProcess.PTYSessionProcess):
        mro = cls.__mro__
        assert mro.index(_twisted.ProcessInternals) < mro.index(process._BaseProcess)
        for name in ("_fork", "_setupChild", "_execChild", "_trySpawnInsteadOfFork"):
            assert getattr(cls, name) is getattr(_twisted.ProcessInternals, name)


# -- the reactor's TCP internals


def test_adopt_listening_port() -> None:
    assert isinstance(inspect.getattr_static(tcp.Port, "_fromListeningDescriptor"), classmethod)
    assert parameters(tcp.Port._fromListeningDescriptor) == [
        "reactor", "fd", "addressFamily", "factory",
    ]  # fmt: skip

    class MyPort(tcp.Port):
        pass

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        sock.setblocking(False)
        port = _twisted.adoptListeningPort(MyPort, object(), sock.fileno(), sock.family, Factory())
        try:
            assert type(port) is MyPort
            assert port.factory is not None
            # Twisted took its own duplicate of the descriptor.
            assert port._preexistingSocket.fileno() != sock.fileno()
        finally:
            port._preexistingSocket.close()


def test_port_accepts_up_to_numberAccepts() -> None:
    """
    L{diegossh.proxy.workers.SharedPort} makes C{numberAccepts} 1 to take one
    connection per wake-up; Twisted's port reads and rewrites it.
    """
    text = source(tcp.Port.doRead)
    assert "self.numberAccepts" in text


def test_socket_io_sizes() -> None:
    """
    L{diegossh.ssh.transport} widens C{bufferSize} (bytes per C{recv}) and
    C{SEND_LIMIT} (bytes per C{send}) on each connection.
    """
    assert isinstance(tcp.Connection.bufferSize, int)
    assert isinstance(abstract.FileDescriptor.SEND_LIMIT, int)
    assert "self.bufferSize" in source(tcp.Connection.doRead)
    assert "self.SEND_LIMIT" in source(tcp.Connection.writeSomeData)


# -- what Twisted takes from the modules the daemon defers (diegossh.sshd.lazyimports)

# (Twisted module, module imported, names taken) for every import of a
# deferred module in the Twisted modules the daemon loads: with these, the
# deferred modules' bodies never run. Another import (a new name, a use at
# import time) would run a body at start, or (a name lazyimports does not
# bind) fail: update DEFERRED in diegossh/sshd/lazyimports.py and this list.
DEFERRED_IMPORTS = {
    ("twisted.internet.defer", "asyncio", ("AbstractEventLoop", "Future", "iscoroutine")),
    ("twisted.python.compat", "http", ("cookiejar",)),
}


def _importsOf(module: str, path: str, deferred: set[str]) -> set[tuple[str, str, tuple[str, ...]]]:
    import ast

    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in deferred or alias.name in deferred:
                    found.add((module, alias.name, ()))
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = tuple(sorted(alias.name for alias in node.names))
            if node.module in deferred or node.module.split(".")[0] in deferred:
                found.add((module, node.module, names))
            elif any(f"{node.module}.{name}" in deferred for name in names):
                found.add((module, node.module, names))
    return found


@pytest.mark.slow  # over half a second of wall-clock time: not in make unit
def test_what_the_daemons_twisted_imports_from_deferred_modules() -> None:
    import json
    import subprocess
    import sys

    from diegossh.sshd.lazyimports import DEFERRED

    # the Twisted modules the daemon loads, and whether the bodies stayed unrun
    code = (
        "import json, sys\n"
        "from diegossh.sshd.script import refuseUnneeded\nrefuseUnneeded()\n"
        "from diegossh.sshd.lazyimports import deferTwistedsStdlib, isDeferred\n"
        "deferTwistedsStdlib()\n"
        "import diegossh.sshd.dropin, twisted.internet.reactor\n"
        "from diegossh.sshd import session, programsession\n"
        "print(json.dumps([sorted((n, m.__file__) for n, m in sys.modules.items()"
        " if n.startswith('twisted.') and getattr(m, '__file__', None)),"
        " [n for n in ('asyncio', 'http.cookiejar') if not isDeferred(sys.modules[n])]]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    twistedModules, bodiesRun = json.loads(out.stdout)
    assert bodiesRun == []
    found: set[tuple[str, str, tuple[str, ...]]] = set()
    assert len(twistedModules) > 50  # the reactor, Conch...
    for module, path in twistedModules:
        found |= _importsOf(module, path, set(DEFERRED))
    assert found == DEFERRED_IMPORTS
    _, asyncioNames = DEFERRED["asyncio"]
    assert set(asyncioNames) == {"AbstractEventLoop", "Future", "iscoroutine"}
