"""The app factory: one node's ASGI app, whose lifespan owns the node."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

from fastapi import FastAPI

from ..auth import Authorizer
from ..config import NodeSettings
from ..node import VERSION, Node, open_node
from . import cluster, dashboard, documents, metrics, streams
from .errors import install_error_handlers

__all__ = ["create_app"]


def create_app(
    settings: NodeSettings,
    *,
    on_ready: Callable[[Node], None] | None = None,
    on_startup_error: Callable[[BaseException], None] | None = None,
) -> FastAPI:
    """The ASGI app of one node. Its lifespan opens the node (:func:`app.node.open_node`)
    and closes it; ``on_ready(node)`` is called once the node serves,
    ``on_startup_error(exc)`` when it could not open (the CLI prints it as one line)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            try:
                node = await stack.enter_async_context(open_node(settings))
                await stack.enter_async_context(metrics.open_node_metrics(node_metrics, node))
            except Exception as exc:
                if on_startup_error is not None:
                    on_startup_error(exc)
                raise
            app.state.node = node
            if on_ready is not None:
                on_ready(node)
            yield

    app = FastAPI(
        title="Meridian",
        version=VERSION,
        summary="A geo-distributed document store built on CRDTs",
        description=(
            "Documents are Yjs documents. Binary bodies are Yjs v1 updates; state vectors in "
            "JSON and query strings are base64. Errors are "
            '`{"error": {"code": ..., "message": ...}}`.'
        ),
        lifespan=lifespan,
    )
    # The node's metrics (its own registry): requests by route, 4xx answers by code.
    node_metrics = metrics.Metrics()
    app.state.metrics = node_metrics
    install_error_handlers(app, on_rejected=node_metrics.rejected)
    app.add_middleware(metrics.HttpMetrics, metrics=node_metrics)
    app.state.authorizer = Authorizer.from_settings(settings)
    app.include_router(documents.router)
    app.include_router(cluster.router)
    app.include_router(streams.router)
    app.include_router(metrics.router)
    app.include_router(dashboard.router)
    return app
