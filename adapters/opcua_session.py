"""OPC UA session set-up: security and user identity of a client, and the batched data-change subscription."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from asyncua import Client, ua
from asyncua.common.subscription import Subscription
from asyncua.crypto import security_policies
from cryptography import x509

from .devices import OpcUaDeviceConfig
from .opcua_nodes import OperationLimits, ResolvedTag, call_in_batches
from .opcua_security import CertificateRejected, check_server_certificate, ensure_own_certificate

__all__ = ("BatchSubscription", "OpcUaSetupError", "configure_client", "read_password", "subscribe")

_POLICIES: dict[str, type[security_policies.SecurityPolicy]] = {
    "Basic256Sha256": security_policies.SecurityPolicyBasic256Sha256,
    "Aes128Sha256RsaOaep": security_policies.SecurityPolicyAes128Sha256RsaOaep,
}
_MODES = {"Sign": ua.MessageSecurityMode.Sign, "SignAndEncrypt": ua.MessageSecurityMode.SignAndEncrypt}


class OpcUaSetupError(ValueError):
    """A setting that cannot work until the configuration or environment is fixed (for example a missing password variable)."""


def read_password(config: OpcUaDeviceConfig) -> str | None:
    """Return the OPC UA password from the environment variable the device names, or None without username auth."""
    auth = config.auth
    if auth.method != "username":
        return None
    password = os.environ.get(auth.password_env or "")
    if password is None:
        raise OpcUaSetupError(
            f"device {config.id}: environment variable {auth.password_env} with the OPC UA password is not set; "
            "set it in the service environment"
        )
    return password


async def configure_client(client: Client, config: OpcUaDeviceConfig, password: str | None) -> None:
    """Set the application identity, the secure channel (after checking the server certificate) and the user identity."""
    security = config.security
    client.application_uri = security.application_uri
    client.name = client.description = "valuegate gateway"
    if security.policy == "None":
        # Checked as for a secure policy, so that a server without such an endpoint is named the same way.
        endpoints = await client.connect_and_get_server_endpoints()
        if not any(e.SecurityPolicyUri == security_policies.SecurityPolicyNone.URI and e.SecurityMode == ua.MessageSecurityMode.None_ for e in endpoints):
            raise _no_endpoint(config, endpoints)
    else:
        own = ensure_own_certificate(Path(security.pki_dir), security.application_uri)
        pinned = Path(security.server_certificate) if security.server_certificate else None
        trusted = Path(security.trusted_dir) if security.trusted_dir else None
        server_der = await _server_certificate(client, config, pinned, trusted)
        await client.set_security(
            _POLICIES[security.policy], str(own.cert_path), str(own.key_path), server_certificate=server_der,
            mode=_MODES[security.mode],
        )

        async def validate(certificate: x509.Certificate, _description: ua.ApplicationDescription) -> None:
            # CreateSession returns the certificate again; it must still be the checked one.
            check_server_certificate(certificate, pinned=pinned, trusted_dir=trusted)

        client.certificate_validator = validate
    auth = config.auth
    if auth.method == "username":
        client.set_user(auth.username or "")
        client.set_password(password or "")
    elif auth.method == "certificate":
        await client.load_client_certificate(auth.certificate or "")
        await client.load_private_key(Path(auth.private_key or ""))


async def _server_certificate(client: Client, config: OpcUaDeviceConfig, pinned: Path | None, trusted: Path | None) -> bytes:
    """Fetch the endpoint's certificate over an unsecured GetEndpoints call and check it before opening a secure channel."""
    security = config.security
    endpoints = await client.connect_and_get_server_endpoints()
    policy_uri = _POLICIES[security.policy].URI
    mode = _MODES[security.mode]
    for endpoint in endpoints:
        if endpoint.SecurityPolicyUri == policy_uri and endpoint.SecurityMode == mode:
            der = _first_certificate(endpoint.ServerCertificate)
            certificate = x509.load_der_x509_certificate(der)
            try:
                check_server_certificate(certificate, pinned=pinned, trusted_dir=trusted)
            except CertificateRejected as exc:
                raise _kept_for_review(exc, der, Path(security.pki_dir), pinned, trusted) from exc
            return endpoint.ServerCertificate
    raise _no_endpoint(config, endpoints)


def _no_endpoint(config: OpcUaDeviceConfig, endpoints: Sequence[ua.EndpointDescription]) -> OpcUaSetupError:
    """Return the error for a server without an endpoint of the configured policy and mode, naming those it offers."""
    offered = sorted({f"{e.SecurityPolicyUri.rsplit('#', 1)[-1]}/{e.SecurityMode.name.removesuffix('_')}" for e in endpoints})
    return OpcUaSetupError(
        f"device {config.id}: the server offers no endpoint with {config.security.policy}/{config.security.mode}; "
        f"it offers {', '.join(offered)}"
    )


def _kept_for_review(exc: CertificateRejected, der: bytes, pki_dir: Path, pinned: Path | None, trusted: Path | None) -> CertificateRejected:
    """Save a rejected server certificate as ``<pki_dir>/rejected/<thumbprint>.der`` and return the error with where it is and what to do.

    Reading the certificate off the PLC's panel or web page is often hard. The copy the server sent is the same file, once its
    thumbprint has been compared with the one the PLC shows.
    """
    folder = pki_dir / "rejected"
    saved = folder / f"{exc.thumbprint}.der"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        saved.write_bytes(der)
    except OSError as error:
        return CertificateRejected(f"{exc}; its copy could not be saved in {folder} ({error.strerror})", thumbprint=exc.thumbprint)
    target = trusted if trusted is not None else pinned
    return CertificateRejected(
        f"{exc}. The server's certificate was saved as {saved}: if the PLC shows the same SHA-256 thumbprint, copy that file to {target}",
        thumbprint=exc.thumbprint,
    )


