# -*- test-case-name: tests.test_plugin_install -*-
"""
diegossh: SSH access to containers, on Twisted Conch.

Two services: C{twistd diego-sshd}, the daemon inside a container, and
C{twistd diego-ssh-proxy}, the user-facing endpoint that relays to it.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
