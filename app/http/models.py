"""Response models of the HTTP API, for the OpenAPI page at ``/docs`` (handlers return plain
dicts; these only describe them)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from crdt import FORMAT_VERSION

from ..node import VERSION

__all__ = [
    "DeleteResponse",
    "DocumentList",
    "DocumentSummary",
    "DocumentView",
    "ErrorDetail",
    "ErrorResponse",
    "Health",
    "Placement",
    "WriteResponse",
]


class ErrorDetail(BaseModel):
    code: str = Field(examples=["invalid_update"])
    message: str = Field(examples=["not a valid Yjs v1 update: truncated integer at byte 3"])


class ErrorResponse(BaseModel):
    error: ErrorDetail


class Health(BaseModel):
    node: str = Field(examples=["eu-west-1"])
    region: str = Field(examples=["eu-west"])
    version: str = Field(examples=[VERSION])
    status: str = Field(examples=["ok"])
    storage_format: int = Field(examples=[FORMAT_VERSION])
    cluster: str = Field(examples=["meridian-local"])
    uptime_seconds: float


class WriteResponse(BaseModel):
    id: str = Field(examples=["notes"])
    state_vector: str = Field(
        description="The document's state vector after the write, base64", examples=["AcW8tIEFBQ=="]
    )
    changed: bool = Field(description="False when the write brought nothing new (a duplicate)")
    created: bool = Field(description="True when the write created the document (or re-created it)")
    incarnation: int = Field(
        description="Which life of the id the document is in (see docs/design.md)"
    )
    durability: str = Field(
        examples=["local"],
        description="The durability level reached: the requested one (status 200), or the "
        "strongest one reached before the timeout (status 202)",
    )
    durable_on: list[str] = Field(
        examples=[["us-east-1", "eu-west-1"]],
        description="The nodes known to have committed the write when the answer was sent",
    )


class Placement(BaseModel):
    id: str | None = Field(default=None, examples=["notes"])
    policy: str = Field(
        examples=["default"],
        description="default (home plus the nearest regions, up to placement.replicas), "
        "regions (an explicit list) or count (home plus the nearest, up to replicas)",
    )
    regions: list[str] = Field(
        examples=[["eu-west", "us-east"]], description="The regions that hold the document"
    )
    replicas: int | None = Field(default=None, description="The count of a count policy")
    pinned: bool = Field(
        default=False, description="Its content is never stored outside these regions"
    )
    home: str = Field(examples=["eu-west"], description="The region where it was first written")
    holders: list[str] = Field(
        examples=[["eu-west-1", "us-east-2"]], description="The nodes that hold it"
    )
    followers: list[str] = Field(
        default_factory=list, description="Nodes holding a copy gained by readers"
    )
    deleted_incarnation: int = Field(
        default=0,
        description="The highest incarnation known to be deleted (0: none); a client's "
        "write never goes to an incarnation at or below it",
    )


class DocumentView(BaseModel):
    id: str = Field(examples=["notes"])
    content: dict[str, Any] = Field(
        examples=[{"settings": {"theme": "dark"}, "body": "Hello", "items": [1, {"a": 2}]}]
    )
    state_vector: str = Field(examples=["AcW8tIEFBQ=="])
    incarnation: int
    placement: Placement
    digest: str | None = Field(default=None, description="With ?digest=true only")


class DocumentSummary(BaseModel):
    id: str
    incarnation: int


class DocumentList(BaseModel):
    documents: list[DocumentSummary]
    next_cursor: str | None = Field(
        description="Pass as cursor= for the next page; null at the end"
    )


class Replica(BaseModel):
    node: str = Field(examples=["us-east-1"])
    region: str = Field(examples=["us-east"])
    link: str = Field(
        examples=["up"], description="This node's link to it: self, up, connecting, down, refused"
    )
    state: Literal["in_sync", "sending", "catching_up", "unreachable"] = Field(
        description="Whether it has every change this node has (see GET /v1/docs/{id}/replicas)"
    )
    pending: int = Field(description="This document's changes queued or in flight to it")


class ReplicaList(BaseModel):
    id: str
    incarnation: int
    regions: list[str] = Field(examples=[["eu-west", "us-east"]])
    replicas: list[Replica]


class DeleteResponse(BaseModel):
    id: str
    deleted: bool
    incarnation: int
