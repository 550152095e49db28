"""
Realms are Twisted plugins: the built-in ones are found like any other, and the
documented example realm works end to end in a real proxy.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from diegossh.proxy.realmplugins import installedRealms
from tests.support.daemon import TWISTD, freePort, startDaemon, waitForPort
from tests.support.keys import key
from tests.support.proxy import CLIENT_OPTIONS, fingerprintOf

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "docs" / "examples"


def test_builtin_realms_are_plugins() -> None:
    realms = installedRealms()
    assert {"diego", "cf", "bastion"} <= set(realms)


@pytest.mark.interop
def test_help_lists_installed_realms_and_unknown_realm_is_refused(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(EXAMPLES)}
    helped = subprocess.run([TWISTD, "diego-ssh-proxy", "--help"], capture_output=True,
                            text=True, env=env, cwd=tmp_path, check=False)  # fmt: skip
    assert "Realms installed:" in helped.stdout
    for name in ("bastion (", "cf (", "diego (", "static ("):
        assert name in helped.stdout.replace("\n", " ")
    assert "--staticRealmFile" in helped.stdout
    refused = subprocess.run(
        [TWISTD, "-n", "diego-ssh-proxy", "--realm", "nosuch", "--lrpDirectory=x.json"],
        capture_output=True, text=True, env=env, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert refused.returncode != 0
    assert "unknown realm 'nosuch'" in refused.stdout + refused.stderr


@pytest.mark.interop
def test_example_realm_end_to_end(tmp_path: Path) -> None:
    hostKey = tmp_path / "daemon_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(hostKey)], check=True)
    daemon = startDaemon(tmp_path, extraArgs=(f"--hostKey={hostKey}",))
    static = tmp_path / "static.json"
    static.write_text(json.dumps({"web": {
        "password_sha256": hashlib.sha256(b"s3cret").hexdigest(),
        "host": "127.0.0.1", "port": daemon.port,
        "route": {"container_port": 2222, "user": "vcap",
                  "host_fingerprint": fingerprintOf(Path(f"{hostKey}.pub")),
                  "private_key": key("ed25519").toString("openssh").decode()},
    }}))  # fmt: skip
    empty = tmp_path / "empty.json"
    empty.write_text('{"lrps": []}')
    port = freePort()
    proxy = subprocess.Popen(
        [TWISTD, "-n", "--pidfile=", "--logfile", str(tmp_path / "proxy.log"), "diego-ssh-proxy",
         f"--address=127.0.0.1:{port}", "--disableHealthCheckServer", "--realm", "static",
         f"--staticRealmFile={static}", f"--lrpDirectory={empty}"],
        env={**os.environ, "PYTHONPATH": str(EXAMPLES)}, cwd=tmp_path, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        waitForPort(port, proxy)
        argv = ["sshpass", "-e", "ssh", *CLIENT_OPTIONS, "-o", "NumberOfPasswordPrompts=1",
                "-p", str(port)]  # fmt: skip

        def login(user: str, password: str, command: str) -> subprocess.CompletedProcess[bytes]:
            return subprocess.run(
                [*argv, f"{user}@127.0.0.1", command], capture_output=True, timeout=60,
                env={**os.environ, "SSHPASS": password}, check=False,
            )  # fmt: skip

        ok = login("static:web", "s3cret", "echo static")
        assert ok.stdout == b"static\n", ok.stderr
        assert login("static:web", "nope", "true").returncode != 0
        # only the enabled realm answers
        assert login("diego:x/0", "s3cret", "true").returncode != 0
    finally:
        proxy.terminate()
        proxy.wait(10)
        daemon.stop()
