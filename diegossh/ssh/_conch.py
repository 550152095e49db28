# -*- test-case-name: tests.test_twisted_contract -*-
"""
Every private name of Twisted Conch that diegossh relies on, in one place.

Our transport replaces Conch's packet layer but keeps its key exchange, so it
must read and write the key-exchange state Conch keeps in private attributes;
our user authentication and loggers hook into Conch where it offers no public
hook; our extra key exchanges go into Conch's private algorithm registry. Each
such name is reached here and nowhere else, under a name of ours, and
C{tests/test_twisted_contract.py} checks every one of them against the
installed Twisted, so an upgrade that changes one fails that test, by name,
instead of a handshake somewhere. C{docs/twisted.md} lists them and says what
to do on an upgrade.

Two kinds of access:
  - reading and writing Conch's private state: constants and the properties
    of the adapter mixins below;
  - overriding Conch's private methods: the adapter mixins own the private
    method and forward it to a public name of ours, which a subclass overrides
    and which calls Conch's with C{super()}.

The process and socket internals of Twisted proper (not Conch) are in
L{diegossh._twisted}: they serve the daemon and the proxy, not the SSH layer.
"""

from __future__ import annotations

from typing import Any, TypeVar

from twisted.conch.ssh import _kex
from twisted.conch.ssh import transport as conchTransport

_T = TypeVar("_T", bound=type)

# -- the transport's key-exchange state (SSHTransportBase._keyExchangeState)

# No key exchange under way: packets go out as they are sent.
KEY_EXCHANGE_NONE: str = conchTransport.SSHTransportBase._KEY_EXCHANGE_NONE
# We sent KEXINIT: until the exchange ends, non-kex packets are held back.
KEY_EXCHANGE_REQUESTED: str = conchTransport.SSHTransportBase._KEY_EXCHANGE_REQUESTED


class TransportInternals:
    """
    Named access to the private state and hooks of Conch's C{SSHTransportBase}
    and C{SSHClientTransport}. Mixed in before Conch's transport class.
    """

    # Conch's, set by Conch's ssh_KEXINIT and by us.
    _keyExchangeState: str
    _blockedByKeyExchange: Any  # Conch's class attribute says None
    _gotNewKeys: int

    @property
    def keyExchangeState(self) -> str:
        """
        L{KEY_EXCHANGE_NONE}, L{KEY_EXCHANGE_REQUESTED}, or Conch's third state
        (the peer started the exchange); Conch's C{ssh_KEXINIT} reads and sets it.
        """
        return self._keyExchangeState

    @keyExchangeState.setter
    def keyExchangeState(self, state: str) -> None:
        self._keyExchangeState = state

    @property
    def heldForKeyExchange(self) -> list[tuple[int, bytes]] | None:
        """
        Messages held back until the key exchange ends, as (type, payload), or
        L{None} outside one. Conch's C{ssh_KEXINIT} starts the list when the
        peer begins the exchange.
        """
        held: list[tuple[int, bytes]] | None = self._blockedByKeyExchange
        return held

    @heldForKeyExchange.setter
    def heldForKeyExchange(self, held: list[tuple[int, bytes]] | None) -> None:
        self._blockedByKeyExchange = held

    def sendableDuringKeyExchange(self, messageType: int) -> bool:
        """
        Whether a message of C{messageType} may go out during a key exchange
        (RFC 4253 section 7.1), as Conch decides it.
        """
        allowed: bool = self._allowedKeyExchangeMessageType(messageType)  # type: ignore[attr-defined]
        return allowed

    def clearEarlyNewKeys(self) -> None:
        """
        Conch's client remembers a NEWKEYS that came before its keys were
        ready, in a flag its C{connectionMade} clears and its C{_keySetup}
        reads. We replace that C{connectionMade} and hold such a NEWKEYS in our
        packet loop instead, so the flag only needs to exist, cleared.
        """
        self._gotNewKeys = 0

    def _keySetup(self, sharedSecret: bytes, exchangeHash: bytes) -> None:
        # Conch's private hook: the keys are computed, our NEWKEYS is next.
        self.keySetup(sharedSecret, exchangeHash)

    def keySetup(self, sharedSecret: bytes, exchangeHash: bytes) -> None:
        """
        Derive the new keys and send NEWKEYS (Conch's C{_keySetup}); override
        and call this with C{super()} to act once the keys exist.
        """
        super()._keySetup(sharedSecret, exchangeHash)  # type: ignore[misc]


class UserAuthServerInternals:
    """
    Conch's C{SSHUserAuthServer} ends each check in a private callback or
    errback; these forward them to public names. Mixed in before Conch's class.
    """

    def _cbFinishedAuth(self, result: Any) -> None:
        self.authSucceeded(result)

    def authSucceeded(self, result: Any) -> None:
        """
        A login succeeded: Conch starts the next service. Override and call
        this with C{super()}.
        """
        super()._cbFinishedAuth(result)  # type: ignore[misc]

    def _ebBadAuth(self, reason: Any) -> Any:
        return self.authFailed(reason)

    def authFailed(self, reason: Any) -> Any:
        """
        An attempt failed: Conch counts it and answers FAILURE. Override and
        call this with C{super()}.
        """
        return super()._ebBadAuth(reason)  # type: ignore[misc]


def routeConchLog(cls: _T) -> _T:
    """
    Class decorator: Conch's own messages from C{cls} go through C{cls.log}.

    Conch's transport, services, channels and factory log through a private
    class attribute, C{_log}; putting our logger there is what bounds,
    throttles and redacts Conch's lines too, not only ours.
    """
    cls._log = cls.__dict__["log"]  # type: ignore[attr-defined]
    return cls


# -- key exchange algorithms (twisted.conch.ssh._kex)

# What a fixed-group Diffie-Hellman method provides: preference, hashProcessor,
# prime, generator. Conch does the arithmetic for any object providing it.
IFixedGroupKexAlgorithm: Any = _kex._IFixedGroupKexAlgorithm


def fixedGroup(name: bytes) -> tuple[int, int]:
    """
    The generator and prime of Conch's fixed-group method C{name}.
    """
    return _kex.getDHGeneratorAndPrime(name)


def registerKeyExchange(name: bytes, algorithm: Any) -> None:
    """
    Make Conch's key exchange know C{name}, implemented by C{algorithm}, unless
    it already does. Raises L{RuntimeError} at start-up if the registry is not
    the dict it was, rather than failing a user's handshake later.
    """
    registry = _kex._kexAlgorithms
    if not isinstance(registry, dict):  # pragma: no cover - a Twisted change
        raise RuntimeError("twisted.conch.ssh._kex changed; diegossh.ssh._conch needs updating")
    registry.setdefault(name, algorithm)
