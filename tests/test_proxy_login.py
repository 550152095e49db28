"""
The realm dispatch every password login goes through (L{RealmDispatcher})
and the C{diego} realm (L{DiegoRealm}), directly: which realm hears which
user name, what is refused before any lookup, and what the user may be
told.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from zope.interface import implementer
from zope.interface.verify import verifyObject

from diegossh.interfaces import IAuthRealm
from diegossh.proxy.errors import LoginDenied
from diegossh.proxy.login import (
    INT32_MAX,
    BadCredentials,
    Denied,
    DiegoRealm,
    LoginResult,
    ProxyCredentials,
    RealmDispatcher,
    parseSubject,
)
from tests.support.proxyworld import CREDENTIALS, GUID, FakeDirectory, target

GUID_PATTERN = re.compile(r"[A-Za-z0-9_-]+")


@implementer(IAuthRealm)
class Recorder:
    """A realm that writes down what it is asked and answers C{answer}."""

    def __init__(self, name: str, answer: Any = None) -> None:
        self.name = name
        self.answer = answer
        self.asked: list[tuple[str, bytes]] = []

    def resolve(self, subject: str, password: bytes) -> Any:
        self.asked.append((subject, password))
        if isinstance(self.answer, Exception):
            raise self.answer
        return defer.succeed(self.answer or LoginResult(self.name, target()))


def outcome(d: defer.Deferred[Any]) -> Any:
    results: list[Any] = []
    d.addBoth(results.append)
    assert len(results) == 1, "the answer was not synchronous"
    return results[0]


def credentials(username: bytes, password: bytes = b"pw") -> ProxyCredentials:
    return ProxyCredentials(username, password, "192.0.2.7:40022")


# -- the dispatcher


@pytest.mark.parametrize(
    "username",
    [b"", b"diego", b":x/0", b"nope:x/0", b"Diego:x/0", b" diego:x/0", b"\xff:x/0", b"diego\xff:x"],
)
def test_names_without_a_known_realm_never_reach_a_realm(username: bytes) -> None:
    realm = Recorder("diego")
    failure = outcome(RealmDispatcher([realm]).requestAvatarId(credentials(username)))
    assert failure.check(Denied) and failure.check(UnauthorizedLogin)
    assert isinstance(failure.value.denial, BadCredentials)
    assert not failure.value.visible
    assert realm.asked == []


def test_the_subject_is_everything_after_the_first_colon() -> None:
    one, two = Recorder("one"), Recorder("two")
    dispatcher = RealmDispatcher([one, two])
    outcome(dispatcher.requestAvatarId(credentials(b"two:a:b/0", b"secret")))
    assert one.asked == [] and two.asked == [("a:b/0", b"secret")]


def test_a_realms_denial_is_shown_and_names_the_realm() -> None:
    realm = Recorder("diego", LoginDenied("the app is stopping"))
    failure = outcome(RealmDispatcher([realm]).requestAvatarId(credentials(b"diego:x/0")))
    assert failure.check(Denied)
    assert failure.value.realm == "diego" and failure.value.visible
    assert failure.value.denial.reason == "the app is stopping"


def test_a_realms_bad_credentials_stay_invisible() -> None:
    realm = Recorder("diego", BadCredentials())
    failure = outcome(RealmDispatcher([realm]).requestAvatarId(credentials(b"diego:x/0")))
    assert failure.check(Denied) and not failure.value.visible


def test_a_realms_bug_is_not_dressed_as_a_denial() -> None:
    """
    Anything else passes through unchanged, so the server logs it as the
    internal error it is (and tells the user only "internal error").
    """
    realm = Recorder("diego", ZeroDivisionError())
    failure = outcome(RealmDispatcher([realm]).requestAvatarId(credentials(b"diego:x/0")))
    assert failure.check(ZeroDivisionError)


def test_a_password_realm_is_an_iauthrealm() -> None:
    assert verifyObject(IAuthRealm, DiegoRealm(CREDENTIALS, FakeDirectory()))


def test_the_password_is_kept_out_of_reprs() -> None:
    assert CREDENTIALS not in repr(credentials(b"diego:x/0", CREDENTIALS.encode()))
    assert credentials(b"u", b"pw").checkPassword(b"pw")
    assert not credentials(b"u", b"pw").checkPassword(b"pw ")


# -- the diego realm


@pytest.fixture
def directory() -> FakeDirectory:
    return FakeDirectory()


def resolve(directory: FakeDirectory, subject: str, password: bytes = CREDENTIALS.encode()) -> Any:
    return outcome(DiegoRealm(CREDENTIALS, directory).resolve(subject, password))


def test_the_right_password_resolves_the_instance(directory: FakeDirectory) -> None:
    result = resolve(directory, f"{GUID}/7")
    assert isinstance(result, LoginResult)
    assert result.realm == "diego" and result.target == target(GUID, 7)
    assert directory.lookups == [(GUID, 7)]


@pytest.mark.parametrize(
    "password",
    [b"", b"guess", CREDENTIALS.encode()[:-1], CREDENTIALS.encode() + b"\n", b"\xff" * 16],
)
def test_a_wrong_password_is_refused_before_the_lookup(
    directory: FakeDirectory, password: bytes
) -> None:
    failure = resolve(directory, f"{GUID}/0", password)
    assert failure.check(BadCredentials)
    assert directory.lookups == []


BAD_SUBJECTS = [
    "",
    GUID,
    f"{GUID}/",
    "/0",
    f"{GUID}/-1",
    f"{GUID}/+1",
    f"{GUID}/ 1",
    f"{GUID}/1 ",
    f"{GUID}/1\n",
    f"{GUID}/0x10",
    f"{GUID}/1e3",
    f"{GUID}/٣",  # an Arabic-Indic digit: int() takes it, the pattern must not
    f"{GUID}/{INT32_MAX + 1}",
    f"{GUID}/99999999999",
    f"{GUID}/0/0",
    f"../{GUID}/0",
    f"{GUID}\n/0",
    f"{GUID}%2F/0",
    "app guid/0",
    "app.guid/0",
]


@pytest.mark.parametrize("subject", BAD_SUBJECTS)
def test_malformed_subjects_are_refused_before_the_lookup(
    directory: FakeDirectory, subject: str
) -> None:
    """Even with the right password: no lookup for a name that is no instance."""
    failure = resolve(directory, subject)
    assert failure.check(BadCredentials), subject
    assert directory.lookups == []


def test_the_largest_index_is_int32_max(directory: FakeDirectory) -> None:
    assert parseSubject(f"{GUID}/{INT32_MAX}", GUID_PATTERN) == (GUID, INT32_MAX)
    assert parseSubject(f"{GUID}/0000000001", GUID_PATTERN) == (GUID, 1)
    assert isinstance(resolve(directory, f"{GUID}/{INT32_MAX}"), LoginResult)


def test_a_directory_denial_reaches_the_user(directory: FakeDirectory) -> None:
    failure = resolve(directory, "unknown-app/0")
    assert failure.check(LoginDenied) and not failure.check(BadCredentials)
    assert failure.value.reason == "no such process"


def test_a_held_lookup_is_cancelled_with_the_login(directory: FakeDirectory) -> None:
    directory.hold = True
    d = RealmDispatcher([DiegoRealm(CREDENTIALS, directory)]).requestAvatarId(
        credentials(f"diego:{GUID}/0".encode(), CREDENTIALS.encode())
    )
    d.cancel()
    assert directory.cancelled == 1
    assert outcome(d).check(defer.CancelledError)
