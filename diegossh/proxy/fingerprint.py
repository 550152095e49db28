# -*- test-case-name: tests.test_cf_fingerprint -*-
"""
C{diegossh-fingerprint}: the proxy host key's fingerprint in every form
Cloud Foundry takes, so an operator can publish it as Cloud Controller's
C{app_ssh_host_key_fingerprint} (and C{cf ssh} can check the proxy).

The C{cf} CLI tells the form by its length: 47 characters is MD5 colon-hex,
59 SHA-1 colon-hex, 44 SHA-256 in padded base64. OpenSSH's C{SHA256:...}
(unpadded) is printed as well, to compare with C{ssh-keygen -l} and
C{known_hosts}; C{cf} does not take it.

    diegossh-fingerprint /var/vcap/jobs/ssh_proxy/config/host_key.pem
    diegossh-fingerprint --only sha256 < host_key.pem
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from twisted.conch.ssh import keys

from diegossh.ssh.keys import fingerprints

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="diegossh-fingerprint",
        description="Print the SSH proxy host key's fingerprints for"
        " Cloud Controller's app_ssh_host_key_fingerprint.",
    )
    parser.add_argument(
        "key",
        nargs="?",
        default="-",
        help="the host key: a PEM/OpenSSH private key file (or its public key);"
        " '-' or nothing reads it from stdin",
    )
    parser.add_argument(
        "--only",
        choices=["md5", "sha1", "sha256", "openssh"],
        help="print just this form, bare, for scripts",
    )
    return parser


def _readKey(source: str, stdin: TextIO) -> keys.Key:
    data = stdin.read().encode() if source == "-" else Path(source).read_bytes()
    try:
        return keys.Key.fromString(data)
    except keys.EncryptedKeyError:
        raise ValueError("the key is encrypted; give the proxy's unencrypted host key") from None
    except Exception as e:
        raise ValueError(f"not an SSH key: {e}") from None


def main(
    argv: Sequence[str] | None = None, stdin: TextIO | None = None, stdout: TextIO | None = None
) -> int:
    """The console script: 0 on success, 1 for an unreadable key, 2 for bad usage."""
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    args = _parser().parse_args(argv)
    try:
        key = _readKey(args.key, stdin)
    except (OSError, ValueError) as e:
        print(f"diegossh-fingerprint: {e}", file=sys.stderr)
        return 1
    prints = fingerprints(key)
    if args.only:
        print(getattr(prints, args.only), file=stdout)
        return 0
    print(f"key type:              {key.sshType().decode()}", file=stdout)
    print(f"SHA-256 (recommended): {prints.sha256}", file=stdout)
    print(f"SHA-1:                 {prints.sha1}", file=stdout)
    print(f"MD5:                   {prints.md5}", file=stdout)
    print(f"OpenSSH (not for cf):  {prints.openssh}", file=stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
