"""QueryForge: data pipelines that are checked, rehearsed in a sandbox and published atomically."""

__version__ = "0.1.0"
