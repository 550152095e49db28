# -*- test-case-name: tests.test_plugin_install -*-
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

diegoSSHProxy = ServiceMaker(
    "diego-ssh-proxy",
    "diegossh.proxy.tap",
    "SSH proxy: authenticates users and relays them to their containers",
    "diego-ssh-proxy",
)
