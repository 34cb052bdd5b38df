"""`HazardGrid`: one hazard field as read from a feed, with everything needed to trust it.

Values are an xarray ``DataArray`` whose last two dimensions are ``("y", "x")`` on
``grid``; leading ``time`` or ``member`` dimensions may remain until the caller selects or
reduces them. No-data is ``NaN``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from types import MappingProxyType

import numpy as np
import xarray as xr

from geo.errors import EmptyHazardError, GridMismatchError
from geo.grid import Grid
from geo.raster import Raster
from geo.types import HazardKind, Nature


@dataclass(frozen=True, slots=True)
class HazardGrid:
    """A hazard field with provenance.

    Attributes:
        data: values, dims ``(..., "y", "x")``, float, ``NaN`` where there is no data.
        grid: georeferencing of the last two dimensions.
        kind: what is measured.
        units: units of ``data`` (``"m"``, ``"mm"``, ``"m s-1"``, ``"MMI"``, ``"g"``...).
        nature: observed or forecast.
        source: where it came from (file path or URL), for messages and provenance.
        checksum: ``sha256:<hex>`` of the source bytes, for idempotent ingest.
        variable: the variable or field name within the source.
        issued_at: when the producer issued it (timezone-aware), if known.
        valid_at: the time the 2-D field is valid for, if known.
        event_id: the producer's event id (ShakeMap event, storm name), if any.
        attrs: any further metadata worth keeping, as strings.
    """

    data: xr.DataArray
    grid: Grid
    kind: HazardKind
    units: str
    nature: Nature
    source: str
    checksum: str
    variable: str | None = None
    issued_at: datetime | None = None
    valid_at: datetime | None = None
    event_id: str | None = None
    attrs: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        dims = tuple(self.data.dims)
        if dims[-2:] != ("y", "x"):
            raise GridMismatchError(
                f"hazard from {self.source}: data dims must end with ('y', 'x'), got {dims}"
            )
        if tuple(self.data.shape[-2:]) != self.grid.shape:
            raise GridMismatchError(
                f"hazard from {self.source}: data shape {self.data.shape[-2:]} does not match "
                f"grid shape {self.grid.shape}"
            )
        object.__setattr__(self, "kind", HazardKind(self.kind))
        object.__setattr__(self, "nature", Nature(self.nature))
        object.__setattr__(self, "attrs", MappingProxyType(dict(self.attrs)))

    @property
    def extra_dims(self) -> tuple[str, ...]:
        """Dimensions other than ``y`` and ``x`` still present (``time``, ``member``)."""
        return tuple(str(d) for d in self.data.dims[:-2])

    def values_2d(self) -> np.ndarray:
        """The field as a 2-D float64 array (``NaN`` = no data); needs no extra dims left."""
        if self.extra_dims:
            raise GridMismatchError(
                f"hazard from {self.source} still has dimensions {self.extra_dims}; select a "
                "time or member, or reduce over them, first"
            )
        return np.asarray(self.data.values, dtype="float64")

    def to_raster(self) -> Raster:
        """The 2-D field as a masked :class:`Raster`; raises if every cell is no-data."""
        values = self.values_2d()
        masked = np.ma.masked_invalid(values)
        if masked.count() == 0:
            raise EmptyHazardError(f"hazard from {self.source} holds no valid value")
        return Raster(masked, self.grid, self.units, name=self.source)

    def with_data(self, data: xr.DataArray, **changes: object) -> HazardGrid:
        """A copy with new values (e.g. after selecting a time), other fields kept."""
        return replace(self, data=data, **changes)  # type: ignore[arg-type]
