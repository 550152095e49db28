"""
The one program the fake container engines run: C{cat}, as the bastion's
engine clients invoke it, directly or through C{sh -c 'exec cat -- "$HOME/$1"'}.

A fake container's files are a dict of absolute path to bytes. The shell
is only as real as the test needs: the script is split into words the way
sh splits constant text, and C{$HOME} and C{$N} are expanded once, the way
sh expands them inside double quotes, so a value is never parsed again.
Anything else exits 127, as a shell does for a command it cannot run.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["CatResult", "homeFiles", "runCat"]

_VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


@dataclass(frozen=True)
class CatResult:
    stdout: bytes
    stderr: bytes
    exitCode: int


def homeFiles(files: Mapping[str, bytes] | None, home: str) -> dict[str, bytes]:
    """C{files} with C{~/x} keys made absolute under C{home}."""
    result = {}
    for path, data in (files or {}).items():
        if path.startswith("~/"):
            path = home.rstrip("/") + "/" + path[2:]
        result[path] = data
    return result


def _cat(path: str, files: Mapping[str, bytes]) -> CatResult:
    path = re.sub("/+", "/", path)
    if path in files:
        return CatResult(files[path], b"", 0)
    return CatResult(b"", f"cat: {path}: No such file or directory\n".encode(), 1)


def runCat(argv: list[str], files: Mapping[str, bytes], home: str) -> CatResult:
    """What C{argv} prints and returns in a container holding C{files}."""
    if len(argv) == 3 and argv[:2] == ["cat", "--"]:
        return _cat(argv[2], files)
    if len(argv) >= 3 and argv[:2] == ["sh", "-c"]:
        try:
            words = shlex.split(argv[2])
        except ValueError:
            return CatResult(b"", b"sh: syntax error\n", 2)
        positional = argv[3:]

        def expand(match: re.Match[str]) -> str:
            name = match.group(1) or match.group(2)
            if name == "HOME":
                return home
            if name.isdigit() and int(name) < len(positional):
                return positional[int(name)]
            return ""

        if len(words) == 4 and words[:3] == ["exec", "cat", "--"]:
            return _cat(_VARIABLE.sub(expand, words[3]), files)
        return CatResult(b"", b"sh: the fake runs only 'exec cat -- FILE'\n", 127)
    name = argv[0] if argv else ""
    return CatResult(b"", f"exec: {name}: not found\n".encode(), 127)
