# -*- test-case-name: tests.test_bastion_realm,tests.test_bastion_keycache -*-
"""
Where tunnels may go: C{SSH_PERMIT_TARGET_HOST} (shell-style wildcards, a
comma-separated list) and C{SSH_PERMIT_TARGET_PORT} (C{*}, or ports).

This is the operator's outer fence; which of the permitted targets a given
key opens is the key cache's business.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

from diegossh.bastion.settings import parsePort


@dataclass(frozen=True)
class TargetPolicy:
    hostPatterns: tuple[re.Pattern[str], ...]
    ports: frozenset[int] | None  # None: any port

    @classmethod
    def fromSettings(cls, hosts: str, ports: str) -> TargetPolicy:
        patterns = tuple(
            re.compile(fnmatch.translate(part.strip()), re.IGNORECASE)
            for part in (hosts or "*").split(",")
            if part.strip()
        )
        if not patterns:
            raise ValueError("SSH_PERMIT_TARGET_HOST: no pattern given")
        portText = (ports or "*").strip()
        allowed = (
            None
            if portText == "*"
            else frozenset(parsePort(part) for part in portText.split(",") if part.strip())
        )
        return cls(patterns, allowed)

    def hostPermitted(self, host: str) -> bool:
        return any(pattern.fullmatch(host) for pattern in self.hostPatterns)

    def refusal(self, host: str, port: int) -> str | None:
        """
        Why a tunnel to C{host:port} is refused by the operator's fence, or
        L{None} when it is inside it.
        """
        if not self.hostPermitted(host):
            return f"target host {host} is not permitted by this proxy"
        if self.ports is not None and port not in self.ports:
            return f"target port {port} is not permitted by this proxy"
        return None
