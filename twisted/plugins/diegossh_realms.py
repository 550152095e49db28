# -*- test-case-name: tests.test_realm_plugins -*-
"""
Twisted dropin naming diegossh's own auth realms; all logic lives in L{diegossh}.
"""

from diegossh.bastion.plugin import BastionRealmPlugin
from diegossh.proxy.realmplugins import CFRealmPlugin, DiegoRealmPlugin

diegoRealm = DiegoRealmPlugin()
cfRealm = CFRealmPlugin()
bastionRealm = BastionRealmPlugin()
