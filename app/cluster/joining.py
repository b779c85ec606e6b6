"""Joining a running cluster: a new node asks a seed to add it to the member list.

The node makes its ``joining`` entry (:func:`~app.cluster.membership.join`: its id, region,
address and incarnation), and sends it to a seed with ``POST /v1/cluster/join``, signed with
the cluster secret (the ``X-Meridian-Signature`` header: an HMAC of the method, the path and
the body's SHA-256, which the path carries). The seed checks the entry against its list
(:func:`~app.cluster.membership.check_join`: known region, no removed or newer incarnation of
that id, no live member at that address), merges it and answers with the whole list; gossip
over the peer links then tells every other node within a round trip or two. A seed that
refuses says why (409), and the node stops with that reason; a seed that cannot be reached
is skipped for the next one, round after round, until :data:`JOIN_TIMEOUT`.

Errors::

    MeridianError
     +-- JoinError        no seed accepted the join (the message says what each answered)
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time

import httpx

from ..config import NodeSettings
from ..errors import MeridianError
from .members import MemberList
from .membership import Membership, MembershipError, join, next_incarnation

__all__ = ["JOIN_PATH", "JOIN_TIMEOUT", "SIGNATURE_HEADER", "JoinError", "join_cluster"]

log = logging.getLogger("meridian.members")

#: The route a seed accepts joins on, and the header that proves the cluster secret.
JOIN_PATH = "/v1/cluster/join"
SIGNATURE_HEADER = "x-meridian-signature"
#: Seconds a joining node keeps trying its seeds before it gives up.
JOIN_TIMEOUT = 60.0
#: Seconds one seed may take to answer.
_SEED_TIMEOUT = 5.0


class JoinError(MeridianError):
    """No seed accepted this node's join; the message says why."""


def signed_target(path: str, body: bytes) -> str:
    """The request target a signed admin request is sent to: the path, and the body's
    SHA-256 (so the signature covers the body too)."""
    return f"{path}?sha256={hashlib.sha256(body).hexdigest()}"


async def join_cluster(settings: NodeSettings, members: MemberList) -> None:
    """Joins the cluster through ``settings.seeds()``: merges the member list the first seed
    that accepts answers with. Raises :class:`JoinError` when a seed refuses the join (its
    reason) or none answers within :data:`JOIN_TIMEOUT`."""
    from ..http.forward import sign_forwarded  # the HTTP face imports the node: import late

    assert settings.secret, "open_node checks the secret before joining"
    entry = join(
        settings.node_id,
        settings.region,
        settings.address,
        next_incarnation(members.membership, settings.node_id),
        members.clock.now(),
        settings.weight,
    )
    body = json.dumps(entry.to_json(), separators=(",", ":"), sort_keys=True).encode()
    target = signed_target(JOIN_PATH, body)
    seeds = [seed for seed in settings.seeds() if seed != settings.address]
    if not seeds:
        raise JoinError("no seed to join through: pass --join HOST:PORT of a running node")
    deadline = time.monotonic() + JOIN_TIMEOUT
    errors: dict[str, str] = {}
    delay = 0.2
    async with httpx.AsyncClient(timeout=_SEED_TIMEOUT, trust_env=False) as client:
        while True:
            for seed in seeds:
                signature = sign_forwarded(
                    settings.secret, settings.node_id, "POST", target, time.time()
                )
                try:
                    answer = await client.post(
                        f"http://{seed}{target}",
                        content=body,
                        headers={SIGNATURE_HEADER: signature, "content-type": "application/json"},
                    )
                except httpx.HTTPError as exc:
                    errors[seed] = f"cannot reach it: {exc or type(exc).__name__}"
                    continue
                if answer.status_code == 200:
                    try:
                        listed = Membership.from_json(answer.json())
                    except (ValueError, MembershipError) as exc:
                        errors[seed] = f"answered an unreadable member list: {exc}"
                        continue
                    members.merge(listed, source=seed)
                    log.info(
                        "joined the cluster through %s as %s (incarnation %d, %d members)",
                        seed,
                        settings.node_id,
                        entry.incarnation,
                        len(listed.live()),
                    )
                    return
                reason = _reason(answer)
                if answer.status_code in (401, 403, 409, 422):
                    raise JoinError(f"{seed} refused this node's join: {reason}")
                errors[seed] = f"answered {answer.status_code}: {reason}"
            if time.monotonic() + delay > deadline:
                tried = "; ".join(f"{seed}: {why}" for seed, why in errors.items())
                raise JoinError(f"no seed accepted the join in {JOIN_TIMEOUT:g} s ({tried})")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


def _reason(answer: httpx.Response) -> str:
    try:
        error = answer.json()["error"]
        return f"{error['code']}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        return answer.text[:200]
