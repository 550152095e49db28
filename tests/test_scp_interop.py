"""
The real OpenSSH C{scp -O} against our server, with no SSH in between: C{-S}
points at a fake ssh that runs C{python -m diegossh.sshd.localrun} on the
remote command. HOME (the remote side's) and the local working directory are
separate temporary directories.
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from scp_support import runSCP, writeFakeSSH

pytestmark = pytest.mark.interop


class Env:
    def __init__(self, tmp_path: Path) -> None:
        self.home = tmp_path / "home"
        self.local = tmp_path / "local"
        self.home.mkdir()
        self.local.mkdir()
        self.ssh = writeFakeSSH(tmp_path)

    def scp(self, *args: str) -> subprocess.CompletedProcess[str]:
        return runSCP(list(args), self.home, self.local, self.ssh)


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


def makeTree(root: Path) -> None:
    (root / "sub/deeper").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "sub/empty-too").mkdir()
    (root / "top.txt").write_bytes(b"top")
    (root / "sub/a.bin").write_bytes(os.urandom(100_000))
    (root / "sub/deeper/z").write_bytes(b"")


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under root, with file contents (None for directories)."""
    return {
        str(p.relative_to(root)): (None if p.is_dir() else p.read_bytes())
        for p in sorted(root.rglob("*"))
    }


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def test_fake_ssh_receives_what_scp_sends(env: Env) -> None:
    (env.local / "f").write_text("x")
    assert env.scp("f", "host:").returncode == 0
    log = (env.ssh.parent / "ssh-argv.log").read_text()
    assert "'--', 'host', 'scp -t .'" in log


def test_upload_into_home_and_to_new_name(env: Env) -> None:
    (env.local / "f.txt").write_text("hello")
    assert env.scp("f.txt", "host:").returncode == 0
    assert (env.home / "f.txt").read_text() == "hello"
    (env.home / "dir").mkdir()
    assert env.scp("f.txt", "host:dir").returncode == 0
    assert (env.home / "dir/f.txt").read_text() == "hello"
    assert env.scp("f.txt", "host:dir/renamed").returncode == 0
    assert (env.home / "dir/renamed").read_text() == "hello"


def test_download(env: Env) -> None:
    (env.home / "remote.txt").write_text("from afar")
    result = env.scp("host:remote.txt", "here.txt")
    assert result.returncode == 0, result.stderr
    assert (env.local / "here.txt").read_text() == "from afar"


def test_recursive_upload_and_download(env: Env) -> None:
    makeTree(env.local / "tree")
    result = env.scp("-r", "tree", "host:")
    assert result.returncode == 0, result.stderr
    assert snapshot(env.home / "tree") == snapshot(env.local / "tree")

    result = env.scp("-r", "host:tree", "back")
    assert result.returncode == 0, result.stderr
    assert snapshot(env.local / "back") == snapshot(env.local / "tree")

    result = env.scp("-r", "host:tree", "back")
    assert result.returncode == 0, result.stderr
    assert snapshot(env.local / "back/tree") == snapshot(env.local / "tree")


def test_recursive_upload_into_missing_target_creates_it(env: Env) -> None:
    makeTree(env.local / "tree")
    result = env.scp("-r", "tree", "host:fresh")
    assert result.returncode == 0, result.stderr
    assert snapshot(env.home / "fresh") == snapshot(env.local / "tree")


def test_preserve_mode_and_times_both_ways(env: Env) -> None:
    (env.local / "p").mkdir()
    (env.local / "p/x").write_text("x")
    os.chmod(env.local / "p/x", 0o604)
    os.chmod(env.local / "p", 0o710)
    os.utime(env.local / "p/x", (1_300_000_000, 1_400_000_000))
    os.utime(env.local / "p", (1_100_000_000, 1_200_000_000))
    result = env.scp("-r", "-p", "p", "host:")
    assert result.returncode == 0, result.stderr
    for remote in [env.home / "p/x", env.home / "p"]:
        local = env.local / remote.relative_to(env.home)
        assert stat.S_IMODE(os.stat(remote).st_mode) == stat.S_IMODE(os.stat(local).st_mode)
        assert os.stat(remote).st_mtime == os.stat(local).st_mtime

    os.chmod(env.home / "p/x", 0o751)
    os.utime(env.home / "p/x", (1_000_000_000, 1_000_000_001))
    result = env.scp("-p", "host:p/x", "got")
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(os.stat(env.local / "got").st_mode) == 0o751
    assert os.stat(env.local / "got").st_mtime == 1_000_000_001


def test_several_sources_both_ways(env: Env) -> None:
    for name in "abc":
        (env.local / name).write_text(name * 3)
    (env.home / "in").mkdir()
    result = env.scp("a", "b", "c", "host:in")
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(env.home / "in")) == ["a", "b", "c"]

    (env.local / "out").mkdir()
    result = env.scp("host:in/a", "host:~/in/b", "out")
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(env.local / "out")) == ["a", "b"]


def test_several_sources_to_missing_directory(env: Env) -> None:
    (env.local / "a").write_text("a")
    (env.local / "b").write_text("b")
    result = env.scp("a", "b", "host:nowhere")
    assert result.returncode == 1
    assert "nowhere: No such file or directory" in result.stderr
    assert not (env.home / "nowhere").exists()


