# -*- test-case-name: tests.test_proxy_cf -*-
"""
The C{cf} realm: C{cf:APP-GUID/INDEX} with a UAA one-time code as password.
UAA turns the code into a token, Cloud Controller says whether that user may
ssh into the instance and names its process, and from there on the login goes
as in the C{diego} realm.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer
from zope.interface import implementer

from diegossh.interfaces import IAuthRealm, ILRPDirectory
from diegossh.proxy.cf.authenticator import CFAuthenticator, CFLogin
from diegossh.proxy.cf.factory import makeCFHTTPClients
from diegossh.proxy.cf.usernames import parseAppInstance
from diegossh.proxy.errors import LoginDenied
from diegossh.proxy.login import BadCredentials, LoginResult
from diegossh.proxy.pools import PoolService


@implementer(IAuthRealm)
class CFRealm:
    name = "cf"

    def __init__(self, authenticator: CFAuthenticator, directory: ILRPDirectory) -> None:
        self._authenticator = authenticator
        self._directory = directory

    def resolve(self, subject: str, password: bytes) -> defer.Deferred[LoginResult]:
        try:
            instance = parseAppInstance(subject)
        except LoginDenied:
            return defer.fail(BadCredentials())
        d = self._authenticator.authenticate(instance.app_guid, instance.index, password)

        def found(login: CFLogin) -> Any:
            lookup: defer.Deferred[Any] = defer.maybeDeferred(
                self._directory.lookup, login.process_guid, login.index
            )
            audit = {"app_guid": login.app_guid, "user_name": login.user_name,
                     "user_id": login.user_id}  # fmt: skip
            return lookup.addCallback(lambda target: LoginResult(self.name, target, audit))

        return d.addCallback(found)


@dataclass(frozen=True, slots=True)
class CFSettings:
    """
    The C{cf} realm's settings: UAA (which turns the one-time code into a
    token) and Cloud Controller (which says who may ssh where).
    """

    ccAPIURL: str
    uaaTokenURL: str
    uaaUsername: str
    uaaPassword: str = field(repr=False)
    ccAPICACert: str | None
    uaaCACert: str | None
    skipCertVerify: bool
    communicationTimeout: float

    @classmethod
    def fromSettings(cls, settings: Mapping[str, Any]) -> CFSettings:
        """
        From the proxy's raw settings; L{ValueError} names a missing flag.
        """
        for required in ("ccAPIURL", "uaaTokenURL", "uaaUsername", "uaaPassword"):
            if not settings.get(required):
                raise ValueError(f"the cf realm needs --{required}")
        return cls(
            ccAPIURL=settings["ccAPIURL"],
            uaaTokenURL=settings["uaaTokenURL"],
            uaaUsername=settings["uaaUsername"],
            uaaPassword=settings["uaaPassword"],
            ccAPICACert=settings.get("ccAPICACert") or None,
            uaaCACert=settings.get("uaaCACert") or None,
            skipCertVerify=bool(settings.get("skipCertVerify")),
            communicationTimeout=float(settings["communicationTimeout"]),
        )


def makeCFRealm(
    reactor: Any, settings: CFSettings, directory: ILRPDirectory, pools: PoolService
) -> CFRealm:
    """
    Build the realm from its settings, with one pool of kept-alive HTTPS
    connections shared by UAA and Cloud Controller calls, made by C{pools}
    (which closes it when the proxy stops).
    """
    pool = pools.pool(persistent=True, maxPersistentPerHost=16)
    uaa, cc = makeCFHTTPClients(
        reactor,
        pool,
        uaaTokenURL=settings.uaaTokenURL,
        uaaUsername=settings.uaaUsername,
        uaaPassword=settings.uaaPassword,
        uaaCACert=settings.uaaCACert,
        ccAPIURL=settings.ccAPIURL,
        ccAPICACert=settings.ccAPICACert,
        skipCertVerify=settings.skipCertVerify,
        communicationTimeout=settings.communicationTimeout,
    )
    return CFRealm(CFAuthenticator(uaa, cc), directory)
