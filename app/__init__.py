"""The Meridian node: HTTP API, configuration, CLI (and, later, replication and placement).

Public face::

    settings = NodeSettings(
        node_id="eu-west-1", region="eu-west", host="127.0.0.1", port=7201,
        data_dir=Path("data/eu-west-1"), cluster=load_config(Path("regions.toml")),
    )
    app = create_app(settings)        # an ASGI app; its lifespan opens and closes the node
"""

from .api import create_app
from .config import ClusterConfig, ConfigError, NodeSettings, Region, load_config, parse_config
from .node import VERSION, Node, open_node

__all__ = [
    "VERSION",
    "ClusterConfig",
    "ConfigError",
    "Node",
    "NodeSettings",
    "Region",
    "create_app",
    "load_config",
    "open_node",
    "parse_config",
]
