"""Adapters that read the outside world into core values.

Every reader returns a :class:`geo.hazard.HazardGrid` (or, for exposure layers, a
:class:`geo.region.RegionPack`) and raises a :class:`feeds.errors.FeedError` naming the
file and what was wrong. Only this package opens raster or vector files.
"""
