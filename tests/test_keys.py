"""
L{diegossh.ssh.keys}: host keys loaded and generated, fingerprints in every
form (checked against C{ssh-keygen -l} and Conch's C{Key.fingerprint}), a
backend's host key checked against a route's C{host_fingerprint}, and the
lines of C{authorized_keys} and C{.pub} files.
"""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from twisted.conch.ssh.keys import FingerprintFormats, Key
from twisted.logger import capturedLogs

from diegossh.ssh.keys import (
    MAX_KEYS_TEXT,
    BadKey,
    fingerprints,
    generateHostKey,
    hostKeyMatches,
    hostKeyOrGenerated,
    loadAuthorizedKey,
    loadHostKey,
    md5Fingerprint,
    parseAuthorizedKeyLine,
    parsePublishedKeys,
    sha256Fingerprint,
)
from tests.support.keys import authorizedKeyLine, key, writePrivateKey

ED25519_SEED = bytes(range(32))


def _ed25519OpenSSH() -> bytes:
    return ed25519.Ed25519PrivateKey.from_private_bytes(ED25519_SEED).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )


def _rsaPEM() -> bytes:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


# -- fingerprints


def test_forms_and_lengths() -> None:
    k = Key.fromString(_ed25519OpenSSH())
    prints = fingerprints(k)
    assert len(prints.md5) == 47 and len(prints.sha1) == 59 and len(prints.sha256) == 44
    assert prints.sha256.endswith("=")
    assert prints.openssh == "SHA256:" + prints.sha256.rstrip("=")
    assert prints.openssh == sha256Fingerprint(k) and prints.md5 == md5Fingerprint(k)
    assert fingerprints(k.public()) == prints


@pytest.mark.parametrize("kind", ["ed25519", "rsa", "p256", "p384", "p521"])
def test_conch_formats_are_ours(kind: str) -> None:
    """
    Conch's C{SHA256_BASE64} is our padded C{sha256} form and its
    C{MD5_HEX} our C{md5}; C{SHA256:} and SHA-1 colon hex are ours alone.
    """
    prints = fingerprints(key(kind))
    assert key(kind).fingerprint(FingerprintFormats.SHA256_BASE64) == prints.sha256
    assert key(kind).fingerprint(FingerprintFormats.MD5_HEX) == prints.md5


