# -*- test-case-name: tests.test_cf_usernames -*-
"""
The C{cf} realm's principal, C{APP-GUID/INDEX}: the part after C{cf:}.

It is parsed strictly and anchored (upstream matches unanchored, so junk
around a valid principal used to pass), and a principal that is not exactly
a canonical UUID, a slash and an int32 index is denied here, before UAA or
Cloud Controller is asked anything: the app guid is later put in a URL path,
so nothing but hex digits and dashes may reach it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from diegossh.proxy.errors import LoginDenied

__all__ = ["INT32_MAX", "AppInstance", "checkAppInstance", "parseAppInstance"]

INT32_MAX = 2**31 - 1

_HEX = "[0-9a-fA-F]"
_GUID = re.compile(f"{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}")
# ASCII digits only (\d would take any Unicode digit); ten at most, so int()
# never sees an absurd string.
_INDEX = re.compile("[0-9]{1,10}")

MALFORMED = "invalid username: expected cf:APP-GUID/INDEX"


@dataclass(frozen=True)
class AppInstance:
    """One instance of a Cloud Foundry app: what a C{cf:} username names."""

    app_guid: str
    index: int


def parseAppInstance(principal: str) -> AppInstance:
    """
    Parse C{APP-GUID/INDEX} (without the C{cf:} prefix).

    @raise LoginDenied: the principal is malformed or the index does not fit
        in an int32.
    """
    guid, slash, index = principal.partition("/")
    if not slash or not _INDEX.fullmatch(index):
        raise LoginDenied(MALFORMED)
    return checkAppInstance(guid, int(index))


def checkAppInstance(appGuid: str, index: int) -> AppInstance:
    """
    Check an app guid and index that came from elsewhere than
    L{parseAppInstance}, by the same rules.

    @raise LoginDenied: the guid is not a canonical UUID, or the index is
        outside 0..2**31-1.
    """
    if not isinstance(appGuid, str) or not _GUID.fullmatch(appGuid):
        raise LoginDenied(MALFORMED)
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index <= INT32_MAX:
        raise LoginDenied(MALFORMED)
    return AppInstance(appGuid, index)
