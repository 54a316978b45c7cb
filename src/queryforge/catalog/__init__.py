"""The catalog: what every connection holds (tables, columns, types, keys, row estimates), cached."""

from .cache import DEFAULT_TTL_S, CatalogCache, CatalogEntry

__all__ = ["DEFAULT_TTL_S", "CatalogCache", "CatalogEntry"]
