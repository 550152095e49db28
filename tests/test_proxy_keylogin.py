"""
Public-key logins for key realms: a known key is confirmed before a
signature (PK_OK), then must be proven; unknown keys, bad signatures and
security keys are denied.
"""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from twisted.conch.error import ValidPublicKey
from twisted.conch.ssh import common, keys
from twisted.cred.credentials import SSHPrivateKey
from twisted.internet import defer
from zope.interface import implementer

from diegossh.interfaces import IKeyRealm
from diegossh.proxy.errors import LoginDenied
from diegossh.proxy.keylogin import KeyLogin, KeyRealmChecker
from diegossh.proxy.login import BadCredentials, Denied
from diegossh.ssh.keys import sha256Fingerprint
from tests.support.keys import key

KNOWN = key("ed25519")
OTHER = keys.Key(ed25519.Ed25519PrivateKey.generate())  # not the cached one


@implementer(IKeyRealm)
class OneKeyRealm:
    def __init__(self, name: str, blob: bytes, denial: LoginDenied | None = None) -> None:
        self.name = name
        self.blob = blob
        self.denial = denial
        self.asked = 0

    def authorize(self, username: str, k: Any) -> defer.Deferred[str]:
        self.asked += 1
        if k.blob() == self.blob:
            return defer.succeed(f"grant-for-{username}")
        return defer.fail(self.denial or BadCredentials())

    def avatarFor(self, login: Any, client: str) -> Any:
        raise NotImplementedError


def credentials(k: Any, signer: Any = None, data: bytes = b"session-data") -> SSHPrivateKey:
    if signer is None:
        return SSHPrivateKey(b"limited", b"ssh-ed25519", k.public().blob(), None, None)
    return SSHPrivateKey(b"limited", b"ssh-ed25519", k.public().blob(), data, signer.sign(data))


def outcome(checker: KeyRealmChecker, creds: Any) -> Any:
    results: list[Any] = []
    checker.requestAvatarId(creds).addBoth(results.append)
    assert len(results) == 1
    return results[0]


def test_probe_of_a_known_key_is_answered_pk_ok() -> None:
    checker = KeyRealmChecker([OneKeyRealm("bastion", KNOWN.public().blob())])
    assert outcome(checker, credentials(KNOWN)).check(ValidPublicKey)


def test_signed_login_with_the_known_key() -> None:
    realm = OneKeyRealm("bastion", KNOWN.public().blob())
    login = outcome(KeyRealmChecker([realm]), credentials(KNOWN, KNOWN))
    assert isinstance(login, KeyLogin)
    assert login.grant == "grant-for-limited"
    assert login.realm is realm
    assert login.fingerprint == sha256Fingerprint(KNOWN.public())
    assert login.fingerprint.startswith("SHA256:")


def test_signature_by_another_key_is_denied() -> None:
    checker = KeyRealmChecker([OneKeyRealm("bastion", KNOWN.public().blob())])
    failure = outcome(checker, credentials(KNOWN, OTHER))
    assert failure.check(Denied)
    assert failure.value.realm == "bastion"
    assert not failure.value.visible


def test_unknown_key_is_denied_even_unsigned() -> None:
    checker = KeyRealmChecker([OneKeyRealm("bastion", KNOWN.public().blob())])
    assert outcome(checker, credentials(OTHER)).check(Denied)
    assert outcome(checker, credentials(OTHER, OTHER)).check(Denied)


def test_realms_are_tried_in_turn_and_a_visible_reason_survives() -> None:
    first = OneKeyRealm("one", b"nothing", LoginDenied("target is stopping"))
    second = OneKeyRealm("two", KNOWN.public().blob())
    login = outcome(KeyRealmChecker([first, second]), credentials(KNOWN, KNOWN))
    assert login.realm is second and first.asked == 1
    failure = outcome(KeyRealmChecker([first]), credentials(OTHER, OTHER))
    assert failure.value.visible and failure.value.denial.reason == "target is stopping"


@pytest.mark.parametrize("blob", [b"", b"\x00\x00\x00\x07ssh-rsa", b"garbage" * 10])
def test_garbage_key_blobs_are_denied(blob: bytes) -> None:
    checker = KeyRealmChecker([OneKeyRealm("bastion", KNOWN.public().blob())])
    creds = SSHPrivateKey(b"limited", b"ssh-ed25519", blob, b"x", b"y")
    assert outcome(checker, creds).check(Denied)


# -- what else an attacker tries (issue 13)


def signedCredentials(k: Any, signedData: bytes, claimedData: bytes) -> SSHPrivateKey:
    return SSHPrivateKey(
        b"limited", b"ssh-ed25519", k.public().blob(), claimedData, k.sign(signedData)
    )


def test_a_signature_from_another_session_is_denied() -> None:
    """A signature replayed from another session (other session id) is refused."""
    checker = KeyRealmChecker([OneKeyRealm("bastion", KNOWN.public().blob())])
    creds = signedCredentials(KNOWN, b"session-one", b"session-two")
    failure = outcome(checker, creds)
    assert failure.check(Denied) and not failure.value.visible


def test_no_key_realm_denies_every_key() -> None:
    assert outcome(KeyRealmChecker([]), credentials(KNOWN, KNOWN)).check(Denied)


def test_security_keys_are_denied_without_asking_a_realm() -> None:
    realm = OneKeyRealm("bastion", KNOWN.public().blob())
    pk = common.getNS(KNOWN.public().blob(), 2)[1]
    blob = common.NS(b"sk-ssh-ed25519@openssh.com") + common.NS(pk) + common.NS(b"ssh:")
    assert keys.Key.fromString(blob).isSecurityKey()
    creds = SSHPrivateKey(b"limited", b"sk-ssh-ed25519@openssh.com", blob, b"x", b"y")
    assert outcome(KeyRealmChecker([realm]), creds).check(Denied)
    assert realm.asked == 0


class BrokenRealm(OneKeyRealm):
    def authorize(self, username: str, k: Any) -> defer.Deferred[str]:
        self.asked += 1
        raise ZeroDivisionError()


def test_a_realms_bug_fails_the_login_and_stops_the_search() -> None:
    """
    A realm that breaks does not let the next realm grant by default; the
    error surfaces (the server logs it and says "internal error").
    """
    broken = BrokenRealm("broken", b"")
    later = OneKeyRealm("later", KNOWN.public().blob())
    failure = outcome(KeyRealmChecker([broken, later]), credentials(KNOWN, KNOWN))
    assert failure.check(ZeroDivisionError)
    assert later.asked == 0


def test_an_abandoned_key_login_cancels_the_realms_check() -> None:
    cancelled: list[bool] = []

    class SlowRealm(OneKeyRealm):
        def authorize(self, username: str, k: Any) -> defer.Deferred[str]:
            return defer.Deferred(lambda _: cancelled.append(True))

    d = KeyRealmChecker([SlowRealm("slow", b"")]).requestAvatarId(credentials(KNOWN, KNOWN))
    results: list[Any] = []
    d.addBoth(results.append)
    d.cancel()
    assert cancelled == [True]
    assert results[0].check(defer.CancelledError)