def test_remote_glob(env: Env) -> None:
    for name in ["one.log", "two.log", "skip.txt"]:
        (env.home / name).write_text(name)
    (env.local / "logs").mkdir()
    result = env.scp("host:*.log", "logs")
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(env.local / "logs")) == ["one.log", "two.log"]


def test_tilde_paths(env: Env) -> None:
    (env.local / "t").write_text("tilde")
    assert env.scp("t", "host:~").returncode == 0
    assert (env.home / "t").read_text() == "tilde"
    (env.home / "d").mkdir()
    assert env.scp("t", "host:~/d/u").returncode == 0
    assert (env.home / "d/u").read_text() == "tilde"
    assert env.scp("host:~/d/u", "v").returncode == 0
    assert (env.local / "v").read_text() == "tilde"


def test_missing_source_among_others_upload(env: Env) -> None:
    (env.local / "a").write_text("a")
    (env.local / "c").write_text("c")
    (env.home / "in").mkdir()
    result = env.scp("a", "missing", "c", "host:in")
    assert result.returncode == 1
    assert "missing: No such file or directory" in result.stderr
    assert sorted(os.listdir(env.home / "in")) == ["a", "c"]


def test_missing_source_among_others_download(env: Env) -> None:
    (env.home / "a").write_text("a")
    (env.home / "c").write_text("c")
    (env.local / "out").mkdir()
    result = env.scp("host:a", "host:missing", "host:c", "out")
    assert result.returncode == 1
    assert "scp: missing: No such file or directory" in result.stderr
    assert sorted(os.listdir(env.local / "out")) == ["a", "c"]


def test_missing_source_among_others_in_one_session(env: Env) -> None:
    (env.home / "a").write_text("a")
    (env.home / "c").write_text("c")
    (env.local / "out").mkdir()
    # -T: the client cannot check names against "a missing c"; one session serves all three.
    result = env.scp("-T", "host:a missing c", "out")
    assert result.returncode == 1
    assert "scp: missing: No such file or directory" in result.stderr
    assert sorted(os.listdir(env.local / "out")) == ["a", "c"]


def test_directory_without_r_is_refused(env: Env) -> None:
    (env.home / "d").mkdir()
    (env.home / "d/f").write_text("f")
    result = env.scp("host:d", "out")
    assert result.returncode == 1
    assert "scp: d: not a regular file" in result.stderr
    assert not (env.local / "out").exists()


def test_large_file_both_ways(env: Env) -> None:
    big = env.local / "big"
    with big.open("wb") as f:
        for _ in range(64):
            f.write(os.urandom(1 << 20))
    expected = sha256(big)
    result = env.scp("big", "host:")
    assert result.returncode == 0, result.stderr
    assert sha256(env.home / "big") == expected
    result = env.scp("host:big", "big-back")
    assert result.returncode == 0, result.stderr
    assert sha256(env.local / "big-back") == expected
    assert os.path.getsize(env.local / "big-back") == 64 << 20


def localrun(env: Env, *argv: str) -> subprocess.Popen[bytes]:
    """The server alone, as the fake ssh would exec it, with pipes to drive it."""
    return subprocess.Popen(
        [sys.executable, "-m", "diegossh.sshd.localrun", *argv],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=env.local,
        env=dict(os.environ, HOME=str(env.home)),
    )


@pytest.mark.parametrize(
    ("stream", "reply"),
    [
        (b"C0644 100 f\nonly some", b"\0\0\x02scp: dropped connection\n"),
        (b"C0644 1 ../escape\nx\0", b"\0\x02scp: error: unexpected filename: ../escape\n"),
        (b"C0644 1 a/b\nx\0", b"\0\x02scp: error: unexpected filename: a/b\n"),
        (b"garbage\n", b"\0\x02scp: protocol error: expected control record\n"),
        (b"C0644 1 f", b"\0\x02scp: protocol error: lost connection\n"),
        (b"D0755 0 d\n", b"\0\x02scp: protocol error: received directory without -r\n"),
    ],
)
def test_hostile_client_streams(env: Env, stream: bytes, reply: bytes) -> None:
    server = localrun(env, "scp", "-t", ".")
    out, err = server.communicate(stream, timeout=30)
    assert (server.returncode, out, err) == (1, reply, b"")
    assert not (env.home.parent / "escape").exists()


def test_client_vanishing_mid_download(env: Env) -> None:
    with (env.home / "big").open("wb") as f:
        f.write(os.urandom(8 << 20))
    server = localrun(env, "scp", "-f", "big")
    assert server.stdin is not None and server.stdout is not None
    server.stdin.write(b"\0")
    server.stdin.flush()
    assert server.stdout.readline() == b"C0644 8388608 big\n"
    server.stdin.write(b"\0")
    server.stdin.flush()
    assert len(server.stdout.read(100_000)) == 100_000
    server.stdout.close()
    server.stdin.close()
    assert server.wait(timeout=30) == 1
    assert server.stderr is not None and b"Traceback" not in server.stderr.read()
