"""Names and texts of OPC UA client failures, including what timed out when asyncua's exception has no message."""

from __future__ import annotations

from asyncua import ua
from asyncua.client.ua_client import UaClientState
from asyncua.observer import Observer

from .opcua_security import CertificateRejected

__all__ = ("ConnectSteps", "USER_REFUSED", "failure_status", "failure_text")

# Transport states in the order a connect reaches them. A timeout in a state belongs to the handshake step that follows it.
_HANDSHAKE = {
    UaClientState.CONNECTING: "TCP connect",
    UaClientState.SOCKET_OPEN: "Hello or OpenSecureChannel",
    UaClientState.CHANNEL_OPEN: "CreateSession or ActivateSession",
}
_ORDER = (UaClientState.CONNECTING, UaClientState.SOCKET_OPEN, UaClientState.CHANNEL_OPEN, UaClientState.CONNECTED)


class ConnectSteps(Observer):
    """Records how far one asyncua client got: the furthest transport state and the last service request that timed out.

    Install it as ``client.uaclient.observer`` before ``connect()``.
    asyncua (2.1) reports state changes for the handshake and times every
    service request sent in a session, but not Hello or OpenSecureChannel.
    """

    def __init__(self) -> None:
        self.reached: UaClientState | None = None
        self.failed_request = ""

    def on_state_change(self, state: UaClientState) -> None:
        if state in _ORDER and (self.reached is None or _ORDER.index(state) > _ORDER.index(self.reached)):
            self.reached = state

    def on_request(self, request_type: str, duration: float, error: BaseException | None) -> None:
        if isinstance(error, TimeoutError):
            self.failed_request = request_type.removesuffix("Request")

    def timed_out(self) -> str:
        """Name the request or handshake step that most likely timed out, or "" when neither is known."""
        if self.failed_request:
            return f"{self.failed_request} request"
        return _HANDSHAKE.get(self.reached, "")


USER_REFUSED = frozenset({"BadUserAccessDenied", "BadIdentityTokenRejected", "BadIdentityTokenInvalid", "BadUserSignatureInvalid"})
"""Statuses with which a server refuses the user rather than the connection: retrying soon only counts failed log-ins."""


def failure_status(exc: BaseException) -> str:
    """Return the OPC UA status name of a failure, or its exception class name where it has none."""
    if isinstance(exc, CertificateRejected):
        return "BadCertificateUntrusted"
    if isinstance(exc, ua.UaStatusCodeError):
        return ua.StatusCode(exc.code).name
    return type(exc).__name__


def failure_text(exc: BaseException, *, step: str, timeout_s: float, timed_out: str = "") -> str:
    """Return the exception's message, or for one without a message a description of what failed in ``step`` and when.

    ``timed_out`` names the request that timed out (``Read request``) when the caller knows it.
    """
    text = str(exc)
    if text:
        return text
    if isinstance(exc, TimeoutError):
        return f"{timed_out or 'a request'} timed out after {timeout_s:g} s (timeout_ms) while {step}"
    return f"{type(exc).__name__} without a message while {step}"
