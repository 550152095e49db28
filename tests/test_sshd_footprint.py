"""
What the daemon imports (issue 15): every module it loads stays resident in
every app instance, so the standard library's ssl, HTTP, YAML, protobuf and
gRPC clients, pyOpenSSL (which Twisted's reactor loads when it can), the
proxy or the bastion must never load in it, neither at start nor once a
session ran. The figures
themselves (RSS, start-up time) are measured by C{python -m bench footprint},
not asserted here.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from diegossh.ssh import admission
from diegossh.sshd import optiontable, script
from tests.support.daemon import freePort, waitForPort
from tests.support.eventually import eventuallyBlocking
from tests.support.keys import authorizedKeyLine, key, writePrivateKey
from tests.support.openssh import BASE_OPTIONS

# Never in the daemon's process: a module here, or one inside it.
FORBIDDEN = (
    "ssl",
    "OpenSSL",
    "service_identity",
    "twisted.internet.ssl",
    "twisted.internet._sslverify",
    "twisted.protocols.tls",
    "_hashlib",
    "ctypes",
    "bz2",
    "lzma",
    # http.cookiejar and asyncio stay in sys.modules with their bodies not
    # run (diegossh.sshd.lazyimports); what their bodies would import:
    "http.cookiejar",
    "urllib.request",
    "http.client",
    "email",
    "asyncio.base_events",
    "asyncio.selector_events",
    "asyncio.unix_events",
    "asyncio.tasks",
    "asyncio.streams",
    "twisted.web",
    "treq",
    "google.protobuf",
    "grpc",
    "yaml",
    "diegossh.proxy",
    "diegossh.bastion",
    "prometheus_client",  # only with -enableMetrics
)

# The installed console script's main, with one addition: SIGUSR2 writes the
# names of the modules loaded (those refused, None in sys.modules, and those
# whose body has not run, lazyimports', left out) as JSON to the file named in
# argv[1]. Run as `python -c`, so the daemon's
# re-exec (keys off the command line) runs it again, as it does the script.
DUMPING_DAEMON = """
import json, signal, sys
path = sys.argv.pop(1)
def dump(signum, frame):
    from diegossh.sshd.lazyimports import isDeferred
    loaded = sorted(name for name, module in sys.modules.items()
                    if module is not None and not isDeferred(module))
    with open(path + ".tmp", "w") as f:
        json.dump(loaded, f)
    import os
    os.replace(path + ".tmp", path)
