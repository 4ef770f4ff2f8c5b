"""Worker names of `cloud ingest` and the retirement of broker sessions that a larger run left behind."""

from __future__ import annotations

import structlog
from psycopg_pool import AsyncConnectionPool

from .ingest import IngestError, IngestWorker
from .settings import CloudSettings

__all__ = ("retire_sessions", "worker_name")

log = structlog.get_logger("valuegate.cloud.ingest")


def worker_name(settings: CloudSettings, number: int) -> str:
    """Return the client id of worker ``number`` (from 1) of a `cloud ingest` process."""
    return f"{settings.client_id_prefix}-{number}"


async def retire_sessions(settings: CloudSettings, pool: AsyncConnectionPool, *, first: int, last: int = 64) -> int:
    """Drain and end the sessions of workers numbered ``first`` to ``last`` that an earlier, larger `cloud ingest` left.

    A broker keeps a stopped worker's session until it expires. Mosquitto
    goes on queuing part of the group's messages for it, and they are lost
    when it expires. So each such session is resumed without its
    subscription, its queue is stored like any other messages, and the
    session is ended. Stops at the first number without a session and
    returns how many were retired.
    """
    retired = 0
    for number in range(first, last + 1):
        worker = IngestWorker(settings, pool=pool, name=worker_name(settings, number), retire=True)
        try:
            await worker.start()
        except IngestError as exc:
            await worker.stop()
            log.warning("ingest_session_not_retired", worker=worker.name, reason=str(exc))
            break
        try:
            if not worker.session_present:
                break
            await worker.drained()
            retired += 1
            log.info("ingest_session_retired", worker=worker.name, processed=worker.processed)
        finally:
            await worker.stop(end_session=True)
    return retired
