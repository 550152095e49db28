"""
The one-file artifact's entry point: PyInstaller freezes a script, not a
console-script entry, so this is that script. It runs what the installed
C{diego-sshd} command runs.
"""

from diegossh.sshd.script import main

main()
