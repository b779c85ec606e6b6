"""``meridian node leave`` and ``meridian node remove``: membership changes an operator makes.

Both send a request signed with the cluster secret (read from the environment variable that
``regions.toml`` names, as every node does) to a running node:

- ``leave --url URL``: that node hands every copy to the documents' next holders, is then
  removed from the member list, and stops. The command waits until it is removed (or
  ``--timeout``) and exits 0 then; 1 when it did not finish in time (it goes on: repeat the
  command to wait again), 2 for a usage or connection problem.
- ``remove NODE --url URL``: a dead (or unwanted) node is removed for good; its documents are
  taken by their next holders from the other copies and hints. Exit 0 once removed.

Both are safe to repeat.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import httpx

from ..cluster.joining import SIGNATURE_HEADER, signed_target
from ..config import ClusterConfig
from ..http.forward import sign_forwarded

__all__ = ["leave", "remove"]

#: The signer's name in a membership change an operator makes.
OPERATOR = "operator"


def _post(cluster: ClusterConfig, url: str, path: str, timeout: float) -> httpx.Response:
    secret = os.environ.get(cluster.secret_env)
    if not secret:
        raise ValueError(f"set the cluster secret in the environment variable {cluster.secret_env}")
    target = signed_target(path, b"")
    signature = sign_forwarded(secret.encode(), OPERATOR, "POST", target, time.time())
    with httpx.Client(timeout=timeout, trust_env=False) as client:
        return client.post(f"{url.rstrip('/')}{target}", headers={SIGNATURE_HEADER: signature})


def _change(cluster: ClusterConfig, url: str, path: str, out: Any) -> dict[str, Any] | None:
    """Sends a signed membership change; the member entry it answers, or None after printing
    why it failed."""
    try:
        answer = _post(cluster, url, path, 10.0)
    except (ValueError, httpx.HTTPError) as exc:
        print(f"meridian: error: {exc}", file=out)
        return None
    if answer.status_code != 200:
        print(f"meridian: error: {url}: {_error(answer)}", file=out)
        return None
    entry: dict[str, Any] = answer.json()
    return entry


def _error(answer: httpx.Response) -> str:
    try:
        error = answer.json()["error"]
        return f"{error['code']}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        return f"answered {answer.status_code}"


def _members(url: str, timeout: float) -> dict[str, dict[str, Any]]:
    """The member list as the node at ``url`` sees it; raises httpx.HTTPError, ValueError or
    KeyError when it does not answer with one."""
    with httpx.Client(timeout=timeout, trust_env=False) as client:
        answer = client.get(f"{url.rstrip('/')}/v1/cluster/members")
    answer.raise_for_status()
    return {str(entry["node"]): dict(entry) for entry in answer.json()["members"]}


def _state(urls: list[str], node: str) -> str | None:
    """``node``'s state as the first of ``urls`` that answers sees it (None: none answered)."""
    for url in urls:
        try:
            entry = _members(url, 5.0).get(node)
        except (httpx.HTTPError, ValueError, KeyError):
            continue
        return str(entry["state"]) if entry is not None else None
    return None


def leave(cluster: ClusterConfig, url: str, *, timeout: float, out: Any) -> int:
    """Asks the node at ``url`` to leave and waits until it is removed; the exit status."""
    entry = _change(cluster, url, "/v1/cluster/leave", out)
    if entry is None:
        return 2
    node = entry["node"]
    print(f"{node} is {entry['state']}: handing its documents to their next holders", file=out)
    # The node stops once it is removed: then the others say so.
    try:
        others = [
            f"http://{member['address']}"
            for name, member in sorted(_members(url, 5.0).items())
            if name != node and member["state"] != "removed"
        ]
    except (httpx.HTTPError, ValueError, KeyError):
        others = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _state([url, *others], node) == "removed":
            print(f"{node} left the cluster", file=out)
            return 0
        time.sleep(0.5)
    print(f"{node} is still handing off after {timeout:g} s; repeat to wait again", file=out)
    return 1


def remove(cluster: ClusterConfig, url: str, node: str, *, out: Any) -> int:
    """Asks the node at ``url`` to remove member ``node``; the exit status."""
    entry = _change(cluster, url, f"/v1/cluster/members/{node}/remove", out)
    if entry is None:
        return 2
    print(json.dumps(entry, sort_keys=True), file=out)
    print(f"{node} removed (incarnation {entry['incarnation']})", file=out)
    return 0