@pytest.mark.interop
@pytest.mark.parametrize("make", [_ed25519OpenSSH, _rsaPEM])
@pytest.mark.parametrize("public", [False, True], ids=["private", "pub"])
def test_matches_ssh_keygen(tmp_path: Path, make: Callable[[], bytes], public: bool) -> None:
    k = Key.fromString(make())
    path = tmp_path / "host_key"
    if public:
        path.write_text(authorizedKeyLine(k) + "\n")
    else:
        path.write_bytes(make() if make is _ed25519OpenSSH else k.toString("openssh"))
        path.chmod(0o600)
    prints = fingerprints(k)
    for algorithm, expected in (
        ("md5", "MD5:" + prints.md5),
        ("sha1", "SHA1:" + prints.sha1),
        ("sha256", prints.openssh),
    ):
        printed = subprocess.run(
            ["ssh-keygen", "-l", "-E", algorithm, "-f", str(path)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()[1]
        if algorithm == "sha1":  # ssh-keygen prints SHA-1 in base64: compare the bytes
            raw = base64.b64decode(printed.removeprefix("SHA1:") + "=")
            printed = "SHA1:" + ":".join(f"{b:02x}" for b in raw)
        assert printed == expected


# -- a backend's host key against the route's host_fingerprint

HOST = key("ed25519")
BLOB = HOST.public().blob()


def _accepted() -> list[str]:
    prints = fingerprints(HOST)
    return [
        prints.md5,
        prints.md5.upper(),
        prints.sha1,
        prints.sha1.upper(),
        prints.sha256,  # padded base64: what Cloud Controller publishes
        prints.openssh,  # ssh-keygen -l: unpadded
        prints.openssh + "=",  # SHA256: and padded
        f"  {prints.sha256}\n",
        "",  # no fingerprint: not checked
    ]


# by form, not value: the key is made afresh in each process (pytest-xdist
# workers must collect the same ids)
ACCEPTED_FORMS = [
    "md5", "md5-upper", "sha1", "sha1-upper", "sha256-padded", "openssh",
    "openssh-padded", "sha256-spaced", "none",
]  # fmt: skip


@pytest.mark.parametrize("expected", _accepted(), ids=ACCEPTED_FORMS)
def test_host_fingerprint_forms_are_accepted(expected: str) -> None:
    assert hostKeyMatches(expected, BLOB)


def _refused() -> list[str]:
    other = fingerprints(key("p256"))
    mine = fingerprints(HOST)
    flipped = ("B" if mine.sha256[0] == "A" else "A") + mine.sha256[1:]
    return [
        other.md5,
        other.sha1,
        other.sha256,
        other.openssh,
        flipped,
        flipped.lower(),  # base64 is case-sensitive
        "SHA256:" + "A" * 43,
        mine.sha256.rstrip("="),  # bare unpadded base64: 43, no known form (as upstream)
        mine.md5[:-1],
        mine.md5.replace(":", ""),
        "é" * 47,  # no known form, and no TypeError from compare_digest either
        "not a fingerprint",
    ]


REFUSED_FORMS = [
    "other-md5", "other-sha1", "other-sha256", "other-openssh", "flipped", "flipped-lower",
    "sha256-of-nothing", "bare-unpadded", "md5-short", "md5-no-colons", "non-ascii", "text",
]  # fmt: skip


@pytest.mark.parametrize("expected", _refused(), ids=REFUSED_FORMS)
def test_wrong_host_fingerprints_are_refused(expected: str) -> None:
    assert not hostKeyMatches(expected, BLOB)


def test_an_unreadable_host_key_never_matches() -> None:
    prints = fingerprints(HOST)
    assert not hostKeyMatches(prints.sha256, b"\x00\x00\x00\x07ssh-rsa")
    assert hostKeyMatches("", b"garbage")


ROUTE_FORMS = ["md5", "sha1", "sha256", "openssh"]


@pytest.mark.parametrize("form", ROUTE_FORMS)
@pytest.mark.parametrize("kind", ["rsa", "p256", "p384", "p521", "ed25519"])
def test_route_forms_for_every_host_key_type(kind: str, form: str) -> None:
    """
    Each form a route's C{host_fingerprint} carries (MD5 and SHA-1 colon
    hex, SHA-256 padded base64, OpenSSH's C{SHA256:}) matches the
    container's host key whatever its type (Diego's daemon has RSA keys),
    and only that key.
    """
    expected = getattr(fingerprints(key(kind)), form)
    assert hostKeyMatches(expected, key(kind).public().blob())
    other = "p256" if kind != "p256" else "ed25519"
    assert not hostKeyMatches(expected, key(other).public().blob())


def _oneDigitOff(text: str) -> str:
    last = text[-1]
    return text[:-1] + ("0" if last != "0" else "1")


def _nearMisses() -> dict[str, str]:
    mine = fingerprints(HOST)
    return {
        "md5-last-digit": _oneDigitOff(mine.md5),
        "sha1-last-digit": _oneDigitOff(mine.sha1),
        "openssh-last-char": mine.openssh[:-1] + ("A" if mine.openssh[-1] != "A" else "B"),
        "md5-with-ssh-keygen-prefix": "MD5:" + mine.md5,  # 51 characters: no known form
        "sha1-with-prefix": "SHA1:" + mine.sha1,
        "sha256-lowercase-prefix": "sha256:" + mine.sha256.rstrip("="),
        "sha256-non-ascii": "SHA256:" + "é" * 43,
        "md5-without-colons-padded-to-47": mine.md5.replace(":", "").ljust(47, "0"),
        "sha256-doubly-padded": mine.sha256 + "=",
    }


@pytest.mark.parametrize("expected", _nearMisses().values(), ids=_nearMisses().keys())
def test_near_misses_are_refused(expected: str) -> None:
    assert not hostKeyMatches(expected, BLOB)


# -- host keys


def test_host_key_from_text_and_path(tmp_path: Path) -> None:
    openssh = _ed25519OpenSSH().decode()
    assert loadHostKey(openssh).blob() == Key.fromString(_ed25519OpenSSH()).blob()
    pem = _rsaPEM().decode()
    assert loadHostKey(pem).type() == "RSA" and not loadHostKey(pem).isPublic()
    path = writePrivateKey(key("p256"), tmp_path / "host")
    assert loadHostKey(str(path)) == key("p256")


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n",
         "host key is not a usable private key: "),
        ("/no/such/key", "host key is not a usable private key: "),
        ("", "host key is not a usable private key: "),
        (authorizedKeyLine(key("ed25519")), "host key is a public key; a private key is needed"),
    ],
    ids=["bad-body", "no-such-path", "empty", "public-key"],
)  # fmt: skip
def test_bad_host_keys_are_refused_with_a_reason(value: str, why: str) -> None:
    with pytest.raises(BadKey, match=f"^{why}"):
        loadHostKey(value)


