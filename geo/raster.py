"""`Raster`: a 2-D masked array on a :class:`~geo.grid.Grid`, with its units.

Modelled on rio-tiler's ``ImageData`` without file I/O: feeds build it, the core reads it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from geo.errors import GridMismatchError
from geo.grid import Grid


@dataclass(frozen=True, slots=True)
class Raster:
    """One band of values on a grid; masked cells are no-data.

    Attributes:
        data: 2-D masked array, shape equal to ``grid.shape``.
        grid: where the cells are.
        units: what one value means (``"people"``, ``"people/km2"``, ``"min/m"``, ``"m"``).
        name: a short name for messages (the file or layer it came from).
    """

    data: np.ma.MaskedArray
    grid: Grid
    units: str = ""
    name: str = ""

    def __post_init__(self) -> None:
        data = self.data
        if not isinstance(data, np.ma.MaskedArray):
            data = np.ma.masked_invalid(np.asarray(data))
        if data.ndim != 2 or data.shape != self.grid.shape:
            raise GridMismatchError(
                f"raster {self.name or '(unnamed)'} has shape {data.shape}, "
                f"but its grid has shape {self.grid.shape}"
            )
        object.__setattr__(self, "data", data)

    def filled(self, fill_value: float = 0.0, dtype: np.dtype | type | None = None) -> np.ndarray:
        """The values as a plain array with masked cells set to ``fill_value``."""
        out = np.ma.filled(self.data, fill_value)
        return out.astype(dtype, copy=False) if dtype is not None else out

    @property
    def valid_count(self) -> int:
        """Number of cells that are not no-data."""
        return int(self.data.count())
