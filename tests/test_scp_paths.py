"""
Remote paths: ~ expansion, HOME-relative resolution and globbing.
"""

from __future__ import annotations

from pathlib import Path

from diegossh.sshd.scp._paths import RemotePaths, readUmask


def test_tilde_and_relative_paths(tmp_path: Path) -> None:
    paths = RemotePaths(str(tmp_path))
    assert paths.expand("~") == str(tmp_path)
    assert paths.expand("~/a/b") == str(tmp_path / "a/b")
    assert paths.expand("~root/x") == "~root/x"
    assert paths.resolve("a/b") == str(tmp_path / "a/b")
    assert paths.resolve("/etc") == "/etc"


def test_home_from_environ(tmp_path: Path) -> None:
    assert RemotePaths.fromEnviron({"HOME": str(tmp_path)}).home == str(tmp_path)
    assert RemotePaths.fromEnviron({}).home  # the password database's answer


def test_globs_relative_to_home_sorted_without_hidden(tmp_path: Path) -> None:
    for name in ["b.txt", "a.txt", ".h.txt", "c.log"]:
        (tmp_path / name).write_text(name)
    paths = RemotePaths(str(tmp_path))
    assert paths.sources("*.txt") == [
        ("a.txt", str(tmp_path / "a.txt")),
        ("b.txt", str(tmp_path / "b.txt")),
    ]
    assert paths.sources("~/c.*") == [(str(tmp_path / "c.log"),) * 2]


def test_unmatched_glob_stands_for_itself(tmp_path: Path) -> None:
    paths = RemotePaths(str(tmp_path))
    assert paths.sources("*.none") == [("*.none", str(tmp_path / "*.none"))]
    assert paths.sources("plain") == [("plain", str(tmp_path / "plain"))]


def test_umask_is_read_without_change() -> None:
    import os

    before = os.umask(0o027)
    try:
        assert readUmask() == 0o027
        assert readUmask() == 0o027
    finally:
        os.umask(before)