def test_generated_host_key_is_a_new_ed25519_private_key_and_logged() -> None:
    first, second = generateHostKey(), generateHostKey()
    assert first.type() == "Ed25519" and not first.isPublic()
    assert first != second
    with capturedLogs() as events:
        generated = hostKeyOrGenerated(None)
    assert generated.type() == "Ed25519"
    [event] = events
    assert event["log_format"] == "generated an ed25519 host key: {sha256} (MD5 {md5})"
    assert event["sha256"] == sha256Fingerprint(generated)
    assert event["md5"] == md5Fingerprint(generated)


def test_given_host_key_is_kept_and_logged() -> None:
    with capturedLogs() as events:
        assert hostKeyOrGenerated(key("rsa")) is key("rsa")
    [event] = events
    assert event["log_format"] == "host key {sha256}"
    assert event["sha256"] == sha256Fingerprint(key("rsa"))


# -- authorized_keys lines


def test_authorized_key_lines_with_options_and_comments() -> None:
    line = authorizedKeyLine(key("ed25519"))
    assert parseAuthorizedKeyLine("") is None
    assert parseAuthorizedKeyLine("  # comment") is None
    plain = parseAuthorizedKeyLine(f"  {line} alice@laptop ")
    assert plain is not None and plain.options == () and plain.key == key("ed25519").public()
    entry = parseAuthorizedKeyLine(
        f'no-pty,PermitOpen="[10.0.0.2]:22",permitopen="ws-\\"x:*",command="a, b" {line} c'
    )
    assert entry is not None
    assert entry.options == (
        ("no-pty", None),
        ("permitopen", "[10.0.0.2]:22"),
        ("permitopen", 'ws-"x:*'),
        ("command", "a, b"),
    )
    assert entry.key.blob() == key("ed25519").public().blob()


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("ssh-ed25519 AAAAnotbase64", "not a public key"),
        ("ssh-rsa AAAA", "not a public key"),  # struct.error inside Conch
        ("no-pty ssh-ed25519", "not a public key"),
        ('no-pty,permitopen="a:1', "options without a key"),
        ("garbage", "options without a key"),
    ],
)
def test_bad_authorized_key_lines(line: str, why: str) -> None:
    with pytest.raises(BadKey, match=f"^{why}$"):
        parseAuthorizedKeyLine(line)


def test_the_daemons_one_authorized_key() -> None:
    line = authorizedKeyLine(key("p256"))
    assert loadAuthorizedKey(line + " comment") == key("p256").public()
    with pytest.raises(BadKey, match=r"^authorized key is not an authorized_keys line$"):
        loadAuthorizedKey("ssh-ed25519")
    with pytest.raises(BadKey, match=r"^authorized key cannot be parsed: "):
        loadAuthorizedKey("ssh-ed25519 not-base64!")
    with pytest.raises(BadKey, match=r"^authorized key cannot be parsed: "):
        loadAuthorizedKey(f"no-pty {line}")  # options are not supported, as upstream


def test_published_keys_ignore_noise() -> None:
    a, b = key("ed25519"), key("p256")
    body = (
        b"# keys\n\n"
        + authorizedKeyLine(a).encode()
        + b"\ngarbage line\nssh-rsa AAAA\n"
        + authorizedKeyLine(b).encode()
        + b" bob\n"
    )
    assert [k.blob() for k in parsePublishedKeys(body)] == [a.blob(), b.blob()]
    assert parsePublishedKeys(b"\x00\xff" * 100) == []


def test_published_keys_are_read_up_to_the_bound() -> None:
    line = authorizedKeyLine(key("ed25519")).encode() + b"\n"
    body = b"#" * (MAX_KEYS_TEXT - 1) + b"\n" + line
    assert parsePublishedKeys(body) == []
    assert len(parsePublishedKeys(body[len(line) :])) == 1
