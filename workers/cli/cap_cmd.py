"""``tocsin cap``: validate CAP 1.2 messages and show their areas as GeoJSON.

Reading the files is wiring; the checks are the core's (:func:`alerts.cap_parse.validate_cap`
and :func:`alerts.cap_parse.parse_cap`), the same ones every rendered message passes.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from shapely.geometry import mapping

from alerts.cap import format_cap_datetime
from alerts.cap_geometry import area_geometry
from alerts.cap_parse import parse_cap, validate_cap
from alerts.errors import CapError
from alerts.model import AlertEvent

EXIT_INVALID = 1
"""``validate``: at least one file has a problem (one line each on stdout)."""
EXIT_INPUT_ERROR = 3
"""``geojson``: the file cannot be read as a valid CAP 1.2 message (as ``tocsin`` uses 3)."""

cap_app = typer.Typer(
    help="CAP 1.2 messages: validate them (schema and rules) and show their areas.",
    no_args_is_help=True,
)


class RuleProfile(StrEnum):
    """Rule levels of ``tocsin cap validate``."""

    CORE = "core"
    TOCSIN = "tocsin"
    IPAWS = "ipaws"


def _read(path: Path) -> bytes | str:
    """The file's bytes, or why it cannot be read."""
    try:
        return path.read_bytes()
    except OSError as exc:
        return f"cannot read the file: {exc.strerror or exc}"


@cap_app.command("validate")
def validate(
    files: Annotated[list[Path], typer.Argument(help="CAP 1.2 XML files to check.")],
    profile: Annotated[RuleProfile, typer.Option(
        help="Rules besides the schema: 'core' (CAP 1.2 itself), 'tocsin' (core plus "
             "expires in every info, one info per language, resource digests: what Tocsin "
             "emits) or 'ipaws' (core plus the US IPAWS profile v1.0 errors).",
    )] = RuleProfile.CORE,
) -> None:
    """Check CAP 1.2 files against the official schema and the rules it cannot express.

    Prints one line per problem, 'FILE: problem', and exits 0 when every file is valid,
    1 otherwise. DTDs, entities, CAP 1.1 and files over 2 MB are refused.
    """
    n_problems = 0
    for path in files:
        data = _read(path)
        problems = [data] if isinstance(data, str) else validate_cap(
            data, profile=profile.value)
        for problem in problems:
            typer.echo(f"{path}: {problem}")
        n_problems += len(problems)
    typer.echo(f"{len(files)} file(s) checked, {n_problems} problem(s)", err=True)
    if n_problems:
        raise typer.Exit(EXIT_INVALID)


def _feature_properties(event: AlertEvent, info_index: int) -> dict[str, Any]:
    info = event.infos[info_index]
    return {
        "identifier": event.identifier,
        "sender": event.sender,
        "sent": format_cap_datetime(event.sent),
        "msgType": event.msg_type.value,
        "info": info_index + 1,
        "language": info.language,
        "event": info.event,
        "headline": info.headline,
        "severity": info.severity.value,
        "urgency": info.urgency.value,
        "certainty": info.certainty.value,
        "expires": None if info.expires is None else format_cap_datetime(info.expires),
    }


def areas_geojson(event: AlertEvent) -> dict[str, Any]:
    """The areas of a CAP message as a GeoJSON FeatureCollection (``[lon, lat]``).

    One feature per ``area`` of each ``info``; circles become geodesic polygons (a
    zero radius a point), geocodes are listed in the properties (no geometry is known for
    them here: a feature with only geocodes has a null geometry).

    Args:
        event: a parsed CAP message.

    Returns:
        A GeoJSON-ready dict.
    """
    features = []
    for i, info in enumerate(event.infos):
        for area in info.areas:
            geometry, _ = area_geometry(area)
            properties = _feature_properties(event, i) | {
                "areaDesc": area.description,
                "geocodes": [{"valueName": n, "value": v} for n, v in area.geocodes],
                "circles": [{"lat": lat, "lon": lon, "radius_km": r}
                            for (lat, lon), r in area.circles],
            }
            features.append({
                "type": "Feature",
                "geometry": None if geometry.is_empty else mapping(geometry),
                "properties": properties,
            })
    return {"type": "FeatureCollection", "features": features}


@cap_app.command("geojson")
def geojson(
    file: Annotated[Path, typer.Argument(help="A CAP 1.2 XML file.")],
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Write the GeoJSON here instead of to standard output.")] = None,
) -> None:
    """Print the areas of a CAP 1.2 message as a GeoJSON FeatureCollection ([lon, lat]).

    The message is validated first (schema and core rules); an invalid or unreadable file
    exits 3 with the reason.
    """
    data = _read(file)
    try:
        if isinstance(data, str):
            raise CapError(data)
        event = parse_cap(data)
    except CapError as exc:
        typer.echo(f"{file}: {exc}", err=True)
        raise typer.Exit(EXIT_INPUT_ERROR) from None
    text = json.dumps(areas_geojson(event), ensure_ascii=False, indent=1)
    if out is None:
        typer.echo(text)
    else:
        out.write_text(text + "\n", encoding="utf-8")
