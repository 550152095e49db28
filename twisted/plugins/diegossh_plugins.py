"""
Twisted dropin naming diegossh's two services; all logic lives in L{diegossh}.
"""

from twisted.application.service import ServiceMaker

diegoSSHD = ServiceMaker(
    "diego-sshd",
    "diegossh.sshd.tap",
    "SSH daemon that runs inside a container as an unprivileged user",
    "diego-sshd",
)
