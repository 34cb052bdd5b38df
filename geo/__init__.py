"""Core geospatial values and the hazard overlay: pure functions, values in, values out.

`geo` never opens files, reads the clock, or imports a worker, web or database library:
feeds hand it arrays on a :class:`~geo.grid.Grid`, and it hands back values.
"""
