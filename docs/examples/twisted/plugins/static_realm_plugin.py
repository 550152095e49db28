"""
Dropin for the example C{static} realm (see ../../static_realm.py).
"""

from static_realm import StaticRealmPlugin

staticRealm = StaticRealmPlugin()
