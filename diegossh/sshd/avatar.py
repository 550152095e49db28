# -*- test-case-name: tests.test_sshd_interop -*-
"""
The daemon's logged-in user: which channels and global requests it serves.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from twisted.conch.avatar import ConchUser
from twisted.conch.interfaces import IConchUser
from twisted.cred.portal import IRealm
from zope.interface import implementer

from diegossh.sshd.session import SessionChannel, SessionConfig


class DaemonUser(ConchUser):
    """
    Sessions, forwarding, and nothing that needs a second user: one container,
    one user, whatever name the client gave.
    """

    def __init__(self, config: SessionConfig, reactor: Any) -> None:
        super().__init__()
        self.reactor = reactor
        self.channelLookup[b"session"] = partial(SessionChannel, config, reactor)
        self.forwarding: Any = None
        try:
            from diegossh.sshd import forwarding
        except ImportError:
            return
        self.forwarding = forwarding.install(self, reactor)

    def logout(self) -> None:
        if self.forwarding is not None:
            self.forwarding.stopAll()


@implementer(IRealm)
class DaemonRealm:
    def __init__(self, config: SessionConfig, reactor: Any) -> None:
        self.config = config
        self.reactor = reactor

    def requestAvatar(self, avatarId: Any, mind: Any, *interfaces: Any) -> Any:
        if IConchUser not in interfaces:
            raise NotImplementedError("only SSH users")
        user = DaemonUser(self.config, self.reactor)
        return IConchUser, user, user.logout