def _first_certificate(der_chain: bytes) -> bytes:
    """Return the first certificate of a DER chain (a server may send its certificate followed by its issuers)."""
    if len(der_chain) < 4 or der_chain[0] != 0x30:
        return der_chain
    length_byte = der_chain[1]
    if length_byte < 0x80:
        return der_chain[: 2 + length_byte]
    size = length_byte & 0x7F
    length = int.from_bytes(der_chain[2 : 2 + size], "big")
    return der_chain[: 2 + size + length]


class BatchSubscription(Subscription):
    """A subscription that hands each publish response's data changes over as one batch.

    asyncua's own dispatch schedules a task per changed value. Converting
    the notification message in one pass keeps the server's batch
    boundaries and costs far less per value. ``on_data`` gets the monitored
    item notifications of one message, ``on_status`` a subscription status
    change (such as BadTimeout), both only while ``is_current()`` is true,
    so that late messages of a discarded session are dropped.
    """

    def __init__(self, session: Any, params: ua.CreateSubscriptionParameters, *,
                 on_data: Callable[[Sequence[ua.MonitoredItemNotification]], None],
                 on_status: Callable[[str], None], is_current: Callable[[], bool]) -> None:
        super().__init__(session, params, handler=self)
        self._on_data = on_data
        self._on_status = on_status
        self._is_current = is_current
        self.keepalive_period_s = 0.0
        """Longest time the server may go without a publish response: revised interval x revised keep-alive count."""

    async def publish_callback(self, publish_result: ua.PublishResult) -> None:
        self.last_publish_at = time.monotonic()
        data = publish_result.NotificationMessage.NotificationData
        if not data or not self._is_current():
            return
        for notification in data:
            if isinstance(notification, ua.DataChangeNotification):
                self._on_data(notification.MonitoredItems)
            elif isinstance(notification, ua.StatusChangeNotification):
                self._on_status(f"subscription status {notification.Status.name}")


def _monitored_item_request(position: int, item: ResolvedTag, default_sampling_ms: int) -> ua.MonitoredItemCreateRequest:
    # The status-value trigger reports a change of status alone, such as Good to Bad with the same value.
    data_filter = ua.DataChangeFilter()
    data_filter.Trigger = ua.DataChangeTrigger.StatusValue
    parameters = ua.MonitoringParameters()
    parameters.ClientHandle = position
    parameters.SamplingInterval = item.tag.sampling_ms if item.tag.sampling_ms is not None else default_sampling_ms
    parameters.QueueSize = item.tag.queue_size
    parameters.DiscardOldest = True
    parameters.Filter = data_filter
    read_value = ua.ReadValueId()
    read_value.NodeId = item.node_id
    read_value.AttributeId = ua.AttributeIds.Value
    request = ua.MonitoredItemCreateRequest()
    request.ItemToMonitor = read_value
    request.MonitoringMode = ua.MonitoringMode.Reporting
    request.RequestedParameters = parameters
    return request


async def subscribe(
    client: Client,
    config: OpcUaDeviceConfig,
    resolved: Sequence[ResolvedTag],
    limits: OperationLimits,
    keepalive_s: float,
    **callbacks: Any,
) -> tuple[BatchSubscription, int, dict[str, str]]:
    """Create the subscription and one monitored item per resolved tag, in calls of at most MaxMonitoredItemsPerCall.

    Returns the subscription, the number of monitored items created and the
    tags the server refused, by name, with the status code it gave.
    ``callbacks`` are passed on to :class:`BatchSubscription`.
    """
    keepalive_ms = min(keepalive_s * 1000, 10_000)
    params = ua.CreateSubscriptionParameters()
    params.RequestedPublishingInterval = config.publishing_interval_ms
    params.RequestedMaxKeepAliveCount = max(1, int(keepalive_ms / config.publishing_interval_ms))
    params.RequestedLifetimeCount = params.RequestedMaxKeepAliveCount * 10
    params.MaxNotificationsPerPublish = 0
    params.PublishingEnabled = True
    params.Priority = 0
    subscription = BatchSubscription(client.uaclient.session, params, **callbacks)
    revised = await subscription.init()
    subscription.keepalive_period_s = revised.RevisedPublishingInterval * revised.RevisedMaxKeepAliveCount / 1000
    subscription.last_publish_at = time.monotonic()

    requests = [
        (position, _monitored_item_request(position, item, config.sampling_ms))
        for position, item in enumerate(resolved)
        if item.node_id is not None
    ]
    created = 0
    refused: dict[str, str] = {}
    async def create(chunk: Sequence[tuple[int, Any]]) -> Sequence[Any]:
        return await subscription.create_monitored_items([request for _, request in chunk])

    async for chunk, results in call_in_batches(requests, limits.max_monitored_items_per_call, create):
        for (position, _), result in zip(chunk, results, strict=True):
            if isinstance(result, ua.StatusCode):
                refused[resolved[position].tag.name] = result.name
            else:
                created += 1
    return subscription, created, refused
