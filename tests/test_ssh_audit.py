"""
ssh-audit (the PyPI package) against both services on loopback, with the
defaults: no C{[fail]} finding (issue 12). Its connection-rate (DHEat) probe
is not run here: it is a flood by design; docs/prelogin.md records what it
reports. A daemon offering an algorithm ssh-audit fails shows the check can
fail.

The defaults above run with an ed25519 host key (generated). With an RSA host
key (BOSH's C{diego.ssh_proxy.host_key} is one) the services also offer
C{ssh-rsa} by default, for old cf CLIs (docs/algorithms.md), and ssh-audit
fails it for its SHA-1 signature: that one finding, and no other, is expected;
with C{--allowedHostKeyAlgorithms} leaving it out there is none.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon import Daemon, startDaemon
from tests.support.proxy import Proxy, startProxy

SSH_AUDIT = str(Path(sys.executable).with_name("ssh-audit"))
# ssh-audit's exit codes (ssh_audit/exitcodes.py)
GOOD, WARNING, FAILURE = 0, 2, 3


def audit(port: int) -> tuple[int, dict[str, Any]]:
    result = subprocess.run(
        [SSH_AUDIT, "-j", "--skip-rate-test", "-t", "5", "-p", str(port), "127.0.0.1"],
        capture_output=True, timeout=30, check=False,
    )  # fmt: skip
    return result.returncode, json.loads(result.stdout)


def failures(report: dict[str, Any]) -> list[str]:
    """Every [fail] finding: algorithms' fail notes and CVEs."""
    found = [
        f"{section} {entry['algorithm']}: {note}"
        for section in ("kex", "key", "enc", "mac")
        for entry in report.get(section, [])
        for note in entry.get("notes", {}).get("fail", [])
    ]
    found += [f"CVE {cve.get('name')}" for cve in report.get("cves", [])]
    return found


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    p = startProxy(tmp_path_factory.mktemp("audit-proxy"), lrps=[])
    yield p
    p.stop()


@pytest.mark.interop
def test_daemon_has_no_failures(daemon: Daemon) -> None:
    code, report = audit(daemon.port)
    assert "diego-sshd" in report["banner"]["raw"]
    assert failures(report) == []
    assert code in (GOOD, WARNING)


@pytest.mark.interop
def test_proxy_has_no_failures(proxy: Proxy) -> None:
    code, report = audit(proxy.port)
    assert "diego-ssh-proxy" in report["banner"]["raw"]
    assert failures(report) == []
    assert code in (GOOD, WARNING)


@pytest.mark.interop
def test_an_algorithm_ssh_audit_fails_is_reported(tmp_path: Path) -> None:
    daemon = startDaemon(tmp_path, extraArgs=("--allowedKeyExchanges=ecdh-sha2-nistp256",))
    try:
        code, report = audit(daemon.port)
    finally:
        daemon.stop()
    assert any(f.startswith("kex ecdh-sha2-nistp256") for f in failures(report))
    assert code == FAILURE


def rsaHostKey(path: Path) -> Path:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "rsa", "-b", "3072", "-m", "PEM", "-N", "", "-f", str(path)],
        check=True,
    )
    return path


@pytest.mark.interop
def test_an_rsa_host_key_fails_only_for_ssh_rsa(tmp_path: Path) -> None:
    hostKey = rsaHostKey(tmp_path / "rsa_host_key")
    daemon = startDaemon(tmp_path, extraArgs=(f"--hostKey={hostKey}",))
    try:
        code, report = audit(daemon.port)
    finally:
        daemon.stop()
    assert [entry["algorithm"] for entry in report["key"]] == [
        "rsa-sha2-512",
        "rsa-sha2-256",
        "ssh-rsa",
    ]
    assert failures(report) == ["key ssh-rsa: using broken SHA-1 hash algorithm"]
    assert code == FAILURE


@pytest.mark.interop
def test_an_rsa_host_key_without_ssh_rsa_has_no_failures(tmp_path: Path) -> None:
    hostKey = rsaHostKey(tmp_path / "rsa_host_key")
    proxy = startProxy(
        tmp_path,
        lrps=[],
        extraArgs=(f"--hostKey={hostKey}", "--allowedHostKeyAlgorithms=rsa-sha2-512,rsa-sha2-256"),
    )
    try:
        code, report = audit(proxy.port)
    finally:
        proxy.stop()
    assert [entry["algorithm"] for entry in report["key"]] == ["rsa-sha2-512", "rsa-sha2-256"]
    assert failures(report) == []
    assert code in (GOOD, WARNING)
