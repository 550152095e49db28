"""
File transfer through a real C{twistd diego-sshd}: scp in both modes (SFTP and
the legacy protocol, served by our own Python scp), sftp, rsync, and a 1 GiB
round trip with rekeying, all checked by hash.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.support.daemon import Daemon, runClient, sha256File

pytestmark = pytest.mark.interop


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("local") / "sample.bin"
    path.write_bytes(os.urandom(5 * 1024 * 1024 + 123))
    os.chmod(path, 0o640)
    os.utime(path, (1_600_000_000, 1_600_000_000))
    return path


@pytest.mark.parametrize("legacy", [False, True], ids=["sftp-mode", "scp-O"])
def test_scp_round_trip_preserves_content_mode_and_time(
    daemon: Daemon, sample: Path, tmp_path: Path, legacy: bool
) -> None:
    name = f"up-{legacy}.bin"
    up = runClient(daemon.scp("-p", str(sample), daemon.target(name), legacy=legacy))
    assert up.returncode == 0, up.stderr
    remote = daemon.home / name
    assert sha256File(remote) == sha256File(sample)
    assert remote.stat().st_mode & 0o777 == 0o640
    assert int(remote.stat().st_mtime) == 1_600_000_000
    back = tmp_path / "back.bin"
    down = runClient(daemon.scp("-p", daemon.target(name), str(back), legacy=legacy))
    assert down.returncode == 0, down.stderr
    assert sha256File(back) == sha256File(sample)
    assert int(back.stat().st_mtime) == 1_600_000_000


@pytest.mark.parametrize("legacy", [False, True], ids=["sftp-mode", "scp-O"])
def test_scp_recursive_and_missing_source(daemon: Daemon, tmp_path: Path, legacy: bool) -> None:
    tree = tmp_path / "tree"
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "a" / "b" / "f.txt").write_text("deep")
    (tree / "top.txt").write_text("top")
    dest = f"copy-{legacy}"
    result = runClient(daemon.scp("-r", str(tree), daemon.target(dest), legacy=legacy))
    assert result.returncode == 0, result.stderr
    assert (daemon.home / dest / "a" / "b" / "f.txt").read_text() == "deep"
    out = tmp_path / "out"
    out.mkdir()
    missing = runClient(
        daemon.scp(daemon.target("no-such-file"), daemon.target(f"{dest}/top.txt"), str(out),
                   legacy=legacy)
    )  # fmt: skip
    assert missing.returncode == 1
    assert b"no-such-file" in missing.stderr
    assert (out / "top.txt").read_text() == "top"


def test_sftp_batch(daemon: Daemon, sample: Path, tmp_path: Path) -> None:
    batch = tmp_path / "batch"
    got = tmp_path / "got.bin"
    batch.write_text(
        f"mkdir sftpdir\ncd sftpdir\nput {sample} s.bin\nrename s.bin t.bin\n"
        f"chmod 600 t.bin\nls -l\nget t.bin {got}\ndf -h .\n"
    )
    result = runClient(daemon.sftp("-b", str(batch), daemon.target()))
    assert result.returncode == 0, result.stderr
    assert sha256File(got) == sha256File(sample)
    assert (daemon.home / "sftpdir" / "t.bin").stat().st_mode & 0o777 == 0o600


def test_sftp_with_env_sent_first_exits(daemon: Daemon, tmp_path: Path) -> None:
    # Debian's default client config sends LANG/LC_* before the subsystem.
    batch = tmp_path / "batch"
    batch.write_text("pwd\n")
    argv = daemon.sftp("-o", "SetEnv=LANG=C LC_ALL=C", "-b", str(batch), daemon.target())
    result = runClient(argv, timeout=30)
    assert result.returncode == 0, result.stderr


def test_rsync(daemon: Daemon, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(20):
        (src / f"f{i}").write_bytes(os.urandom(10000 + i))
    result = runClient(["rsync", "-a", "-e", daemon.rsh(), f"{src}/", daemon.target("rsynced/")])
    assert result.returncode == 0, result.stderr
    for i in range(20):
        assert (daemon.home / "rsynced" / f"f{i}").read_bytes() == (src / f"f{i}").read_bytes()
    (src / "f3").write_bytes(b"changed")
    again = runClient(["rsync", "-a", "-e", daemon.rsh(), f"{src}/", daemon.target("rsynced/")])
    assert again.returncode == 0, again.stderr
    assert (daemon.home / "rsynced" / "f3").read_bytes() == b"changed"


@pytest.mark.slow
def test_one_gib_round_trip_with_rekeys(daemon: Daemon, tmp_path: Path) -> None:
    size = 1 << 30
    local = tmp_path / "big"
    with open(local, "wb") as f:
        block = os.urandom(1 << 20)
        for i in range(size >> 20):
            f.write(block[i % 7 :] + block[: i % 7])
    options = ("RekeyLimit=64M", "Ciphers=aes128-gcm@openssh.com")
    with open(local, "rb") as stdin:
        up = runClient(daemon.ssh("cat > big && sha256sum big", options=options), stdin=stdin)
    assert up.returncode == 0, up.stderr
    expected = sha256File(local)
    assert up.stdout.split()[0].decode() == expected
    back = tmp_path / "back"
    with open(back, "wb") as stdout:
        down = subprocess.run(
            daemon.ssh("cat big", options=options), stdout=stdout, stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL, timeout=300, check=False,
        )  # fmt: skip
    assert down.returncode == 0, down.stderr
    assert sha256File(back) == expected
    (daemon.home / "big").unlink()
