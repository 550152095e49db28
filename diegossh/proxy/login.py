# -*- test-case-name: tests.test_proxy_login -*-
"""
From C{realm:subject} and a password to a target: the realm dispatch every
login goes through, and the C{diego} realm.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass, field
from typing import Any

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.python.failure import Failure
from zope.interface import implementer

from diegossh.interfaces import IAuthRealm, ILRPDirectory
from diegossh.proxy.errors import LoginDenied
from diegossh.proxy.target import LRPTarget

INT32_MAX = 2**31 - 1


class BadCredentials(LoginDenied):
    """
    The secret was wrong: the user learns nothing more than "denied".
    """

    def __init__(self) -> None:
        super().__init__("permission denied")


class Denied(UnauthorizedLogin):
    """
    What the portal sees of a L{LoginDenied}: Conch's userauth treats
    L{UnauthorizedLogin} as an ordinary failed attempt. C{stage} says where
    it was refused, for the metrics' bounded C{reason}: C{"lookup"} (the
    realm, or the directory, said no) or C{"backend"} (the instance did).
    """

    def __init__(self, denial: LoginDenied, realm: str, stage: str = "lookup") -> None:
        super().__init__(denial.reason)
        self.denial = denial
        self.realm = realm
        self.stage = stage

    @property
    def metricsReason(self) -> str:
        """
        The login's failure as one of the metrics' fixed reasons.
        """
        if isinstance(self.denial, BadCredentials) or self.denial.credentials:
            return "credentials"
        return self.stage

    @property
    def visible(self) -> bool:
        return not isinstance(self.denial, BadCredentials)


@dataclass(frozen=True)
class LoginResult:
    """
    A resolved login: the target, and what the access log should say of who.
    """

    realm: str
    target: LRPTarget
    audit: dict[str, str] = field(default_factory=dict)


@implementer(IUsernamePassword)
@dataclass(frozen=True)
class ProxyCredentials:
    """
    A password login with the client's address, for the access log.
    """

    username: bytes
    password: bytes = field(repr=False)
    client: str = ""

    def checkPassword(self, password: bytes) -> bool:
        return hmac.compare_digest(password, self.password)


def parseSubject(subject: str, guidPattern: re.Pattern[str]) -> tuple[str, int]:
    """
    Split C{GUID/INDEX}, both anchored; the index must fit in an int32.
    """
    guid, slash, index = subject.partition("/")
    if not slash or not guidPattern.fullmatch(guid) or not re.fullmatch(r"[0-9]{1,10}", index):
        raise BadCredentials()
    number = int(index)
    if number > INT32_MAX:
        raise BadCredentials()
    return guid, number


@implementer(IAuthRealm)
class DiegoRealm:
    """
    C{diego:PROCESS-GUID/INDEX} with the shared diego credentials.
    """

    name = "diego"
    _GUID = re.compile(r"[A-Za-z0-9_-]+")

    def __init__(self, credentials: str, directory: ILRPDirectory) -> None:
        self._credentials = credentials.encode()
        self._directory = directory

    def resolve(self, subject: str, password: bytes) -> defer.Deferred[LoginResult]:
        try:
            guid, index = parseSubject(subject, self._GUID)
        except LoginDenied as e:
            return defer.fail(e)
        if not hmac.compare_digest(password, self._credentials):
            return defer.fail(BadCredentials())
        d: defer.Deferred[Any] = defer.maybeDeferred(self._directory.lookup, guid, index)
        return d.addCallback(lambda target: LoginResult(self.name, target))


@implementer(ICredentialsChecker)
class RealmDispatcher:
    """
    Sends each login to the realm its username names; unknown or disabled
    realms are denied before any network call.
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, realms: list[Any]) -> None:
        self.realms = {realm.name: realm for realm in realms}

    def requestAvatarId(self, credentials: Any) -> Any:
        try:
            username = credentials.username.decode("utf-8")
        except UnicodeDecodeError:
            return defer.fail(Denied(BadCredentials(), "?"))
        realmName, colon, subject = username.partition(":")
        realm = self.realms.get(realmName) if colon else None
        if realm is None:
            return defer.fail(Denied(BadCredentials(), realmName or "?"))

        def denied(failure: Failure) -> Failure:
            if isinstance(failure.value, LoginDenied):
                return Failure(Denied(failure.value, realmName))
            return failure

        d: defer.Deferred[LoginResult] = defer.maybeDeferred(
            realm.resolve, subject, credentials.password
        )
        return d.addErrback(denied)
