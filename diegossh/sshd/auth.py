# -*- test-case-name: tests.test_malformed_login,tests.test_sshd_lifecycle_interop -*-
"""
Who may log into the daemon: the holder of the one authorized key, whatever
user name they give; or, with C{--allowUnauthenticatedClients}, anyone.

A C{publickey} request that does not parse (no signature flag, a key blob
that is not a key) is an ordinary failed attempt here. Conch's own method
raises on an empty request and logs an unreadable key as an error, both on
input any client can send.
"""

from __future__ import annotations

import hmac
from typing import Any

from twisted.conch.error import ValidPublicKey
from twisted.conch.interfaces import IConchUser
from twisted.conch.ssh import keys
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import Anonymous, IAnonymous, ISSHPrivateKey
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from zope.interface import implementer

from diegossh.ssh.factory import UserAuthServer, unreadablePublicKeyRequest


@implementer(ICredentialsChecker)
class AuthorizedKeyChecker:
    """
    Accepts a signature made with the one authorized key.
    """

    credentialInterfaces = (ISSHPrivateKey,)

    def __init__(self, authorizedKey: keys.Key) -> None:
        self._blob = authorizedKey.public().blob()

    def requestAvatarId(self, credentials: Any) -> defer.Deferred[Any]:
        if not hmac.compare_digest(credentials.blob, self._blob):
            return defer.fail(UnauthorizedLogin("key not authorized"))
        if not credentials.signature:
            # The client asks whether the key would do before signing.
            return defer.fail(ValidPublicKey())
        try:
            key = keys.Key.fromString(credentials.blob)
            ok = key.verify(credentials.signature, credentials.sigData)
        except Exception:
            ok = False
        if not ok:
            return defer.fail(UnauthorizedLogin("bad signature"))
        return defer.succeed(credentials.username)


class DaemonUserAuthServer(UserAuthServer):
    """
    Adds the C{none} method, offered only when the portal has an anonymous
    checker, and refuses an unreadable C{publickey} request quietly.
    """

    interfaceToMethod = {**UserAuthServer.interfaceToMethod, IAnonymous: b"none"}

    def auth_publickey(self, packet: bytes) -> Any:
        problem = unreadablePublicKeyRequest(packet)
        if problem is not None:
            return defer.fail(UnauthorizedLogin(problem))
        return super().auth_publickey(packet)

    def auth_none(self, packet: bytes) -> Any:
        return self.portal.login(Anonymous(), None, IConchUser)
