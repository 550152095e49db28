"""
The SFTP server against the real OpenSSH clients, with no SSH in between:
C{sftp -D} runs it on a pipe, and C{scp -S} runs it through a stand-in
for C{ssh} that starts the C{sftp} subsystem locally.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SERVER = f"{sys.executable} -m diegossh.sshd.localrun sftp"
MiB = 1024 * 1024

pytestmark = pytest.mark.interop


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(MiB), b""):
            digest.update(block)
    return digest.hexdigest()


def randomFile(path: Path, size: int) -> Path:
    with path.open("wb") as f:
        remaining = size
        while remaining:
            block = os.urandom(min(remaining, 4 * MiB))
            f.write(block)
            remaining -= len(block)
    return path


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def local(tmp_path: Path) -> Path:
    path = tmp_path / "local"
    path.mkdir()
    return path


@pytest.fixture
def env(home: Path) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "PYTHONPATH": str(REPO),
        "LANG": "C",
    }


def runSFTP(
    commands: str, local: Path, env: dict[str, str], *extra: str
) -> subprocess.CompletedProcess[str]:
    batch = local.parent / "batch"
    batch.write_text(commands)
    return subprocess.run(
        ["sftp", *extra, "-b", str(batch), "-D", SERVER],
        cwd=local,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def fakeSSH(tmp_path: Path) -> Path:
    """An 'ssh' for scp -S: ignores options and host, serves the sftp subsystem."""
    script = tmp_path / "fake-ssh"
    script.write_text(
        "#!/bin/sh\n"
        'for arg in "$@"; do last="$arg"; done\n'
        'case " $* " in *" -s "*) ;; *) echo "fake-ssh: no subsystem in: $*" >&2; exit 2;; esac\n'
        'if [ "$last" = sftp ]; then\n'
        f"  exec {shlex.quote(sys.executable)} -m diegossh.sshd.localrun sftp\n"
        "fi\n"
        'echo "fake-ssh: cannot run: $*" >&2\n'
        "exit 2\n"
    )
    script.chmod(0o755)
    return script


def runSCP(
    fakeSSH: Path, local: Path, env: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["scp", "-S", str(fakeSSH), *args],
        cwd=local,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_sftp_batch_session(home: Path, local: Path, env: dict[str, str]) -> None:
    randomFile(local / "up.bin", 3 * MiB + 17)
    (home / "old").mkdir()
    result = runSFTP(
        "pwd\n"
        "mkdir d\n"
        "put up.bin d/up.bin\n"
        "ls -l d\n"
        "rename d/up.bin d/renamed.bin\n"
        "chmod 640 d/renamed.bin\n"
        "symlink d/renamed.bin link\n"
        "get link down.bin\n"
        "rmdir old\n"
        "df\n"
        "ls -la\n",
        local,
        env,
    )
    assert result.returncode == 0, result.stderr
    assert f"Remote working directory: {home}" in result.stdout
    assert "renamed" not in result.stderr
    assert "up.bin" in result.stdout
    assert "Avail" in result.stdout  # df
    assert not (home / "old").exists()
    assert sha256(home / "d" / "renamed.bin") == sha256(local / "up.bin")
    assert (home / "d" / "renamed.bin").stat().st_mode & 0o777 == 0o640
    assert os.readlink(home / "link") == "d/renamed.bin"
    assert sha256(local / "down.bin") == sha256(local / "up.bin")
    assert "link" in result.stdout and "d" in result.stdout


def test_sftp_put_get_preserve_modes_and_times(
    home: Path, local: Path, env: dict[str, str]
) -> None:
    src = randomFile(local / "src.bin", 100_000)
    src.chmod(0o604)
    os.utime(src, (1_000_000_000, 1_100_000_000))
    result = runSFTP("put -p src.bin\nget -p src.bin back.bin\n", local, env)
    assert result.returncode == 0, result.stderr
    for path in (home / "src.bin", local / "back.bin"):
        st = path.stat()
        assert (st.st_mode & 0o777, int(st.st_mtime)) == (0o604, 1_100_000_000)
        assert sha256(path) == sha256(src)


def test_sftp_reget_resumes(home: Path, local: Path, env: dict[str, str]) -> None:
    remote = randomFile(home / "r.bin", 5 * MiB + 3)
    (local / "r.bin").write_bytes(remote.read_bytes()[: 2 * MiB])
    result = runSFTP("reget r.bin\n", local, env)
    assert result.returncode == 0, result.stderr
    assert sha256(local / "r.bin") == sha256(remote)


def test_sftp_errors_fail_the_batch(home: Path, local: Path, env: dict[str, str]) -> None:
    result = runSFTP("get nothing-here\n", local, env)
    assert result.returncode == 1
    assert 'nothing-here" not found' in result.stderr
    result = runSFTP("rmdir nothing-here\n", local, env)
    assert result.returncode == 1
    assert "No such file or directory" in result.stderr


def test_sftp_recursive_and_odd_names(home: Path, local: Path, env: dict[str, str]) -> None:
    tree = local / "tree"
    (tree / "a" / "b").mkdir(parents=True)
    randomFile(tree / "a" / "b" / "deep.bin", 70_000)
    randomFile(tree / "space name", 10)
    result = runSFTP("put -r tree\nget -r tree copy\n", local, env)
    assert result.returncode == 0, result.stderr
    for rel in ("a/b/deep.bin", "space name"):
        assert sha256(home / "tree" / rel) == sha256(tree / rel)
        assert sha256(local / "copy" / rel) == sha256(tree / rel)


def test_scp_sftp_mode_keeps_modes_and_times(
    fakeSSH: Path, home: Path, local: Path, env: dict[str, str]
) -> None:
    src = randomFile(local / "f.bin", 300_000)
    src.chmod(0o640)
    os.utime(src, (1_200_000_000, 1_234_567_890))
    up = runSCP(fakeSSH, local, env, "-p", "f.bin", "host:f.bin")
    assert up.returncode == 0, up.stderr
    dest = home / "f.bin"
    assert (dest.stat().st_mode & 0o777, int(dest.stat().st_mtime)) == (0o640, 1_234_567_890)
    os.utime(dest, (1_200_000_000, 1_222_222_222))
    down = runSCP(fakeSSH, local, env, "-p", "host:f.bin", "g.bin")
    assert down.returncode == 0, down.stderr
    got = local / "g.bin"
    assert (got.stat().st_mode & 0o777, int(got.stat().st_mtime)) == (0o640, 1_222_222_222)
    assert sha256(got) == sha256(src) == sha256(dest)


def test_scp_64_mib_both_ways(fakeSSH: Path, home: Path, local: Path, env: dict[str, str]) -> None:
    src = randomFile(local / "big.bin", 64 * MiB)
    up = runSCP(fakeSSH, local, env, "big.bin", "host:sub/../big.bin")
    assert up.returncode == 1  # sub/ does not exist: scp must report it
    up = runSCP(fakeSSH, local, env, "big.bin", "host:")
    assert up.returncode == 0, up.stderr
    assert sha256(home / "big.bin") == sha256(src)
    down = runSCP(fakeSSH, local, env, "host:~/big.bin", "back.bin")
    assert down.returncode == 0, down.stderr
    assert sha256(local / "back.bin") == sha256(src)


def test_scp_recursive(fakeSSH: Path, home: Path, local: Path, env: dict[str, str]) -> None:
    tree = local / "t"
    (tree / "x").mkdir(parents=True)
    randomFile(tree / "x" / "one", 1234)
    randomFile(tree / "two", 0)
    up = runSCP(fakeSSH, local, env, "-r", "t", "host:")
    assert up.returncode == 0, up.stderr
    assert sha256(home / "t" / "x" / "one") == sha256(tree / "x" / "one")
    assert (home / "t" / "two").stat().st_size == 0
    missing = runSCP(fakeSSH, local, env, "host:nope", "n")
    assert missing.returncode == 1
    assert "No such file or directory" in missing.stderr


def test_sftp_many_large_requests_do_not_deadlock(
    home: Path, local: Path, env: dict[str, str]
) -> None:
    # sftp writes its requests blocking and reads replies only afterwards: a
    # server that stops reading while its replies wait would hang here.
    src = randomFile(local / "src.bin", 128 * MiB)
    result = runSFTP("put src.bin\nget src.bin back.bin\n", local, env, "-R", "512", "-B", "261120")
    assert result.returncode == 0, result.stderr
    assert sha256(home / "src.bin") == sha256(src)
    assert sha256(local / "back.bin") == sha256(src)
