"""
Benchmarks for diego-sshd and diego-ssh-proxy against stock OpenSSH on loopback:
C{make bench} or C{python -m bench --help}. Results and method: docs/performance.md.
"""
