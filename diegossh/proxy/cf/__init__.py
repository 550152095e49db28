# -*- test-case-name: tests.test_cf_authenticator,tests.test_cf_integration -*-
"""
The C{cf} auth realm's pieces: C{cf:APP-GUID/INDEX} logins whose password is
a one-time UAA authorization code (C{cf ssh-code}), granted by Cloud
Controller.

A login pipeline uses them as::

    uaa, cc = makeCFHTTPClients(reactor, pool, uaaTokenURL=..., ...)
    authenticator = CFAuthenticator(uaa, cc)
    instance = parseAppInstance(principal)          # LoginDenied if malformed
    login = await authenticator.authenticate(instance.app_guid, instance.index, password)
    target = await lrpDirectory.lookup(login.process_guid, login.index)
"""

from diegossh.proxy.cf.authenticator import CFAuthenticator, CFLogin
from diegossh.proxy.cf.cloudcontroller import CloudControllerClient
from diegossh.proxy.cf.factory import makeCFHTTPClients
from diegossh.proxy.cf.uaa import Token, UAAClient
from diegossh.proxy.cf.usernames import AppInstance, parseAppInstance

__all__ = [
    "AppInstance",
    "CFAuthenticator",
    "CFLogin",
    "CloudControllerClient",
    "Token",
    "UAAClient",
    "makeCFHTTPClients",
    "parseAppInstance",
]
