"""
The bastion with discovery off (C{MANUAL_AUTH_FILE=true}): the operator's
C{authorized_keys_cache} decides, C{permitopen} narrows a key to its targets,
and the proxy itself offers tunnels only.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from tests.support.bastion import (
    Bastion,
    Target,
    keyPair,
    portFreeOn,
    run,
    startBastion,
    startTarget,
)

pytestmark = pytest.mark.interop

A, B = "127.0.0.2", "127.0.0.3"


@pytest_twisted.async_yield_fixture(scope="module")
async def setup(tmp_path_factory: Any) -> AsyncIterator[tuple[Bastion, Target, Target, Path]]:
    tmp = tmp_path_factory.mktemp("bastion-manual")
    port = portFreeOn([A, B])
    a = startTarget(tmp, "alpha", A, port)
    b = startTarget(tmp, "beta", B, port)
    stranger, _ = keyPair(tmp / "stranger", "stranger")
    cache = tmp / "authorized_keys_cache"
    cache.write_text(
        "# operator-kept\n"
        f'permitopen="{A}:*",no-pty {a.pub.read_text().strip()}\n'
        f"{b.pub.read_text().strip()}\n"
        f'from="10.0.0.1" {stranger.with_suffix(".pub").read_text().strip()}\n'
    )
    bastion = startBastion(
        tmp,
        {
            "MANUAL_AUTH_FILE": "true",
            "SSH_AUTHORIZED_KEYS_CACHE": str(cache),
            "SSH_PERMIT_TARGET_PORT": str(port),
        },
    )
    try:
        yield bastion, a, b, stranger
    finally:
        bastion.stop()
        a.stop()
        b.stop()


@pytest_twisted.ensureDeferred
async def test_permitopen_key_tunnels_to_its_target_only(setup: Any) -> None:
    bastion, a, b, _ = setup
    ok = await run(bastion.jump(a.key, A, a.port, "echo via-jump"))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == b"via-jump\n"
    ok = await run(bastion.proxyCommand(a.key, A, a.port, "echo via-proxycommand"))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == b"via-proxycommand\n"
    refused = await run(bastion.jump(a.key, B, b.port, "echo no"))
    assert refused.returncode != 0
    assert b"no" not in refused.stdout
    assert f"your key does not open {B}".encode() in refused.stderr


@pytest_twisted.ensureDeferred
async def test_plain_line_opens_any_permitted_target_but_not_other_ports(setup: Any) -> None:
    bastion, a, b, _ = setup
    ok = await run(bastion.jump(b.key, B, b.port, "echo beta"))
    assert ok.stdout == b"beta\n", ok.stderr
    # a line without permitopen opens any target inside the fence: alpha's
    # sshd is reached, and refuses beta's key itself
    other = await run(bastion.jump(b.key, A, a.port, "true"))
    assert b"diegossh-test@127.0.0.2: Permission denied (publickey)" in other.stderr
    refused = await run(bastion.jump(b.key, B, b.port + 1, "true"))
    assert refused.returncode != 0
    assert f"target port {b.port + 1} is not permitted".encode() in refused.stderr


@pytest_twisted.ensureDeferred
async def test_unsupported_option_and_unknown_keys_are_refused(setup: Any) -> None:
    bastion, a, _, stranger = setup
    refused = await run(bastion.jump(stranger, A, a.port, "true"))
    assert refused.returncode != 0
    assert b"Permission denied" in refused.stderr
    assert "key skipped: option 'from' is not supported" in bastion.log.read_text()


@pytest_twisted.ensureDeferred
async def test_no_shell_exec_or_remote_forward_on_the_proxy(setup: Any) -> None:
    bastion, a, _, _ = setup
    shell = await run(bastion.direct(a.key, "-tt"))
    assert shell.returncode != 0
    assert b"only opens tunnels to targets" in shell.stderr
    command = await run([*bastion.direct(a.key), "id"])
    assert command.returncode != 0
    assert b"uid=" not in command.stdout
    remote = await run(
        bastion.direct(a.key, "-N", "-o", "ExitOnForwardFailure=yes", "-R", "0:127.0.0.1:9")
    )
    assert remote.returncode != 0
    assert b"remote port forwarding failed" in remote.stderr.lower()
