# -*- test-case-name: tests.test_cf_authenticator -*-
"""
A C{cf} login, start to end: the one-time code to UAA for a token, then the
token to Cloud Controller for the process guid.

The steps run in order and a failed step ends the login: a refused code
never reaches Cloud Controller. Each step carries its own deadline (the
clients' C{communicationTimeout}), so a hanging service cuts off only the
logins waiting on it. The log says which step failed, for which app
instance and, once UAA has answered, for which user; the code and the token
never appear in it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from twisted.internet.defer import CancelledError, Deferred

from diegossh.logtext import SafeLogger
from diegossh.proxy.cf.uaa import Token
from diegossh.proxy.cf.usernames import checkAppInstance
from diegossh.proxy.errors import LoginDenied

__all__ = ["NO_CODE", "AccessChecker", "CFAuthenticator", "CFLogin", "CodeExchanger"]

NO_CODE = "the password must be a one-time code from `cf ssh-code`"
INTERNAL = "the login could not be checked"
_MAX_CODE = 1024


class CodeExchanger(Protocol):
    """What the authenticator needs of UAA (L{diegossh.proxy.cf.uaa.UAAClient})."""

    def exchangeCode(self, code: str) -> Deferred[Token]: ...


class AccessChecker(Protocol):
    """
    What the authenticator needs of Cloud Controller
    (L{diegossh.proxy.cf.cloudcontroller.CloudControllerClient}).
    """

    def sshAccess(self, token: Token, appGuid: str, index: int) -> Deferred[str]: ...


@dataclass(frozen=True)
class CFLogin:
    """
    A granted C{cf} login: the LRP to look up in BBS (C{process_guid},
    C{index}) and who asked, for the audit log.
    """

    process_guid: str
    index: int
    app_guid: str
    user_name: str
    user_id: str


class CFAuthenticator:
    """
    Checks C{cf:APP-GUID/INDEX} logins against UAA and Cloud Controller.

    Parse the username with L{diegossh.proxy.cf.usernames.parseAppInstance}
    first; C{authenticate} checks the guid and index again, so nothing
    malformed is ever sent.
    """

    log = SafeLogger()

    def __init__(self, uaa: CodeExchanger, cc: AccessChecker) -> None:
        self._uaa = uaa
        self._cc = cc

    def authenticate(self, appGuid: str, index: int, code: str | bytes) -> Deferred[CFLogin]:
        """
        Fire with a L{CFLogin}, or fail with L{LoginDenied} whose reason may
        be shown to the user. Cancelling it drops the request under way.
        """
        return Deferred.fromCoroutine(self._authenticate(appGuid, index, code))

    async def _authenticate(self, appGuid: str, index: int, code: str | bytes) -> CFLogin:
        checkAppInstance(appGuid, index)
        where = {"app_guid": appGuid, "index": index}
        text = _codeText(code)
        if text is None:
            self.log.info("cf login to {app_guid}/{index} denied: no usable code", **where)
            raise LoginDenied(NO_CODE)

        try:
            token = await self._uaa.exchangeCode(text)
        except Exception as e:
            raise self._failed("UAA", e, where) from None

        who = {**where, "user_name": token.user_name, "user_id": token.user_id}
        try:
            processGuid = await self._cc.sshAccess(token, appGuid, index)
        except Exception as e:
            raise self._failed("Cloud Controller", e, who) from None

        self.log.info(
            "cf login: {user_name} ({user_id}) may ssh to {app_guid}/{index}"
            " (process {process_guid})",
            process_guid=processGuid,
            **who,
        )
        return CFLogin(processGuid, index, appGuid, token.user_name, token.user_id)

    def _failed(self, step: str, error: Exception, fields: dict[str, object]) -> Exception:
        """Log a failed step and say what to raise."""
        if isinstance(error, CancelledError):
            self.log.info("cf login to {app_guid}/{index} cancelled at {step}", step=step, **fields)
            return error
        if isinstance(error, LoginDenied):
            self.log.info(
                "cf login to {app_guid}/{index} by {user} denied at {step}: {reason}",
                step=step,
                reason=error.reason,
                **_known(fields),
            )
            return error
        # A bug, not a refusal. Its type alone is logged: a message or a
        # traceback with locals might hold the code or the token.
        self.log.error(
            "cf login to {app_guid}/{index} by {user}: {step} step raised {error_type}",
            step=step,
            error_type=type(error).__qualname__,
            **_known(fields),
        )
        return LoginDenied(INTERNAL)


def _known(fields: dict[str, object]) -> dict[str, object]:
    """The log fields, with the user named only once UAA has said who it is."""
    if "user_name" in fields:
        return {**fields, "user": f"{fields['user_name']} ({fields['user_id']})"}
    return {**fields, "user": "unknown"}


def _codeText(code: str | bytes) -> str | None:
    """The code as text, or None when it cannot be one (empty, huge, not UTF-8)."""
    if isinstance(code, bytes):
        try:
            code = code.decode("utf-8")
        except UnicodeDecodeError:
            return None
    if not code or len(code) > _MAX_CODE:
        return None
    return code
