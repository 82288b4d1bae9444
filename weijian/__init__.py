"""weijian's shared package: the wire contract, the site registry, configuration and the CLI."""

__version__ = "0.1.0"
