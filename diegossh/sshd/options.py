# -*- test-case-name: tests.test_sshd_tap,tests.test_sshd_dropin -*-
"""
The daemon's options, read the same by C{twistd diego-sshd}
(L{diegossh.sshd.tap}) and the C{diego-sshd} script
(L{diegossh.sshd.script}); see L{diegossh.sshd.tap} for what they mean.

Their names, defaults and help are data, in L{diegossh.sshd.optiontable},
which the C{diego-sshd} script reads without importing Twisted; this module
imports no SSH protocol code and no reactor, and L{Options.postOptions}
loads the settings' parser when it runs (issue 15).
"""

from __future__ import annotations

import os

from twisted.python import usage

from diegossh import secretargs
from diegossh.sshd.optiontable import FLAGS, PARAMETERS

# secret flag -> its environment variable (upstream's; the variable wins)
_SECRET_FLAGS = {"hostKey": "SSHD_HOSTKEY", "authorizedKey": "SSHD_AUTHKEY"}


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = "SSH daemon for one container: one authorized key, no root needed."

    optParameters = PARAMETERS
    optFlags = FLAGS

    def postOptions(self) -> None:
        secretargs.moveOffCommandLine("diego-sshd", _SECRET_FLAGS, self.longOpt)
        self.update(secretargs.takeMoved(_SECRET_FLAGS))
        for flag, variable in _SECRET_FLAGS.items():
            value = os.environ.pop(variable, None)
            if value:
                self[flag] = value
        from diegossh.sshd.settings import parseSettings

        try:
            self["settings"] = parseSettings(self)
        except ValueError as e:
            # the cause is kept: the diego-sshd script logs a Refused's lager event
            raise usage.UsageError(str(e)) from e
