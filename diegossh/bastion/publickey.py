# -*- test-case-name: tests.test_bastion_keycache -*-
"""
A target's published key from its own HTTP endpoint,
C{GET http://ADDRESS:PORT/publickey}: the cheap way, tried before an exec.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IReactorTime

from diegossh._http import exchange, httpClient

MAX_PUBLICKEY = 64 * 1024


class PublicKeyAPI:
    """
    Asks targets for C{/publickey} with one agent (plain HTTP: the key is
    public; whether it is the right one is proven by the target's sshd at
    login, and a forged key opens at most that target's address).
    """

    def __init__(self, agent: Any, clock: IReactorTime, port: int, timeout: float) -> None:
        self._http = httpClient(agent)
        self._clock = clock
        self._port = port
        self._timeout = timeout

    async def fetch(self, address: str) -> bytes | None:
        """
        The body of a 200 answer, or L{None} when there is none (no server,
        another status, too big, too slow).
        """
        host = f"[{address}]" if ":" in address else address
        url = f"http://{host}:{self._port}/publickey"
        try:
            reply = await exchange(
                self._http,
                self._clock,
                self._timeout,
                "GET",
                url,
                {},
                retries=0,
                limit=MAX_PUBLICKEY,
            )
        except Exception:
            return None
        if reply.code != 200:
            return None
        return reply.body
