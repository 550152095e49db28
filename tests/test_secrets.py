"""
Secrets off the command line (issue 12, item 7).

The proxy takes every secret (C{--hostKey}, C{--diegoCredentials},
C{--uaaPassword}) as a flag, from the environment (the JSON key in upper case)
or from a file (C{--SFile}, C{S_FILE}, JSON C{s_file}); first found wins:
flag, variable, file, config file. End to end: a proxy with C{--workers 2}
and a daemon, both given their secrets as flags, show none in any process's
C{/proc/PID/cmdline}, and a login through both still works, served by the
parent and by a worker.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from twisted.python import usage

from diegossh.proxy import config as proxyConfig
from diegossh.proxy.tap import Options
from diegossh.proxy.worker import buildWorkerOptions
from diegossh.proxy.workers import workerOptions
from diegossh.ssh.keys import sha256Fingerprint
from tests.support.daemon import TWISTD, Daemon, freePort, startDaemon, waitForPort
from tests.support.keys import authorizedKeyLine, key
from tests.support.proxy import Proxy, lrp

BASE = ["--address=127.0.0.1:0", "--enableDiegoAuth", "--lrpDirectory=/nonexistent.json"]
VARIABLES = ["HOST_KEY", "DIEGO_CREDENTIALS", "UAA_PASSWORD"]


@pytest.fixture(autouse=True)
def _cleanEnvironment(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in VARIABLES:
        monkeypatch.delenv(variable, raising=False)
        monkeypatch.delenv(f"{variable}_FILE", raising=False)


def optionsOf(*args: str) -> Options:
    options = Options()
    options.parseOptions([*BASE, *args])
    return options


def credentials(options: Options) -> str:
    """
    The diego realm's credentials as it parsed them; the same as the option
    a worker is handed.
    """
    (diego,) = [each for each in options["settings"].realms if each.name == "diego"]
    assert diego.parsed.credentials == options["diegoCredentials"]
    return diego.parsed.credentials  # type: ignore[no-any-return]


def settingsOf(*args: str) -> dict[str, object]:
    """
    The secrets as resolved: the diego realm's credentials, the host key and
    the UAA password (what a worker is handed on its stdin).
    """
    options = optionsOf(*args)
    return {
        "diegoCredentials": credentials(options),
        "hostKey": options["settings"].hostKey,
        "uaaPassword": options["uaaPassword"],
    }


# -- the rule


def test_each_secret_variable_is_its_json_key_in_upper_case() -> None:
    assert set(proxyConfig.SECRETS) == {"hostKey", "diegoCredentials", "uaaPassword"}
    for flag, variable in proxyConfig.SECRETS.items():
        assert variable == proxyConfig.SETTINGS[flag][0].upper()
    files = proxyConfig.secretFileSettings(proxyConfig.SECRETS, proxyConfig.SETTINGS)
    assert files["diegoCredentialsFile"] == ("diego_credentials_file", "str", None)
    assert proxyConfig.secretEnvironment({"uaaPassword": "UAA_PASSWORD"}) == {
        "UAA_PASSWORD": "uaaPassword",
        "UAA_PASSWORD_FILE": "uaaPasswordFile",
    }


# -- each form


def test_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIEGO_CREDENTIALS", "from-env")
    assert settingsOf()["diegoCredentials"] == "from-env"
    # read once and removed, so no child (worker, anything) inherits it
    assert "DIEGO_CREDENTIALS" not in os.environ


def test_from_a_file_by_flag_by_variable_or_by_json_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    assert settingsOf(f"--diegoCredentialsFile={secret}")["diegoCredentials"] == "from-file"
    monkeypatch.setenv("DIEGO_CREDENTIALS_FILE", str(secret))
    assert settingsOf()["diegoCredentials"] == "from-file"
    assert "DIEGO_CREDENTIALS_FILE" not in os.environ
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"diego_credentials_file": str(secret)}))
    assert settingsOf(f"--config={config}")["diegoCredentials"] == "from-file"


def test_host_key_and_uaa_password_from_files(tmp_path: Path) -> None:
    pem = tmp_path / "host_key"
    pem.write_bytes(key("p256").toString("openssh"))
    uaa = tmp_path / "uaa"
    uaa.write_text("uaa-secret")
    settings = settingsOf(
        "--diegoCredentials=x", f"--hostKeyFile={pem}", f"--uaaPasswordFile={uaa}"
    )
    assert settings["uaaPassword"] == "uaa-secret"
    hostKey = settings["hostKey"]
    assert sha256Fingerprint(hostKey) == sha256Fingerprint(key("p256"))


def test_the_json_config_may_hold_the_secret(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"diego_credentials": "in-json"}))
    assert settingsOf(f"--config={config}")["diegoCredentials"] == "in-json"


# -- precedence: flag, variable, file, config file


def test_first_found_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "pw"
    secret.write_text("file")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"diego_credentials": "json"}))
    every = [f"--config={config}", f"--diegoCredentialsFile={secret}"]

    def resolved(*args: str, env: str | None = None) -> object:
        if env is not None:
            monkeypatch.setenv("DIEGO_CREDENTIALS", env)
        return settingsOf(*every, *args)["diegoCredentials"]

    assert resolved("--diegoCredentials=flag", env="env") == "flag"
    assert resolved(env="env") == "env"
    assert resolved() == "file"
    assert settingsOf(f"--config={config}")["diegoCredentials"] == "json"


# -- refusals name the setting


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "cannot read"), ("\n", "is empty"), ("x" * (64 * 1024 + 1), "larger than")],
)
def test_unusable_secret_files_stop_start_up(
    tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "pw"
    if content is not None:
        path.write_text(content)
    with pytest.raises(usage.UsageError, match=f"diegoCredentialsFile: .*{message}"):
        settingsOf(f"--diegoCredentialsFile={path}")


# -- workers


def test_a_worker_gets_a_secret_from_the_environment_on_its_stdin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "uaa"
    secret.write_text("uaa-secret")
    monkeypatch.setenv("DIEGO_CREDENTIALS", "from-env")
    options = Options()
    options.parseOptions([*BASE, "--workers=2", f"--uaaPasswordFile={secret}"])
    boot = json.loads(json.dumps({"options": workerOptions(options), "hostKeys": []}))
    # the worker's environment is the parent's: the variable is gone
    assert "DIEGO_CREDENTIALS" not in os.environ
    secret.unlink()
    rebuilt = buildWorkerOptions(boot, fd=7)
    assert credentials(rebuilt) == "from-env"
    assert rebuilt["uaaPassword"] == "uaa-secret"


# -- end to end

SECRET = "proxy-secret-7f3e"
UAA_SECRET = "uaa-secret-91c2"


@dataclass
class World:
    daemon: Daemon
    proxy: Proxy
    hostKeyText: str
    daemonHostKeyText: str


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _waitForWorker(pid: int, limit: float = 30.0) -> int:
    """
    The worker's pid once it runs the worker's code: between fork and exec a
    child's /proc files still show the parent's command line and environment.
    """
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        for child in _children(pid):
            try:
                if b"runWorker" in _cmdline(child):
                    return child
            except OSError:
                pass
        time.sleep(0.05)
    raise AssertionError("no worker started")


def _startProxy(tmp: Path, args: Sequence[str], env: dict[str, str] | None = None) -> Proxy:
    port, health = freePort(), freePort()
    log = tmp / "proxy.log"
    proc = subprocess.Popen(
        [TWISTD, "-n", "--pidfile=", "--logfile", str(log), "diego-ssh-proxy",
         f"--address=127.0.0.1:{port}", f"--healthCheckAddress=127.0.0.1:{health}",
         f"--accessLog={tmp / 'access.json'}", *args],
        stdin=subprocess.DEVNULL, cwd=str(tmp), env={**os.environ, **(env or {})},
    )  # fmt: skip
    try:
        waitForPort(port, proc)
    except Exception:
        proc.kill()
        raise
    return Proxy(port, health, proc, log, tmp / "access.json")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("secrets")
    daemonHostKey = key("p521")
    daemonHostKeyText = daemonHostKey.toString("openssh").decode()
    # the daemon's secrets as flags, one of them by an unambiguous prefix
    authorized = authorizedKeyLine(key("ed25519"))
    daemon = startDaemon(
        tmp,
        extraArgs=(f"--hostKey={daemonHostKeyText}", "--authorized", authorized),
        env={"SSHD_AUTHKEY": ""},
    )
    route = {
        "container_port": 2222,
        "host_fingerprint": sha256Fingerprint(daemonHostKey),
        "user": "vcap",
        "private_key": daemon.identity.read_text(),
    }
    table = tmp / "lrps.json"
    table.write_text(json.dumps({"lrps": [lrp("app", "127.0.0.1", daemon.port, route)]}))
    hostKeyText = key("p384").toString("openssh").decode()
    proxy = _startProxy(
        tmp,
        ["--enableDiegoAuth", "--diegoCredentials", SECRET, f"--hostKey={hostKeyText}",
         "--enableCFAuth", "--ccAPIURL=https://127.0.0.1:9/", "--uaaTokenURL=https://127.0.0.1:9/",
         "--uaaUsername=ssh-proxy", f"--uaaPassword={UAA_SECRET}",
         f"--lrpDirectory={table}", "--workers=2", "--communicationTimeout=30s"],
    )  # fmt: skip
    _waitForWorker(proxy.proc.pid)
    yield World(daemon, proxy, hostKeyText, daemonHostKeyText)
    proxy.stop()
    daemon.stop()


def _cmdline(pid: int) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes()


def _login(proxy: Proxy, password: str = SECRET) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        proxy.ssh("diego:app/0", "echo in"), env=proxy.env(password),
        capture_output=True, stdin=subprocess.DEVNULL, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.interop
def test_no_process_shows_a_secret(world: World) -> None:
    proxy, daemon = world.proxy, world.daemon
    pids = [proxy.proc.pid, *_children(proxy.proc.pid), daemon.proc.pid]
    assert len(pids) == 3
    for pid in pids:
        cmdline = _cmdline(pid)
        for secret in (SECRET, UAA_SECRET, "PRIVATE KEY", "ssh-ed25519"):
            assert secret.encode() not in cmdline, (pid, secret)
    # the re-exec kept everything else
    assert b"--workers=2" in _cmdline(proxy.proc.pid)
    assert b"--address=127.0.0.1:" in _cmdline(daemon.proc.pid)
    # the carriers are gone from the environment the workers were given
    for pid in _children(proxy.proc.pid):
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        assert b"DIEGOSSH_SECRET_" not in environ and SECRET.encode() not in environ


@pytest.mark.interop
def test_the_secrets_still_work_in_the_parent_and_in_a_worker(world: World) -> None:
    proxy = world.proxy
    # the host keys given as flags are the ones shown
    scan = subprocess.run(
        ["ssh-keyscan", "-t", "ecdsa", "-p", str(proxy.port), "127.0.0.1"],
        capture_output=True, timeout=30, check=False,
    )  # fmt: skip
    shown = scan.stdout.split()[-1].decode()
    assert shown == key("p384").public().toString("openssh").decode().split()[1]
    denied = _login(proxy, password="wrong")
    assert denied.returncode != 0
    # the parent serves
    assert _login(proxy).stdout == b"in\n"
    # with the parent stopped, only the worker accepts: it has the secret too
    (worker,) = _children(proxy.proc.pid)
    os.kill(proxy.proc.pid, signal.SIGSTOP)
    try:
        result = _login(proxy)
    finally:
        os.kill(proxy.proc.pid, signal.SIGCONT)
    assert result.stdout == b"in\n", result.stderr
    pids = {e.get("pid") for e in proxy.accessEvents() if e.get("outcome") == "success"}
    assert worker in pids


@pytest.mark.interop
def test_secrets_from_environment_and_file_end_to_end(world: World, tmp_path: Path) -> None:
    table = json.loads((world.proxy.accessLog.parent / "lrps.json").read_text())
    (tmp_path / "lrps.json").write_text(json.dumps(table))
    uaa = tmp_path / "uaa"
    uaa.write_text(UAA_SECRET + "\n")
    proxy = _startProxy(
        tmp_path,
        ["--enableDiegoAuth", f"--lrpDirectory={tmp_path / 'lrps.json'}",
         "--enableCFAuth", "--ccAPIURL=https://127.0.0.1:9/", "--uaaTokenURL=https://127.0.0.1:9/",
         "--uaaUsername=ssh-proxy", f"--uaaPasswordFile={uaa}", "--workers=2"],
        env={"DIEGO_CREDENTIALS": SECRET},
    )  # fmt: skip
    try:
        worker = _waitForWorker(proxy.proc.pid)
        os.kill(proxy.proc.pid, signal.SIGSTOP)
        try:
            result = _login(proxy)
        finally:
            os.kill(proxy.proc.pid, signal.SIGCONT)
        assert result.stdout == b"in\n", result.stderr
        environ = Path(f"/proc/{worker}/environ").read_bytes()
        assert b"DIEGO_CREDENTIALS" not in environ
        assert _login(proxy).stdout == b"in\n"
    finally:
        proxy.stop()
