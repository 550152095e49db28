"""
What OpenSSH's command line cannot script: signals, window changes, env after
start, several sessions on one connection, global requests. Driven with
asyncssh (a test-only dependency) against a real C{twistd diego-sshd}.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import asyncssh
import pytest

from tests.support.daemon import Daemon
from tests.support.keys import key

pytestmark = pytest.mark.interop


def withConnection(daemon: Daemon, body: Callable[[Any], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        clientKey = asyncssh.import_private_key(key("ed25519").toString("openssh").decode())
        async with asyncssh.connect(
            "127.0.0.1", daemon.port, username="vcap", client_keys=[clientKey],
            known_hosts=None, agent_path=None,
        ) as conn:  # fmt: skip
            return await asyncio.wait_for(body(conn), 60)

    return asyncio.run(main())


def test_signal_reaches_process_group_and_exit_signal_is_named(daemon: Daemon) -> None:
    async def body(conn: Any) -> Any:
        proc = await conn.create_process("echo ready; sleep 60")
        assert (await proc.stdout.readline()) == "ready\n"
        proc.send_signal("TERM")
        await proc.wait_closed()
        return proc.exit_signal, proc.returncode

    exitSignal, returncode = withConnection(daemon, body)
    assert exitSignal[0] == "TERM"
    assert exitSignal[1] is False
    assert returncode == -15


def test_window_change_resizes_pty_and_sends_sigwinch(daemon: Daemon) -> None:
    # One resize per process: bash may fold a second SIGWINCH that arrives
    # while its trap still runs into the first.
    script = "trap 'stty size' WINCH; stty size; echo ready; while :; do sleep 0.1; done"

    async def resize(conn: Any, cols: int, rows: int) -> list[str]:
        proc = await conn.create_process(script, term_type="xterm", term_size=(80, 24))
        lines = [await proc.stdout.readline(), await proc.stdout.readline()]
        proc.change_terminal_size(cols, rows)
        lines.append(await proc.stdout.readline())
        proc.send_signal("KILL")
        await proc.wait_closed()
        return [line.strip() for line in lines]

    async def body(conn: Any) -> Any:
        return await resize(conn, 132, 50), await resize(conn, 10**9, 10**9)

    normal, absurd = withConnection(daemon, body)
    assert normal == ["24 80", "ready", "50 132"]
    # An absurd size is clamped to what the kernel holds, never a crash.
    assert absurd == ["24 80", "ready", "65535 65535"]


def test_window_change_without_pty_is_ignored(daemon: Daemon) -> None:
    async def body(conn: Any) -> Any:
        proc = await conn.create_process("read x; echo got $x")
        proc.change_terminal_size(100, 40)
        proc.stdin.write("it\n")
        proc.stdin.write_eof()
        return (await proc.stdout.read()), (await proc.wait()).exit_status

    out, status = withConnection(daemon, body)
    assert out == "got it\n"
    assert status == 0


def test_env_is_per_session_and_ignored_after_start(daemon: Daemon) -> None:
    async def body(conn: Any) -> Any:
        first = await conn.run('echo "$A"', env={"A": "one"})
        second = await conn.run('echo "${A-unset}"')
        return first.stdout, second.stdout

    first, second = withConnection(daemon, body)
    assert first == "one\n"
    assert second == "unset\n"


def test_many_sessions_on_one_connection(daemon: Daemon) -> None:
    async def body(conn: Any) -> Any:
        results = await asyncio.gather(*(conn.run(f"echo {i}; exit {i % 3}") for i in range(10)))
        failing = await conn.create_process("exec /nonexistent/binary")
        await failing.wait_closed()
        after = await conn.run("echo still fine")
        return [(r.stdout, r.exit_status) for r in results], failing.returncode, after.stdout

    results, failingStatus, after = withConnection(daemon, body)
    assert results == [(f"{i}\n", i % 3) for i in range(10)]
    assert failingStatus == 127
    assert after == "still fine\n"


def test_keepalive_global_requests_get_replies(daemon: Daemon) -> None:
    async def body(conn: Any) -> Any:
        replies = []
        for name in ("keepalive@openssh.com", "keepalive@cloudfoundry.org"):
            replies.append(await conn._make_global_request(name))
        after = await conn.run("echo alive")
        return replies, after.stdout

    replies, after = withConnection(daemon, body)
    assert len(replies) == 2  # each answered (success or failure), none left hanging
    assert after == "alive\n"


def test_agent_and_x11_requests_are_refused_and_session_goes_on(daemon: Daemon) -> None:
    async def body(conn: Any) -> Any:
        chan, _session = await conn.create_session(asyncssh.SSHClientSession)
        agent = await chan._make_request(b"auth-agent-req@openssh.com")
        x11 = await chan._make_request(
            b"x11-req", asyncssh.packet.Boolean(False), asyncssh.packet.String("MIT"),
            asyncssh.packet.String("00"), asyncssh.packet.UInt32(0),
        )  # fmt: skip
        chan.close()
        after = await conn.run("echo ok")
        return agent, x11, after.stdout

    agent, x11, after = withConnection(daemon, body)
    assert agent is False
    assert x11 is False
    assert after == "ok\n"
