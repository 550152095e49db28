"""
A real C{twistd diego-sshd} driven by OpenSSH's ssh, scp, sftp and rsync.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support.daemon import Daemon, runClient
from tests.support.eventually import eventuallyBlocking


def run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    kwargs.setdefault("timeout", 120)
    return runClient(argv, **kwargs)


pytestmark = pytest.mark.interop


def test_exec_keeps_stdout_stderr_and_exit_status(daemon: Daemon) -> None:
    result = run(daemon.ssh("echo out; echo err >&2; exit 7"))
    assert result.returncode == 7
    assert result.stdout == b"out\n"
    assert result.stderr == b"err\n"


def test_environment_defaults_and_identity(daemon: Daemon) -> None:
    result = run(daemon.ssh('echo "$PATH|$LANG|$HOME|$USER"; pwd'))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    assert lines[0] == f"/bin:/usr/bin|en_US.UTF8|{daemon.home}|vcap"
    assert lines[1] == str(daemon.home)


def test_env_requests_are_per_session_and_guarded(daemon: Daemon) -> None:
    options = ("SetEnv=FOO=bar LANG=C HOME=/evil USER=evil PATH=/custom:/bin:/usr/bin",)
    result = run(daemon.ssh('echo "$FOO|$LANG|$HOME|$USER|$PATH"', options=options))
    assert result.stdout.decode().strip() == f"bar|C|{daemon.home}|vcap|/custom:/bin:/usr/bin"
    other = run(daemon.ssh('echo "${FOO-unset}"'))
    assert other.stdout == b"unset\n"


def test_daemon_key_variables_never_reach_sessions(daemon: Daemon) -> None:
    result = run(daemon.ssh("env"))
    assert b"SSHD_AUTHKEY" not in result.stdout
    assert b"SSHD_HOSTKEY" not in result.stdout
    cmdline = Path(f"/proc/{daemon.proc.pid}/cmdline").read_bytes()
    assert b"ssh-ed25519" not in cmdline


def test_stdin_eof_reaches_the_process(daemon: Daemon) -> None:
    result = run(daemon.ssh("cat; echo done"), input=b"abc\n", stdin=None)
    assert result.stdout == b"abc\ndone\n"


def test_stdin_eof_reaches_a_slow_reader(daemon: Daemon) -> None:
    # The child reads nothing for a while: its pipe fills and pauses us, and
    # the client's EOF arrives meanwhile. It must still reach the child.
    data = os.urandom(8 * 1024 * 1024)
    result = run(daemon.ssh("sleep 1; cat | sha256sum"), input=data, stdin=None, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0].decode() == hashlib.sha256(data).hexdigest()


def test_output_is_complete_before_eof(daemon: Daemon) -> None:
    # The client reads late; every byte must still arrive before EOF.
    size = 20 * 1024 * 1024
    shell = f"{' '.join(daemon.ssh(f'head -c {size} /dev/zero'))} | (sleep 1; wc -c)"
    for _ in range(3):
        result = subprocess.run(shell, shell=True, capture_output=True, timeout=120, check=False)
        assert result.stdout.strip() == str(size).encode()


def test_pty_shell_term_size_and_tty(daemon: Daemon) -> None:
    result = run(
        daemon.ssh("tty; echo $TERM; stty size", options=("RequestTTY=force",)),
        env={**os.environ, "TERM": "xterm-256color"},
    )
    lines = result.stdout.decode().replace("\r", "").splitlines()
    assert lines[0].startswith("/dev/pts/")
    assert lines[1] == "xterm-256color"
    assert len(lines[2].split()) == 2


def test_signal_from_remote_kill_reports_exit_signal(daemon: Daemon) -> None:
    result = run(daemon.ssh("kill -TERM $$"))
    # OpenSSH turns an exit-signal into exit status 255.
    assert result.returncode == 255, result.stderr


def test_concurrent_sessions(daemon: Daemon) -> None:
    def one(i: int) -> bytes:
        return run(daemon.ssh(f"echo session {i}; head -c 100000 /dev/zero | wc -c")).stdout

    with ThreadPoolExecutor(24) as pool:
        outputs = list(pool.map(one, range(24)))
    for i, out in enumerate(outputs):
        assert out == f"session {i}\n100000\n".encode()


def test_slow_reader_gets_every_byte_with_bounded_memory(daemon: Daemon) -> None:
    size = 64 * 1024 * 1024
    before = daemon.rssKiB()
    proc = subprocess.Popen(
        daemon.ssh(f"head -c {size} /dev/urandom | tee >(sha256sum >&2)"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    digest = hashlib.sha256()
    total = 0
    peak = before
    while True:
        chunk = proc.stdout.read(256 * 1024)
        if not chunk:
            break
        digest.update(chunk)
        total += len(chunk)
        time.sleep(0.002)
        peak = max(peak, daemon.rssKiB())
    _, err = proc.communicate(timeout=60)
    assert total == size
    assert err.split()[0].decode() == digest.hexdigest()
    assert peak - before < 32 * 1024, f"daemon grew by {peak - before} KiB"


def test_vanished_client_hangs_up_the_process_group(daemon: Daemon) -> None:
    marker = daemon.home / "hup-marker"
    marker.unlink(missing_ok=True)
    proc = subprocess.Popen(
        daemon.ssh(f"trap 'echo hup > {marker}; exit 0' HUP; echo ready; sleep 60 & wait"),
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"ready\n"
    proc.kill()
    proc.wait()
    eventuallyBlocking(marker.exists, "the HUP trap to write its marker", 20)
    assert marker.read_text() == "hup\n"


def test_yes_into_head_ends(daemon: Daemon) -> None:
    """
    When head exits, OpenSSH's ssh sends eow@openssh.com (it does to our
    banner); the program gets SIGPIPE and the session ends, as against sshd.
    """
    command = " ".join(daemon.ssh("'exec yes'"))
    result = subprocess.run(
        f"{command} | head -n 1; echo status ${{PIPESTATUS[0]}}",
        shell=True, executable="/bin/bash", capture_output=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.stdout == b"y\nstatus 255\n", result.stderr
