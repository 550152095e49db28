# -*- test-case-name: tests.test_bastion_keycache -*-
"""
What a container engine reports of an SSH target, and how its failures look.
"""

from __future__ import annotations

from dataclasses import dataclass


class EngineError(Exception):
    """
    The engine API could not answer (unreachable, timed out, refused, or an
    answer we cannot read); the message says which, without credentials.
    """


@dataclass(frozen=True)
class EngineTarget:
    """
    A running container or pod that carries the configured labels.

    @ivar name: what users type as the host (container name without its
        leading slash, or pod name).
    @ivar id: the engine's own id (container id, or pod UID).
    @ivar address: the IP address the proxy dials, and asks for
        C{/publickey}.
    """

    name: str
    id: str
    address: str
