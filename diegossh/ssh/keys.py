# -*- test-case-name: tests.test_keys -*-
"""
Keys as operators and routes give them: host keys (loaded, or generated and
logged), their fingerprints, the check of a backend's host key against a
route's C{host_fingerprint}, and the lines of C{authorized_keys} and C{.pub}
files.

Every form of fingerprint is made here, so the daemon's log, the access log,
C{diegossh-fingerprint} and the route check cannot drift apart:

- C{openssh}: C{SHA256:} and unpadded base64, as C{ssh-keygen -l} prints it;
- C{sha256}: padded base64 (44 characters), Conch's
  C{FingerprintFormats.SHA256_BASE64} and the form Cloud Foundry publishes;
- C{md5}: colon hex (47 characters), what C{ssh-keygen -l -E md5} prints
  after C{MD5:} and what Conch's C{MD5_HEX} gives;
- C{sha1}: colon hex (59 characters), which Cloud Foundry takes and which
  neither Conch nor C{ssh-keygen} prints (it prints SHA-1 in base64).

SHA-256 comes from Conch's C{Key.fingerprint}. MD5 and SHA-1 are hashed here
with C{usedforsecurity=False}: Conch's C{MD5_HEX} calls a plain C{md5()},
which Python refuses under a FIPS-mode OpenSSL, and a host key's fingerprint
is a name, not a security use.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ed25519
from twisted.conch.ssh.keys import FingerprintFormats, Key
from twisted.logger import Logger

__all__ = [
    "MAX_KEYS_TEXT",
    "AuthorizedKeyLine",
    "BadKey",
    "Fingerprints",
    "fingerprints",
    "generateHostKey",
    "hostKeyMatches",
    "hostKeyOrGenerated",
    "loadAuthorizedKey",
    "loadHostKey",
    "md5Fingerprint",
    "parseAuthorizedKeyLine",
    "parsePublishedKeys",
    "sha256Fingerprint",
]

_log = Logger()

#: bytes of a published key file that are read; the rest is ignored
MAX_KEYS_TEXT = 64 * 1024


class BadKey(ValueError):
    """
    A key that cannot be used; the message says which and why.
    """


# -- host keys


def loadHostKey(value: str) -> Key:
    """
    Parse a private host key given as PEM/OpenSSH text, or as a path to one.
    """
    text = value
    if "-----BEGIN" not in value and os.path.isfile(value):
        with open(value, encoding="utf-8") as f:
            text = f.read()
    try:
        key = Key.fromString(text.encode())
    except Exception as e:
        raise BadKey(f"host key is not a usable private key: {e}") from None
    if key.isPublic():
        raise BadKey("host key is a public key; a private key is needed")
    return key


def generateHostKey() -> Key:
    return Key(ed25519.Ed25519PrivateKey.generate())


def hostKeyOrGenerated(key: Key | None) -> Key:
    """
    The operator's host key, or a new ed25519 key when none was given; either
    way its fingerprint is logged, so an operator can publish or compare it.
    """
    if key is None:
        key = generateHostKey()
        _log.info(
            "generated an ed25519 host key: {sha256} (MD5 {md5})",
            sha256=sha256Fingerprint(key),
            md5=md5Fingerprint(key),
        )
    else:
        _log.info("host key {sha256}", sha256=sha256Fingerprint(key))
    return key


# -- fingerprints


@dataclass(frozen=True)
class Fingerprints:
    """One key's fingerprints, each in the exact text a consumer expects."""

    md5: str
    """C{aa:bb:...}, 47 characters."""
    sha1: str
    """C{aa:bb:...}, 59 characters."""
    sha256: str
    """Padded base64, 44 characters: the form to publish."""
    openssh: str
    """C{SHA256:} and unpadded base64, as C{ssh-keygen -l} prints it."""


def _colonHex(digest: bytes) -> str:
    return ":".join(f"{b:02x}" for b in digest)


def sha256Fingerprint(key: Key) -> str:
    """
    C{SHA256:...} as C{ssh-keygen -l} prints it, so logs match what users see.
    """
    return "SHA256:" + key.fingerprint(FingerprintFormats.SHA256_BASE64).rstrip("=")


def md5Fingerprint(key: Key) -> str:
    """
    Colon hex, as C{ssh-keygen -l -E md5} prints it after C{MD5:}.
    """
    return _colonHex(hashlib.md5(key.blob(), usedforsecurity=False).digest())


def fingerprints(key: Key) -> Fingerprints:
    """The fingerprints of C{key}'s public half."""
    sha256 = key.fingerprint(FingerprintFormats.SHA256_BASE64)
    return Fingerprints(
        md5=md5Fingerprint(key),
        sha1=_colonHex(hashlib.sha1(key.blob(), usedforsecurity=False).digest()),
        sha256=sha256,
        openssh="SHA256:" + sha256.rstrip("="),
    )


