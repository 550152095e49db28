# -*- test-case-name: tests.test_proxy_keylogin -*-
"""
Public-key logins for realms whose sessions end at the proxy (L{IKeyRealm}),
such as the container bastion.

The checker asks the realms whether the offered key may log in before it
checks a signature, so a client probing keys learns only "no" for keys no
realm knows; a key a realm knows is answered with C{PK_OK} and must then be
proven with a signature over this session's id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twisted.conch.error import ValidPublicKey
from twisted.conch.ssh import keys
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import ISSHPrivateKey
from twisted.internet import defer
from zope.interface import implementer

from diegossh.interfaces import IKeyRealm
from diegossh.proxy.errors import LoginDenied
from diegossh.proxy.login import BadCredentials, Denied
from diegossh.ssh.keys import sha256Fingerprint


@dataclass(frozen=True)
class KeyLogin:
    """
    A verified key login: which realm granted it, the grant, and the key's
    SHA256 fingerprint for the access log.
    """

    realm: IKeyRealm
    grant: Any
    username: str
    fingerprint: str


@implementer(ICredentialsChecker)
class KeyRealmChecker:
    """
    Tries each key realm in turn; the first that grants the key wins.
    """

    credentialInterfaces = (ISSHPrivateKey,)

    def __init__(self, realms: list[IKeyRealm]) -> None:
        self.realms = list(realms)

    def requestAvatarId(self, credentials: Any) -> defer.Deferred[Any]:
        return defer.ensureDeferred(self._check(credentials))

    async def _check(self, credentials: Any) -> KeyLogin:
        username = credentials.username.decode("utf-8", "replace")
        try:
            key = keys.Key.fromString(credentials.blob)
        except Exception:
            raise Denied(BadCredentials(), "?") from None
        if key.isSecurityKey():
            # Our realms know plain keys; sk-* keys would need their own checks.
            raise Denied(BadCredentials(), "?")
        grant, realm = await self._grant(username, key)
        if not credentials.signature:
            raise ValidPublicKey()
        try:
            verified = key.verify(credentials.signature, credentials.sigData)
        except Exception:
            verified = False
        if not verified:
            raise Denied(BadCredentials(), realm.name)
        return KeyLogin(realm, grant, username, sha256Fingerprint(key))

    async def _grant(self, username: str, key: keys.Key) -> tuple[Any, IKeyRealm]:
        lastDenial: Denied | None = None
        for realm in self.realms:
            try:
                grant = await defer.maybeDeferred(realm.authorize, username, key)
            except LoginDenied as e:
                lastDenial = Denied(e, realm.name)
                continue
            return grant, realm
        if lastDenial is not None:
            raise lastDenial
        raise Denied(BadCredentials(), "?")
