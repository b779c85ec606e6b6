"""The app factory: one node's ASGI app, whose lifespan owns the node."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from ..auth import Authorizer
from ..config import NodeSettings
from ..node import VERSION, Node, open_node
from . import cluster, dashboard, documents, members, metrics, placement, streams
from .errors import install_error_handlers
from .forward import open_forwarder
from .routing import Forwarding, ServedBy

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
                forwarder = None
                if node.replicator is not None and settings.secret:
                    placement_config = settings.cluster
                    forwarder = await stack.enter_async_context(
                        open_forwarder(
                            node.node_id,
                            settings.secret,
                            timeout=placement_config.forward_timeout,
                            max_body=placement_config.limits.max_document_bytes * 4 + (1 << 20),
                            max_message=placement_config.clients.max_message_bytes + (1 << 20),
                        )
                    )
                app.state.forwarding = node_metrics.forwarding = Forwarding(forwarder)
                await stack.enter_async_context(metrics.open_node_metrics(node_metrics, node))
            except Exception as exc:
                if on_startup_error is not None:
                    on_startup_error(exc)
                raise
            app.state.node = node
            if on_ready is not None:
                on_ready(node)
            yield

    # /docs (Swagger UI) and /redoc load their scripts, style sheets and icon from
    # /docs/static, files shipped in the fastapi-offline package: no CDN, so they work offline.
    app = FastAPIOffline(
        docs_url="/docs",
        redoc_url="/redoc",
        static_url="/docs/static",
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
    app.add_middleware(ServedBy, node=settings.node_id)
    app.state.authorizer = Authorizer.from_settings(settings)
    app.include_router(documents.router)
    app.include_router(placement.router)
    app.include_router(cluster.router)
    app.include_router(members.router)
    app.include_router(streams.router)
    app.include_router(metrics.router)
    app.include_router(dashboard.router)
    return app
