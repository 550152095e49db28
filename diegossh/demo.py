# -*- test-case-name: tests.test_demo -*-
"""
C{make demo}: the embedded default. A daemon, a proxy in front of it with a
local route table, diego credentials C{demo}; no Cloud Foundry needed.

Run C{python -m diegossh.demo}; it prints commands that work and runs until
interrupted. C{--proxyPort}, C{--daemonPort} and C{--state} move it elsewhere.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from diegossh.ssh.keys import generateHostKey, loadHostKey, sha256Fingerprint


def _twistd() -> str:
    return str(Path(sys.executable).with_name("twistd"))


def prepare(state: Path, daemonPort: int) -> tuple[Path, Path]:
    """
    Keys and route table for the demo, made once and reused.
    """
    state.mkdir(parents=True, exist_ok=True)
    daemonHost = state / "daemon_host_key"
    backendKey = state / "proxy_to_daemon_key"
    proxyHost = state / "proxy_host_key"
    for path in (daemonHost, backendKey, proxyHost):
        if not path.exists():
            path.write_bytes(generateHostKey().toString("openssh"))
            os.chmod(path, 0o600)
    route = {
        "container_port": 2222,
        "host_fingerprint": sha256Fingerprint(loadHostKey(str(daemonHost))),
        "user": "vcap",
        "private_key": backendKey.read_text(),
    }
    table = {
        "lrps": [
            {
                "process_guid": "demo",
                "routes": {"diego-ssh": route},
                "instances": [
                    {"index": 0, "instance_guid": "demo-0", "host": "127.0.0.1",
                     "port": daemonPort},
                ],
            }
        ]
    }  # fmt: skip
    lrps = state / "lrps.json"
    lrps.write_text(json.dumps(table, indent=2))
    os.chmod(lrps, 0o600)
    return lrps, backendKey


def commands(proxyPort: int) -> list[str]:
    """
    Commands to try. scp, sftp and rsync take the user as C{-o User=...}: a
    colon in C{user@host:path} would be read as the end of the host.
    """
    options = "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"
    user = "-o User=diego:demo/0"
    return [
        f"ssh {options} -p {proxyPort} diego:demo/0@127.0.0.1",
        f"scp {options} {user} -P {proxyPort} README.md 127.0.0.1:",
        f"sftp {options} {user} -P {proxyPort} 127.0.0.1",
        f"rsync -a -e 'ssh {options} {user} -p {proxyPort}' docs/ 127.0.0.1:docs/",
    ]


def start(
    state: Path, proxyPort: int, daemonPort: int, healthPort: int
) -> list[subprocess.Popen[bytes]]:
    lrps, backendKey = prepare(state, daemonPort)
    authorized = loadHostKey(str(backendKey)).public().toString("openssh").decode()
    home = state / "home"
    home.mkdir(exist_ok=True)
    daemonEnv = {**os.environ, "HOME": str(home), "SSHD_AUTHKEY": authorized}
    daemon = subprocess.Popen(
        [_twistd(), "-n", "--pidfile=", "--logfile", str(state / "sshd.log"), "diego-sshd",
         f"--address=127.0.0.1:{daemonPort}", f"--hostKey={state / 'daemon_host_key'}"],
        env=daemonEnv, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    proxy = subprocess.Popen(
        [_twistd(), "-n", "--pidfile=", "--logfile", str(state / "proxy.log"), "diego-ssh-proxy",
         f"--address=127.0.0.1:{proxyPort}", f"--healthCheckAddress=127.0.0.1:{healthPort}",
         f"--hostKey={state / 'proxy_host_key'}", "--enableDiegoAuth", "--diegoCredentials=demo",
         f"--lrpDirectory={lrps}", f"--accessLog={state / 'access.json'}"],
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    return [daemon, proxy]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--state", default="demo-state", type=Path)
    parser.add_argument("--proxyPort", default=2222, type=int)
    parser.add_argument("--daemonPort", default=2022, type=int)
    parser.add_argument("--healthPort", default=2223, type=int)
    args = parser.parse_args(argv)
    processes = start(args.state.resolve(), args.proxyPort, args.daemonPort, args.healthPort)
    time.sleep(1.5)
    if any(p.poll() is not None for p in processes):
        print(f"the demo did not start; see {args.state}/sshd.log and proxy.log", file=sys.stderr)
        for p in processes:
            p.terminate()
        return 1
    print(
        f"diegossh demo: a proxy on 127.0.0.1:{args.proxyPort} "
        f"in front of a daemon on 127.0.0.1:{args.daemonPort}"
    )
    print("password for every command: demo\n")
    for line in commands(args.proxyPort):
        print("  " + line)
    print(f"\nhealth check: curl http://127.0.0.1:{args.healthPort}/")
    print(f"logs and keys: {args.state}/   (Ctrl-C stops the demo)")
    sys.stdout.flush()
    try:
        while all(p.poll() is None for p in processes):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        for p in processes:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in processes:
            p.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
