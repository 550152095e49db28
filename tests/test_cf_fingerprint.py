# -*- test-case-name: tests.test_cf_fingerprint -*-
"""The C{diegossh-fingerprint} command (the forms themselves: tests.test_keys)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from twisted.conch.ssh import keys

from diegossh.proxy.fingerprint import main
from diegossh.ssh.keys import fingerprints

ED25519_SEED = bytes(range(32))


def _ed25519PEM() -> bytes:
    key = ed25519.Ed25519PrivateKey.from_private_bytes(ED25519_SEED)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )


def run(argv: list[str], stdin: str = "") -> tuple[int, str]:
    out = io.StringIO()
    code = main(argv, stdin=io.StringIO(stdin), stdout=out)
    return code, out.getvalue()


def test_main_with_a_path(tmp_path: Path) -> None:
    path = tmp_path / "key.pem"
    path.write_bytes(_ed25519PEM())
    code, out = run([str(path)])
    prints = fingerprints(keys.Key.fromString(_ed25519PEM()))
    assert code == 0
    assert f"SHA-256 (recommended): {prints.sha256}\n" in out
    assert f"SHA-1:                 {prints.sha1}\n" in out
    assert f"MD5:                   {prints.md5}\n" in out
    assert f"OpenSSH (not for cf):  {prints.openssh}\n" in out
    assert "ssh-ed25519" in out


def test_main_from_stdin_only_one_form() -> None:
    prints = fingerprints(keys.Key.fromString(_ed25519PEM()))
    for form in ("md5", "sha1", "sha256", "openssh"):
        assert run(["--only", form], _ed25519PEM().decode()) == (0, getattr(prints, form) + "\n")
    assert run(["-", "--only", "sha256"], _ed25519PEM().decode())[1] == prints.sha256 + "\n"


def test_public_key_gives_the_same() -> None:
    key = keys.Key.fromString(_ed25519PEM())
    public = key.public().toString("openssh").decode()
    assert run(["--only", "sha256"], public)[1] == fingerprints(key).sha256 + "\n"


def test_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run([str(tmp_path / "missing")])[0] == 1
    assert run([], "not a key")[0] == 1
    encrypted = (
        ed25519.Ed25519PrivateKey.generate()
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.BestAvailableEncryption(b"pass"),
        )
        .decode()
    )
    assert run([], encrypted)[0] == 1
    assert "encrypted" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit:
        run(["--only", "crc32"])
    assert exit.value.code == 2
