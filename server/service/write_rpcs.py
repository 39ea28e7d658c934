"""UpsertItems, DeleteItems, RecordInteractions and Reload: protobuf <-> the live-write domain.

The servicer wraps each in `_rpc` (auth, readiness, errors, metrics); the work is done by
server/live (LiveWrites) and server/reload.py (BundleReloader).
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import TYPE_CHECKING

from protos import recommender_pb2 as pb
from server.service.validation import validate_delete, validate_interactions, validate_upsert
from export.errors import BundleError
from server.errors import WritesDisabled
from server.release_guard import ReleaseDirectory
from server.live.records import ItemWrite, event_with_defaults
from server.live.writer import WriteResult
from server.workers.announce import announce_ready, announce_reload, wait_for_every_worker

if TYPE_CHECKING:
    from server.live.service import LiveWrites
    from server.service.app import RecserveServer


def _live(server: "RecserveServer") -> "LiveWrites":
    if server.live is None:
        raise WritesDisabled("this server serves its bundle read-only (live.enabled = false): "
                             "live writes are refused")
    return server.live


def _response(server: "RecserveServer", result: WriteResult) -> pb.WriteResponse:
    server.update_index_metrics()
    return pb.WriteResponse(sequence=result.sequence, applied=result.applied, duplicate=result.duplicate)


async def upsert_items(server: "RecserveServer", request: pb.UpsertItemsRequest,
                       deadline: float | None) -> pb.WriteResponse:
    validate_upsert(request, server.limits, server.configs.live)
    items = [ItemWrite(i.item_id, i.title, i.text, dict(i.attributes)) for i in request.items]
    return _response(server, await _live(server).upsert(items, deadline, request.request_id))


async def delete_items(server: "RecserveServer", request: pb.DeleteItemsRequest) -> pb.WriteResponse:
    validate_delete(request, server.limits, server.configs.live)
    return _response(server, await _live(server).delete(list(request.item_ids), request.request_id))


async def record_interactions(server: "RecserveServer",
                              request: pb.RecordInteractionsRequest) -> pb.WriteResponse:
    validate_interactions(request, server.limits, server.configs.live)
    received = time.time()
    events = [event_with_defaults(e.user_id, e.item_id, e.event, e.weight, e.timestamp_ms, received)
              for e in request.events]
    return _response(server, await _live(server).record(events, request.request_id))


async def reload(server: "RecserveServer", request: pb.ReloadRequest,
                 deadline: float | None) -> pb.ReloadResponse:
    """Load a release named by the caller ('current', 'v3') from the release directory only;
    with --workers, answer once every worker serves it."""
    if server.live is None and not server.config.allow_reload_when_read_only:
        raise WritesDisabled("this server is read-only: Reload over the API is refused "
                             "(allow_reload_when_read_only enables it; SIGHUP always reloads)")
    releases = ReleaseDirectory(server.config.release_dir)
    release = releases.resolve(request.bundle_path)  # bundle_path carries a release name
    try:
        # Shielded: a caller that hangs up must not cancel a reload half way through.
        outcome = await asyncio.shield(server.reloader.reload(release.path))
    except BundleError as exc:  # the reloader's one error type; no server paths to callers
        raise BundleError(releases.scrub(str(exc), release)) from None
    server.bundle_path = os.path.join(releases.root, release.name)  # SIGHUP reloads the same name
    announce_ready(outcome.bundle_version)
    token = announce_reload(server.bundle_path)  # with --workers: the other workers load it too
    waited = time.monotonic() + server.config.workers_reload_timeout_s
    try:
        await wait_for_every_worker(token, outcome.bundle_version, min(waited, deadline or waited))
    except BundleError as exc:
        raise BundleError(releases.scrub(str(exc), release)) from None
    return pb.ReloadResponse(previous_version=outcome.previous_version,
                             bundle_version=outcome.bundle_version,
                             replayed_writes=outcome.replayed_writes)
