"""Coordinate transformers made once per CRS pair and thread, not once per call.

Building a :class:`pyproj.Transformer` costs about 50 ms; exposure for 10,000 subscribers
built three each. pyproj transformers are not safe to share between threads, so the cache
is per thread.
"""

from __future__ import annotations

import threading

from pyproj import CRS, Transformer

_LOCAL = threading.local()


def transformer(src: CRS | str, dst: CRS | str) -> Transformer:
    """The ``always_xy`` transformer from ``src`` to ``dst`` (cached for this thread)."""
    cache: dict[tuple[str, str], Transformer] = getattr(_LOCAL, "cache", None) or {}
    _LOCAL.cache = cache
    key = (CRS.from_user_input(src).to_wkt(), CRS.from_user_input(dst).to_wkt())
    found = cache.get(key)
    if found is None:
        if len(cache) > 64:
            cache.clear()
        found = cache[key] = Transformer.from_crs(src, dst, always_xy=True)
    return found