def _same(a: str, b: str) -> bool:
    # bytes, since compare_digest refuses str with non-ASCII characters
    return hmac.compare_digest(a.encode(), b.encode())


def hostKeyMatches(expected: str, hostKeyBlob: bytes) -> bool:
    """
    Whether the host key C{hostKeyBlob} has the route's fingerprint
    C{expected}.

    Upstream tells the form by length (47: MD5 colon-hex, 59: SHA-1
    colon-hex, 44: padded base64 SHA-256, as the Ruby C{sshkey} gem writes
    it); OpenSSH's C{SHA256:} form, padded or not, is taken too, since
    operators paste it. Bare unpadded base64 (43 characters) is no known
    form, as upstream. An empty fingerprint is not checked; one in no known
    form, or a host key that cannot be read, never matches.
    """
    wanted = expected.strip()
    if not wanted:
        return True
    try:
        prints = fingerprints(Key.fromString(hostKeyBlob))
    except Exception:
        return False
    if wanted.startswith("SHA256:"):
        return _same(wanted.rstrip("="), prints.openssh)
    if len(wanted) == 47:
        return _same(wanted.lower(), prints.md5)
    if len(wanted) == 59:
        return _same(wanted.lower(), prints.sha1)
    if len(wanted) == 44:
        return _same(wanted, prints.sha256)
    return False


# -- authorized_keys and .pub lines


def _publicKey(text: bytes) -> Key | None:
    """
    The public key in one C{type base64 [comment]} text, or L{None}: Conch
    raises many kinds of errors for malformed keys (C{struct.error},
    C{NotImplementedError}, ...), and every one means "not a key".
    """
    try:
        key = Key.fromString(text)
    except Exception:
        return None
    return key if key.isPublic() else None


def parsePublishedKeys(data: bytes) -> list[Key]:
    """
    Every public key in C{data} (one per line, C{#} comments and blank lines
    allowed); lines that are not keys are ignored, as OpenSSH ignores them.
    Only the first L{MAX_KEYS_TEXT} bytes are read.
    """
    found: list[Key] = []
    for raw in data[:MAX_KEYS_TEXT].splitlines():
        line = raw.strip()
        if not line or line.startswith(b"#"):
            continue
        key = _publicKey(line)
        if key is not None:
            found.append(key)
    return found


@dataclass(frozen=True)
class AuthorizedKeyLine:
    """
    One C{authorized_keys} line: its options in order, unquoted
    (C{permitopen="a:1"} is C{("permitopen", "a:1")}, C{no-pty} is
    C{("no-pty", None)}), and its key. What the options mean is the
    caller's to decide.
    """

    options: tuple[tuple[str, str | None], ...]
    key: Key


def _isKeyType(token: str) -> bool:
    return token.startswith(("ssh-", "ecdsa-sha2-", "sk-", "rsa-sha2-"))


def _splitOptions(line: str) -> tuple[list[str], str]:
    """
    C{opt1,opt2="a,b" ssh-ed25519 AAAA...} into the options and the rest.
    """
    options: list[str] = []
    current: list[str] = []
    quoted = False
    i = 0
    while i < len(line):
        ch = line[i]
        if ch == "\\" and quoted and i + 1 < len(line):
            current.append(line[i + 1])
            i += 2
            continue
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch == ",":
            options.append("".join(current))
            current = []
        elif not quoted and ch in " \t":
            options.append("".join(current))
            return options, line[i:].strip()
        else:
            current.append(ch)
        i += 1
    raise BadKey("options without a key")


def parseAuthorizedKeyLine(line: str) -> AuthorizedKeyLine | None:
    """
    One line of OpenSSH's C{authorized_keys} format: L{None} for blanks and
    comments, L{BadKey} for a line that holds no public key (its message
    never quotes the line).
    """
    line = line.strip()
    if not line or line.startswith("#"):
        return None
    options: list[str] = []
    rest = line
    if not _isKeyType(line.split(None, 1)[0]):
        options, rest = _splitOptions(line)
    key = _publicKey(rest.encode())
    if key is None:
        raise BadKey("not a public key")
    pairs: list[tuple[str, str | None]] = []
    for option in options:
        name, equals, value = option.partition("=")
        pairs.append((name.lower(), value if equals else None))
    return AuthorizedKeyLine(tuple(pairs), key)


def loadAuthorizedKey(line: str) -> Key:
    """
    The daemon's one authorized key, C{type base64 [comment]}; options are not
    supported, as upstream.
    """
    parts = line.strip().split()
    if len(parts) < 2:
        raise BadKey("authorized key is not an authorized_keys line")
    try:
        key = Key.fromString(f"{parts[0]} {parts[1]}".encode())
    except Exception as e:
        raise BadKey(f"authorized key cannot be parsed: {e}") from None
    if not key.isPublic():
        raise BadKey("authorized key must be a public key")
    return key
