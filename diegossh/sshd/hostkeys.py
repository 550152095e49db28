# -*- test-case-name: tests.test_sshd_tap -*-
"""
Host and authorized keys for the daemon: parsing what the operator gave (PEM
text or a path), generating a host key when none was given, and the
fingerprints operators compare against (OpenSSH's SHA256 and the MD5 form
Cloud Foundry routes still carry).
"""

from __future__ import annotations

import base64
import hashlib
import os

from cryptography.hazmat.primitives.asymmetric import ed25519
from twisted.conch.ssh import keys
from twisted.logger import Logger

_log = Logger()


class BadKey(ValueError):
    """
    A key the operator gave cannot be used; the message says which and why.
    """


def loadHostKey(value: str) -> keys.Key:
    """
    Parse a private host key given as PEM/OpenSSH text, or as a path to one.
    """
    text = value
    if "-----BEGIN" not in value and os.path.isfile(value):
        with open(value, encoding="utf-8") as f:
            text = f.read()
    try:
        key = keys.Key.fromString(text.encode())
    except Exception as e:
        raise BadKey(f"host key is not a usable private key: {e}") from None
    if key.isPublic():
        raise BadKey("host key is a public key; a private key is needed")
    return key


def generateHostKey() -> keys.Key:
    return keys.Key(ed25519.Ed25519PrivateKey.generate())


def hostKeyOrGenerated(key: keys.Key | None) -> keys.Key:
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


def loadAuthorizedKey(line: str) -> keys.Key:
    """
    Parse one authorized_keys line (C{type base64 [comment]}); options are not
    supported, as upstream.
    """
    parts = line.strip().split()
    if len(parts) < 2:
        raise BadKey("authorized key is not an authorized_keys line")
    try:
        key = keys.Key.fromString(f"{parts[0]} {parts[1]}".encode())
    except Exception as e:
        raise BadKey(f"authorized key cannot be parsed: {e}") from None
    if not key.isPublic():
        raise BadKey("authorized key must be a public key")
    return key


def sha256Fingerprint(key: keys.Key) -> str:
    digest = hashlib.sha256(key.public().blob()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def md5Fingerprint(key: keys.Key) -> str:
    digest = hashlib.md5(key.public().blob(), usedforsecurity=False).hexdigest()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))
