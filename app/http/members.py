"""The member list over HTTP: ``GET /v1/cluster/members``, and the changes an operator (or a
joining node) makes — ``POST /v1/cluster/join``, ``POST /v1/cluster/leave``,
``POST /v1/cluster/members/{node}/remove``.

A change of membership needs the cluster secret, not a client token: the request carries
``X-Meridian-Signature`` (an HMAC with the cluster secret of the method and the target,
whose ``sha256`` query parameter is the body's digest, :mod:`app.cluster.joining`), made by
``meridian serve --join`` and ``meridian node leave|remove``. A change that cannot be made
says why (409) and changes nothing; each is safe to repeat.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from typing import Any

from fastapi import APIRouter, Request

from ..cluster.joining import SIGNATURE_HEADER
from ..cluster.members import MemberList
from ..cluster.membership import MemberEntry, MembershipError, leave, remove
from ..errors import ApiError
from ..node import Node
from .bodies import read_body
from .cluster import authorize_any, member_views
from .forward import ForgedForward, request_target, verify_forwarded

__all__ = ["router"]

log = logging.getLogger("meridian.members")

router = APIRouter()

#: A join body is one member entry.
MAX_JOIN_BODY = 4096


def _members(node: Node) -> MemberList:
    if node.members is None:
        raise ApiError(
            409, "not_a_cluster", f"{node.node_id} is a standalone node: it has no member list"
        )
    return node.members


async def _signed(request: Request, node: Node) -> tuple[str, bytes]:
    """(the signer's id, the body) of a request signed with the cluster secret; raises
    ApiError 403 for a missing, forged or stale signature or a body that is not the signed
    one."""
    value = request.headers.get(SIGNATURE_HEADER)
    if value is None:
        raise ApiError(
            403, "signature_required", "membership changes are signed with the cluster secret"
        )
    target = request_target(request.scope)
    try:
        signer = verify_forwarded(node.settings.secret, value, request.method, target, time.time())
    except ForgedForward as exc:
        log.warning("a membership change with a bad signature refused: %s", exc)
        raise ApiError(403, "bad_signature", str(exc)) from None
    body = await read_body(request, MAX_JOIN_BODY)
    digest = request.query_params.get("sha256", "")
    if not hmac.compare_digest(digest, hashlib.sha256(body).hexdigest()):
        raise ApiError(403, "bad_signature", "the body is not the one the signature covers")
    return signer, body


@router.get("/v1/cluster/members", tags=["cluster"])
async def list_members(request: Request) -> dict[str, Any]:
    """Every member this node knows (removed ones included): id, region, address, state,
    incarnation, weight, the stamp of its last change, and its liveness from here."""
    authorize_any(request)
    node: Node = request.app.state.node
    members = node.members
    return {
        "node": node.node_id,
        "digest": members.membership.digest() if members is not None else None,
        "members": member_views(node),
    }


@router.post("/v1/cluster/join", tags=["cluster"])
async def join_member(request: Request) -> dict[str, Any]:
    """A node joins through this one (signed with the cluster secret): its ``joining`` entry
    is checked, merged and gossiped; the answer is the whole member list. 409
    ``join_refused`` with the reason (unknown region, an address a live member holds, a
    removed incarnation); the refusal is logged and changes nothing."""
    node: Node = request.app.state.node
    signer, body = await _signed(request, node)
    members = _members(node)
    try:
        entry = MemberEntry.from_json(json.loads(body))
    except (ValueError, RecursionError, MembershipError) as exc:
        raise ApiError(422, "invalid_member", str(exc)[:500]) from None
    if entry.node != signer:
        raise ApiError(403, "bad_signature", f"{signer} signed a join of {entry.node}")
    reason = members.why_refused(entry)
    if reason is not None:
        log.warning("refused the join of %s: %s", entry.node, reason)
        raise ApiError(409, "join_refused", reason)
    members.clock.observe(entry.stamp)
    members.apply(entry)
    return members.membership.to_json()


@router.post("/v1/cluster/leave", tags=["cluster"])
async def leave_cluster(request: Request) -> dict[str, Any]:
    """This node leaves (signed with the cluster secret): it hands every copy to the
    document's next holders, is then removed, and stops. Safe to repeat; the answer is its
    entry (``leaving``, or ``removed`` once done)."""
    node: Node = request.app.state.node
    await _signed(request, node)
    members = _members(node)
    me = members.me
    if me is None:
        raise ApiError(409, "not_a_member", f"{node.node_id} is not a member")
    if me.state == "joining":
        raise ApiError(409, "still_joining", f"{node.node_id} is still joining; retry later")
    if me.state == "active":
        log.info("leaving the cluster: handing every copy to its next holders")
        members.apply(leave(me, members.clock.now()))
    entry = members.me
    assert entry is not None
    return entry.to_json()


@router.post("/v1/cluster/members/{member}/remove", tags=["cluster"])
async def remove_member(member: str, request: Request) -> dict[str, Any]:
    """Removes a member for good (signed with the cluster secret) — a dead node: its
    documents are taken by their next holders from the other copies and hints. Safe to
    repeat. 404 for a node that is not a member, 409 for this node itself (it leaves)."""
    node: Node = request.app.state.node
    await _signed(request, node)
    members = _members(node)
    entry = members.get(member)
    if entry is None:
        raise ApiError(404, "unknown_member", f"{member[:140]!r} is not a member")
    if member == node.node_id:
        raise ApiError(
            409, "remove_self", "a node does not remove itself: ask it to leave, or ask another"
        )
    if entry.live:
        log.info("removing member %s (%s)", member, entry.state)
        members.apply(remove(entry, members.clock.now()))
    removed = members.get(member)
    assert removed is not None
    return removed.to_json()
