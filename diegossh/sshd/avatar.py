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

from diegossh.sshd.forwarding import ForwardingAvatarMixin
from diegossh.sshd.session import SessionChannel, SessionConfig


class DaemonUser(ForwardingAvatarMixin, ConchUser):
    """
    Sessions and port forwarding for one container's one user, whatever name
    the client gave.
    """

    def __init__(self, config: SessionConfig, reactor: Any) -> None:
        ConchUser.__init__(self)
        self.channelLookup[b"session"] = partial(SessionChannel, config, reactor)
        self.installForwarding(reactor)

    def gotGlobalRequest(self, requestType: bytes, data: bytes) -> Any:
        """
        Conch's dispatch to C{global_*} methods; a name that is not ASCII
        (Conch would raise decoding it) is simply refused.
        """
        if not requestType.isascii():
            return 0
        return super().gotGlobalRequest(requestType, data)

    def logout(self) -> None:
        self.stopForwarding()


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
