"""Options shared by the commands that read a hazard feed (``overlay``, ``assess``)."""

from __future__ import annotations

import typer

from feeds.base import ReadOptions
from geo.types import HazardKind

REDUCTIONS = ("max", "mean", "min", "exceedance")


def read_options(
    *,
    variable: str | None = None,
    time: str | None = None,
    member: str | None = None,
    threshold: float | None = None,
    kind: str | None = None,
    nodata: float | None = None,
    units: str | None = None,
) -> ReadOptions:
    """Build the reader's options from command-line values, or fail with exit code 2.

    ``member`` is an index or a member value, or one of max, mean, min, exceedance (a
    reduction over the members; exceedance needs ``threshold``).
    """
    if kind is not None and kind not in {k.value for k in HazardKind}:
        raise typer.BadParameter(
            f"--kind must be one of {', '.join(k.value for k in HazardKind)}; got {kind!r}")
    selected: object = None
    reduce = None
    if member is not None and member.lower() in REDUCTIONS:
        reduce = member.lower()
    elif member is not None:
        selected = int(member) if member.lstrip("-").isdigit() else member
    try:
        return ReadOptions(variable=variable, time=time, member=selected,  # type: ignore[arg-type]
                           reduce=reduce, threshold=threshold, kind=kind,  # type: ignore[arg-type]
                           nodata=nodata, units=units)
    except ValueError as exc:
        raise typer.BadParameter(f"--member/--threshold: {exc}") from exc
