# -*- test-case-name: tests.test_sshd_tap,tests.test_sshd_footprint -*-
"""
The per-connection limits the daemon's and the proxy's options show as
defaults, apart from the protocol modules that enforce them
(L{diegossh.ssh.connection}, L{diegossh.ssh.factory}), so that reading a
command line does not import Conch (issue 15: the C{diego-sshd} script reads
its flags, and re-executes itself, before it imports the SSH layer).
"""

# Channels per connection, and sessions (programs) among them.
MAX_CHANNELS = 64
MAX_SESSIONS = 10
# Failed login attempts per connection (OpenSSH's MaxAuthTries).
MAX_AUTH_TRIES = 6
