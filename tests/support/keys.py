"""
Keys for tests, generated once per process (RSA generation is slow).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from twisted.conch.ssh import keys

HOST_KEY_TYPES = {
    "ssh-ed25519": "ed25519",
    "rsa-sha2-512": "rsa",
    "rsa-sha2-256": "rsa",
    "ssh-rsa": "rsa",
    "ecdsa-sha2-nistp256": "p256",
    "ecdsa-sha2-nistp384": "p384",
    "ecdsa-sha2-nistp521": "p521",
}


@functools.cache
def key(kind: str) -> keys.Key:
    """
    A private key of C{kind}: ed25519, rsa, p256, p384 or p521.
    """
    if kind == "ed25519":
        return keys.Key(ed25519.Ed25519PrivateKey.generate())
    if kind == "rsa":
        return keys.Key(rsa.generate_private_key(65537, 2048))
    curves = {"p256": ec.SECP256R1(), "p384": ec.SECP384R1(), "p521": ec.SECP521R1()}
    return keys.Key(ec.generate_private_key(curves[kind]))


def writePrivateKey(k: keys.Key, path: Path) -> Path:
    """
    Write C{k} in OpenSSH format with the permissions ssh insists on.
    """
    path.write_bytes(k.toString("openssh"))
    os.chmod(path, 0o600)
    return path


def authorizedKeyLine(k: keys.Key) -> str:
    return k.public().toString("openssh").decode()
