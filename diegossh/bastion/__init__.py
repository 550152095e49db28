# -*- test-case-name: tests.test_bastion_realm -*-
"""
The container bastion realm: public-key logins whose keys the targets
themselves published (Docker or Kubernetes discovery), and C{direct-tcpip}
tunnels to those targets only. The proxy never sees the inner SSH session.
"""
