"""Errors and warnings raised by the geo core.

Every error derives from :class:`GeoError`, and also from the builtin a caller would expect
(``ValueError`` for bad arguments), so callers may catch either.
"""


class GeoError(Exception):
    """Root of every error raised by the geo core."""


class CRSMismatchError(GeoError, ValueError):
    """Two layers that must share a CRS do not, or a layer has no CRS at all."""


class GridMismatchError(GeoError, ValueError):
    """Two grids that must be identical (shape, transform, CRS) are not."""


class NoOverlapError(GeoError, ValueError):
    """A hazard grid and an exposure layer do not overlap at all."""


class EmptyHazardError(GeoError, ValueError):
    """A hazard grid holds no valid value (all no-data) where it matters."""


class InvalidBreaksError(GeoError, ValueError):
    """Severity class breaks are not finite and strictly increasing."""


class LayerKindError(GeoError, ValueError):
    """A layer is not what its manifest says (density given as counts, or vice versa)."""


class GeometryRepairedWarning(UserWarning):
    """Invalid geometries were repaired (``make_valid``) before use."""


class EmptyFootprintWarning(UserWarning):
    """A hazard produced no cell in any severity class."""


class InvalidOptionError(GeoError, ValueError):
    """An option has a value outside its closed vocabulary (e.g. an unknown resampling)."""


class MissingZoneRateError(GeoError, ValueError):
    """A per-zone rate table lacks zones that hold people; the message lists them."""


class CacheFormatError(GeoError, ValueError):
    """Cached bytes of a core value (e.g. an access baseline) are unreadable or outdated."""


class TargetsIgnoredWarning(UserWarning):
    """Some travel-time targets were ignored: outside the friction grid or on impassable cells."""