signal.signal(signal.SIGUSR2, dump)
from diegossh.sshd.script import main
main()
"""


def forbiddenAmong(modules: list[str]) -> list[str]:
    return [m for m in modules if any(m == f or m.startswith(f + ".") for f in FORBIDDEN)]


def loadedModules(code: str) -> list[str]:
    """
    The modules a fresh interpreter has loaded after running C{code} (their
    bodies run).
    """
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport json, sys\n"
         # lazyimports' isDeferred, without importing it (and typing) here
         "print(json.dumps([n for n, m in sys.modules.items()"
         " if m is not None and type(m).__name__ != '_BodyNotRun']))"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    loaded: list[str] = json.loads(out.stdout.splitlines()[-1])
    return loaded


def test_refusing_keeps_what_is_loaded() -> None:
    modules: dict[str, object] = {}
    script.refuseUnneeded(modules)
    assert modules == dict.fromkeys(script.REFUSED_MODULES)
    assert {"ssl", "OpenSSL", "_hashlib", "ctypes", "_bz2", "_lzma"} <= set(modules)
    loaded = object()
    modules = {"ssl": loaded}
    script.refuseUnneeded(modules)
    assert modules == {**dict.fromkeys(script.REFUSED_MODULES), "ssl": loaded}


@pytest.mark.slow  # over half a second of wall-clock time: not in make unit
def test_the_check_sees_what_twisted_loads_unless_told_not_to() -> None:
    # Twisted's reactor loads ssl, pyOpenSSL, http.cookiejar and asyncio when
    # it can: the check below is not vacuous.
    loaded = forbiddenAmong(loadedModules("import twisted.internet.reactor"))
    expected = {"ssl", "OpenSSL", "_hashlib", "ctypes", "bz2", "lzma", "http.cookiejar"}
    assert expected | {"asyncio.base_events"} <= set(loaded)
    refused = loadedModules(
        "from diegossh.sshd.script import refuseUnneeded\nrefuseUnneeded()\n"
        "from diegossh.sshd.lazyimports import deferTwistedsStdlib\ndeferTwistedsStdlib()\n"
        "import twisted.internet.reactor"
    )
    assert forbiddenAmong(refused) == []


def test_the_script_reads_its_command_line_without_twisted() -> None:
    """
    The console script reads its flags and re-executes itself (keys off the
    command line) before it imports Twisted: that first process is short.
    """
    loaded = loadedModules(
        "from diegossh.sshd import script\n"
        "script.reexecArguments(script.parseCommand(['-hostKey=k', '-address=:2222']))"
    )
    assert [name for name in loaded if name.split(".")[0] in ("twisted", "cryptography")] == []
    # nor what would be most of its imports: dataclasses (with inspect), typing
    assert [name for name in ("dataclasses", "inspect", "typing") if name in loaded] == []


def test_the_option_tables_defaults_are_admissions() -> None:
    assert optiontable.DAEMON_MAX_STARTUPS == str(admission.MaxStartups(50, 30, 100))
    assert optiontable.DAEMON_PENALTIES == str(admission.DAEMON_PENALTIES)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, Path, Path]]:
    home = tmp_path / "home"
    home.mkdir()
    identity = writePrivateKey(key("rsa"), tmp_path / "id_rsa")
    dump = tmp_path / "modules.json"
    port = freePort()
    hostKey = key("rsa").toString("openssh").decode()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "USER": "vcap"}
    proc = subprocess.Popen(
        [sys.executable, "-c", DUMPING_DAEMON, str(dump),
         f"-address=127.0.0.1:{port}", f"-hostKey={hostKey}",
         f"-authorizedKey={authorizedKeyLine(key('rsa'))}", "-inheritDaemonEnv",
         "-logLevel=fatal"],
        env=env, cwd=tmp_path, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        waitForPort(port, proc)
        yield proc, port, identity, dump
    finally:
        proc.kill()
        proc.wait()


def modulesOf(proc: subprocess.Popen[bytes], dump: Path) -> list[str]:
    dump.unlink(missing_ok=True)
    os.kill(proc.pid, signal.SIGUSR2)
    eventuallyBlocking(dump.exists, "the daemon's module list")
    loaded: list[str] = json.loads(dump.read_text())
    return loaded


@pytest.mark.interop
def test_the_daemon_loads_none_of_the_forbidden_modules(
    daemon: tuple[subprocess.Popen[bytes], int, Path, Path],
) -> None:
    proc, port, identity, dump = daemon
    atStart = modulesOf(proc, dump)
    # the SSH layer is loaded, the dump is the daemon's and not the first process'
    assert "diegossh.ssh.transport" in atStart
    assert forbiddenAmong(atStart) == []
    login = subprocess.run(
        ["ssh", *BASE_OPTIONS, "-p", str(port), "-i", str(identity), "vcap@127.0.0.1", "true"],
        capture_output=True, timeout=60, check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert login.returncode == 0, login.stderr
    afterLogin = modulesOf(proc, dump)
    assert "diegossh.sshd.programsession" in afterLogin or "diegossh.sshd.session" in afterLogin
    assert forbiddenAmong(afterLogin) == []


@pytest.mark.interop
@pytest.mark.parametrize("mac", ["hmac-sha2-256-etm@openssh.com", "hmac-sha2-256"])
def test_macs_and_key_exchange_without_hashlibs_openssl(
    daemon: tuple[subprocess.Popen[bytes], int, Path, Path], mac: str
) -> None:
    """
    With C{_hashlib} refused the daemon's kex hash and key derivation use
    CPython's builtin SHA-256, its MACs cryptography's HMAC: OpenSSH checks
    both (a wrong MAC or exchange hash ends the connection).
    """
    proc, port, identity, dump = daemon
    data = bytes(range(256)) * 4096  # 1 MiB each way: many packets, both MACs checked
    result = subprocess.run(
        ["ssh", *BASE_OPTIONS, "-c", "aes128-ctr", "-m", mac, "-p", str(port),
         "-i", str(identity), "vcap@127.0.0.1", "cat"],
        input=data, capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == data
    assert "_hashlib" not in modulesOf(proc, dump)
