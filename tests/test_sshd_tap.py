"""
Start-up of C{twistd diego-sshd}: what it refuses, where keys come from, and
that key material never stays on the command line.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from twisted.python import usage

from diegossh.sshd.tap import Options
from tests.support.daemon import TWISTD, freePort, startDaemon
from tests.support.keys import authorizedKeyLine, key, writePrivateKey

PEM_P256 = key("p256").toString("openssh").decode()


def startup(args: list[str], tmp: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TWISTD, "-n", "--pidfile=", "diego-sshd", f"--address=127.0.0.1:{freePort()}", *args],
        capture_output=True, text=True, timeout=30, cwd=tmp, check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp)},
    )  # fmt: skip


@pytest.mark.interop
def test_no_authorized_key_stops_startup(tmp_path: Path) -> None:
    result = startup([], tmp_path)
    assert result.returncode != 0
    assert "no authorized key" in result.stdout + result.stderr


@pytest.mark.interop
def test_malformed_authorized_key_stops_startup(tmp_path: Path) -> None:
    result = startup(["--authorizedKey=ssh-ed25519 not-base64!"], tmp_path)
    assert result.returncode != 0
    assert "authorized key" in result.stdout + result.stderr


@pytest.mark.interop
def test_unknown_cipher_is_named(tmp_path: Path) -> None:
    result = startup(
        ["--allowUnauthenticatedClients", "--allowedCiphers=aes128-ctr,rot13"], tmp_path
    )
    assert result.returncode != 0
    assert "rot13" in result.stdout + result.stderr


def test_options_read_keys_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSHD_AUTHKEY", authorizedKeyLine(key("ed25519")))
    monkeypatch.setenv("SSHD_HOSTKEY", key("p256").toString("openssh").decode())
    monkeypatch.setattr(sys, "argv", ["twistd", "diego-sshd"])
    options = Options()
    options.parseOptions([])
    assert options["settings"].authorizedKey == key("ed25519").public()
    assert options["settings"].hostKey == key("p256")
    import os

    assert "SSHD_AUTHKEY" not in os.environ
    assert "SSHD_HOSTKEY" not in os.environ


def test_host_key_from_a_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = writePrivateKey(key("rsa"), tmp_path / "host")
    monkeypatch.setattr(sys, "argv", ["twistd", "diego-sshd"])
    options = Options()
    options.parseOptions([f"--hostKey={path}", "--allowUnauthenticatedClients"])
    assert options["settings"].hostKey == key("rsa")


def test_public_host_key_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["twistd", "diego-sshd"])
    with pytest.raises(usage.UsageError, match="public key"):
        Options().parseOptions(
            [f"--hostKey={authorizedKeyLine(key('ed25519'))}", "--allowUnauthenticatedClients"]
        )


@pytest.mark.interop
def test_key_flags_leave_the_command_line(tmp_path: Path) -> None:
    hostKeyText = key("ed25519").toString("openssh").decode()
    daemon = startDaemon(
        tmp_path,
        extraArgs=(
            f"--hostKey={hostKeyText}",
            f"--authorizedKey={authorizedKeyLine(key('ed25519'))}",
        ),
        env={"SSHD_AUTHKEY": ""},
    )
    try:
        cmdline = Path(f"/proc/{daemon.proc.pid}/cmdline").read_bytes()
        # the re-exec replaced the process image; its command line has no key
        assert b"BEGIN" not in cmdline and b"ssh-ed25519" not in cmdline
        result = subprocess.run(daemon.ssh("echo in"), capture_output=True, timeout=30, check=False)
        assert result.stdout == b"in\n"
        env = subprocess.run(daemon.ssh("env"), capture_output=True, timeout=30, check=False)
        assert b"SSHD_" not in env.stdout
    finally:
        daemon.stop()


@pytest.mark.interop
def test_generated_host_key_is_logged(tmp_path: Path) -> None:
    daemon = startDaemon(tmp_path, extraArgs=("--allowUnauthenticatedClients",))
    try:
        log = daemon.log.read_text()
        assert "generated an ed25519 host key: SHA256:" in log
        result = subprocess.run(
            ["ssh", "-F", "/dev/null", "-o", "StrictHostKeyChecking=no", "-o",
             "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "PubkeyAuthentication=no",
             "-p", str(daemon.port), "anyone@127.0.0.1", "echo anonymous"],
            capture_output=True, timeout=30, check=False,
        )  # fmt: skip
        assert result.stdout == b"anonymous\n", result.stderr
    finally:
        daemon.stop()


def test_session_and_channel_limits_reach_the_factory(monkeypatch: pytest.MonkeyPatch) -> None:
    from diegossh.sshd.tap import makeService

    monkeypatch.setattr(sys, "argv", ["twistd", "diego-sshd"])
    options = Options()
    options.parseOptions(["--allowUnauthenticatedClients", "--maxSessions=3", "--maxChannels=7"])
    service = makeService(options)
    factory = service.factory  # type: ignore[attr-defined]
    assert (factory.maxSessions, factory.maxChannels) == (3, 7)
    defaults = Options()
    defaults.parseOptions(["--allowUnauthenticatedClients"])
    assert (defaults["settings"].maxSessions, defaults["settings"].maxChannels) == (10, 64)


@pytest.mark.parametrize("flag", ["--maxSessions=0", "--maxChannels=0", "--maxSessions=x"])
def test_unusable_limits_stop_startup(monkeypatch: pytest.MonkeyPatch, flag: str) -> None:
    monkeypatch.setattr(sys, "argv", ["twistd", "diego-sshd"])
    with pytest.raises(usage.UsageError):
        Options().parseOptions(["--allowUnauthenticatedClients", flag])


def test_settings_are_parsed_once_and_frozen(monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    from diegossh.sshd.settings import SSHDSettings

    monkeypatch.setattr(sys, "argv", ["twistd", "diego-sshd"])
    options = Options()
    options.parseOptions(["--allowUnauthenticatedClients", f"--hostKey={PEM_P256}"])
    settings = options["settings"]
    assert isinstance(settings, SSHDSettings)
    assert (settings.authorizedKey, settings.allowUnauthenticatedClients) == (None, True)
    assert settings.loginGraceTime == 120.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.maxSessions = 1  # type: ignore[misc]
    assert "PRIVATE" not in repr(settings) and "hostKey=" not in repr(settings)


@pytest.mark.parametrize(
    "flag",
    ["--address=nowhere", "--hostKey=not-a-key", "--authorizedKey=ssh-ed25519",
     "--allowedMACs=crc32", "--allowedKeyExchanges=guess"],
)  # fmt: skip
def test_refusals_name_the_flag(monkeypatch: pytest.MonkeyPatch, flag: str) -> None:
    monkeypatch.setattr(sys, "argv", ["twistd", "diego-sshd"])
    monkeypatch.delenv("SSHD_AUTHKEY", raising=False)
    monkeypatch.delenv("SSHD_HOSTKEY", raising=False)
    with pytest.raises(usage.UsageError, match=flag.split("=")[0] + ":"):
        Options().parseOptions(["--allowUnauthenticatedClients", flag])


def test_lager_flags_are_accepted_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["twistd", "diego-sshd"])
    options = Options()
    options.parseOptions(
        ["--allowUnauthenticatedClients", "--logLevel=fatal", "--timeFormat=1",
         "--debugAddr=127.0.0.1:17017", "--redactSecrets", "--redactPatterns=x.*"]
    )  # fmt: skip
    settings = options["settings"]
    assert (settings.logLevel, settings.timeFormat) == (3, "rfc3339")
    assert settings.debugAddress == "127.0.0.1:17017"
    assert (settings.redactSecrets, settings.redactPatterns) == (True, "x.*")
    defaults = Options()
    defaults.parseOptions(["--allowUnauthenticatedClients"])
    assert defaults["settings"].logLevel == 1
    assert (defaults["settings"].timeFormat, defaults["settings"].debugAddress) == (
        "unix-epoch",
        None,
    )


@pytest.mark.parametrize("flag", ["--logLevel=loud", "--timeFormat=iso", "--debugAddr=nowhere"])
def test_bad_lager_flags_are_named(monkeypatch: pytest.MonkeyPatch, flag: str) -> None:
    monkeypatch.setattr(sys, "argv", ["twistd", "diego-sshd"])
    with pytest.raises(usage.UsageError, match=flag.split("=")[0] + ":"):
        Options().parseOptions(["--allowUnauthenticatedClients", flag])


@pytest.mark.parametrize(
    ("args", "event"),
    [([], "authorized-key-required"),
     (["--allowUnauthenticatedClients", "--hostKey=not-a-key"], "failed-to-parse-host-key"),
     (["--allowUnauthenticatedClients", "--allowedMACs=crc32"], None)],
)  # fmt: skip
def test_refusals_keep_upstreams_event(
    monkeypatch: pytest.MonkeyPatch, args: list[str], event: str | None
) -> None:
    from diegossh.sshd.settings import Refused

    monkeypatch.setattr(sys, "argv", ["twistd", "diego-sshd"])
    monkeypatch.delenv("SSHD_AUTHKEY", raising=False)
    monkeypatch.delenv("SSHD_HOSTKEY", raising=False)
    with pytest.raises(usage.UsageError) as e:
        Options().parseOptions(args)
    assert isinstance(e.value.__cause__, ValueError)
    assert getattr(e.value.__cause__, "lager", None) == event
    assert isinstance(e.value.__cause__, Refused) == (event is not None)
