"""A replay's run directory and its manifest (``run.json``): what was replayed, "as of" what.

A run directory holds everything of one replay: the manifest, its own store (so the live
store is never touched), the private broker, per-item scans, the plan, the outputs and,
for ``--dispatch sink``, what would have been sent. The manifest pins the inputs: source,
window, feeds, the priority rules (version and checksum), the region packs (path and
checksum), the subscriptions snapshot, the assessment settings, the dispatch mode and the
Tocsin version. Re-running the same command on the same directory resumes it; a command
whose manifest differs (other rules, another window...) is refused with the differences.
"""

from __future__ import annotations

import hashlib
import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata, resources
from pathlib import Path
from typing import Any

from alerts.errors import RuleTableError
from alerts.priority import RuleTable, load_rules
from workers.settings import Settings

MANIFEST_FILE = "run.json"
MANIFEST_FORMAT = "tocsin-replay/1"
RULES_COPY = "rules.toml"  # the rule table's exact text, read by every worker of the run
STORE_FILE = "store.sqlite"
DISPATCH_MODES = ("none", "sink", "live")
SETTINGS_PINNED = ("sender", "languages", "alert_lifetime_h", "event_window_h",
                   "material_change_share", "cancel_below_level", "cap_feed_public")
"""The settings an assessment depends on: recorded in the manifest, used by every worker."""
_IDENTITY_IGNORED = frozenset({"run_id", "created_at", "subscriptions"})


class ReplayError(Exception):
    """Root of the replay's errors."""


class ReplayUsageError(ReplayError, ValueError):
    """A bad argument or a run directory that cannot be used (exit code 2)."""


class RunMismatchError(ReplayUsageError):
    """The run directory belongs to a replay with another manifest."""


class ReplayInputError(ReplayError, OSError):
    """An input (archive, catalog, feeds file, region pack) is missing or unreadable (exit 3)."""


@dataclass(frozen=True, slots=True)
class RulesChoice:
    """The priority rule table a replay uses: parsed, with where it came from."""

    table: RuleTable
    text: str
    sha256: str
    origin: str

    @property
    def version(self) -> str:
        """The table's own version string."""
        return self.table.version


def shipped_rule_versions() -> list[str]:
    """Versions of the rule tables shipped in ``alerts/rules`` (``priority-v<N>.toml``)."""
    names = [p.name for p in resources.files("alerts.rules").iterdir()]
    return sorted(n[len("priority-v"):-len(".toml")] for n in names
                  if n.startswith("priority-v") and n.endswith(".toml"))


def choose_rules(spec: str | None) -> RulesChoice:
    """The rule table named by ``--rules``: a shipped version (``1``, ``v1``) or a TOML path.

    Raises:
        ReplayUsageError: no such version or file, or the table is invalid (the message
            names the key).
    """
    spec = (spec or "").strip() or shipped_rule_versions()[0]
    path = Path(spec).expanduser()
    if spec.endswith(".toml") or path.is_file():
        if not path.is_file():
            raise ReplayUsageError(f"--rules {spec}: no such rules file")
        text, origin = path.read_text(encoding="utf-8"), str(path.resolve())
    else:
        version = spec.removeprefix("priority-").removeprefix("v")
        if version not in shipped_rule_versions():
            raise ReplayUsageError(f"--rules {spec}: no shipped rule table of that version "
                                   f"(shipped: {', '.join(shipped_rule_versions())}) and no "
                                   "such file")
        name = f"priority-v{version}.toml"
        text = resources.files("alerts.rules").joinpath(name).read_text("utf-8")
        origin = f"alerts/rules/{name}"
    try:
        table = load_rules(text)
    except RuleTableError as exc:
        raise ReplayUsageError(f"--rules {spec}: {exc}") from exc
    return RulesChoice(table, text, _sha256(text.encode("utf-8")), origin)


def parse_time(text: str, option: str) -> datetime:
    """An ISO 8601 date or time as an aware UTC datetime (naive means UTC).

    Raises:
        ReplayUsageError: not an ISO 8601 time; the message names the option.
    """
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise ReplayUsageError(f"{option} {text!r}: expected an ISO 8601 time such as "
                               "2024-05-14 or 2024-05-14T06:00:00Z") from exc
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def region_sha256(manifest: Path) -> str:
    """A checksum of a region pack: its manifest and every file it names (with sidecars).

    Raises:
        ReplayInputError: the manifest cannot be read.
    """
    try:
        text = manifest.read_bytes()
        raw = tomllib.loads(text.decode("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ReplayInputError(f"region pack {manifest}: cannot read it: {exc}") from exc
    digest = hashlib.sha256(text)
    files: set[Path] = set()
    for value in _strings(raw):
        candidate = (manifest.parent / value).resolve()
        if value and candidate.is_file():
            files |= {p for p in candidate.parent.glob(f"{candidate.stem}.*") if p.is_file()}
    for path in sorted(files):
        digest.update(f"\n{os.path.relpath(path, manifest.parent)}:{file_sha256(path)}".encode())
    return digest.hexdigest()


def _strings(raw: Any) -> list[str]:
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, Mapping):
        return [s for v in raw.values() for s in _strings(v)]
    if isinstance(raw, list):
        return [s for v in raw for s in _strings(v)]
    return []


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tocsin_version() -> str:
    """The installed Tocsin version (``unknown`` from a bare checkout)."""
    try:
        return metadata.version("tocsin")
    except metadata.PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True, slots=True)
class Manifest:
    """The manifest of one replay (``run.json``); see ``docs/replay.md`` for each field."""

    source: dict[str, str]
    window: dict[str, str]
    feeds: list[str]
    feeds_config: dict[str, str]
    rules: dict[str, str]
    regions: list[dict[str, str]]
    settings: dict[str, Any]
    dispatch: str
    tocsin_version: str
    subscriptions: dict[str, Any] = field(default_factory=dict)
    run_id: str = ""
    created_at: str = ""
    format: str = MANIFEST_FORMAT

    def to_json(self) -> str:
        """The manifest as pretty, key-sorted JSON."""
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        """Parse a manifest written by :meth:`to_json`."""
        raw = json.loads(text)
        return cls(**{k: raw[k] for k in cls.__dataclass_fields__ if k in raw})

    def identity(self) -> dict[str, Any]:
        """What must match for a command to resume this run (not its id or snapshot)."""
        return {k: v for k, v in asdict(self).items() if k not in _IDENTITY_IGNORED}

    @property
    def since(self) -> datetime:
        """Start of the window (inclusive)."""
        return datetime.fromisoformat(self.window["from"])

    @property
    def until(self) -> datetime:
        """End of the window (exclusive)."""
        return datetime.fromisoformat(self.window["to"])


def pinned_settings(settings: Settings) -> dict[str, Any]:
    """The assessment settings a replay records and its workers use."""
    values = settings.model_dump(include=set(SETTINGS_PINNED), mode="json")
    values["languages"] = list(values["languages"])
    return values


def run_settings(run_dir: Path, manifest: Manifest) -> Settings:
    """The settings of a run's workers: its own store and data folder, the pinned values."""
    return Settings(data_dir=run_dir / "data", database_url=run_store_url(run_dir),
                    broker_url="", feeds_config=Path(manifest.feeds_config["path"]),
                    **manifest.settings)


def run_store_url(run_dir: Path) -> str:
    """The SQLite URL of a run's own store."""
    return f"sqlite:///{(run_dir / STORE_FILE).resolve()}"


def read_manifest(run_dir: Path) -> Manifest | None:
    """The run's manifest, or None when the directory holds no replay yet.

    Raises:
        ReplayUsageError: ``run.json`` exists but is not a replay manifest.
    """
    path = run_dir / MANIFEST_FILE
    if not path.exists():
        return None
    try:
        manifest = Manifest.from_json(path.read_text(encoding="utf-8"))
    except (ValueError, TypeError, KeyError) as exc:
        raise ReplayUsageError(f"{path}: not a replay manifest ({exc})") from exc
    if manifest.format != MANIFEST_FORMAT:
        raise ReplayUsageError(f"{path}: format {manifest.format!r}, expected "
                               f"{MANIFEST_FORMAT!r}")
    return manifest


def check_resumable(existing: Manifest, wanted: Manifest, run_dir: Path) -> None:
    """Refuse to resume ``run_dir`` with a manifest that differs from the one it was made with.

    Raises:
        RunMismatchError: naming every field that differs.
    """
    old, new = existing.identity(), wanted.identity()
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if changed:
        detail = "; ".join(f"{k}: {_short(old.get(k))} -> {_short(new.get(k))}"
                           for k in changed)
        raise RunMismatchError(
            f"{run_dir} holds another replay (run {existing.run_id}); this command differs "
            f"in {detail}. Use a new --out folder, or the same arguments to resume it")


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


def write_manifest(run_dir: Path, manifest: Manifest, rules: RulesChoice) -> None:
    """Write the manifest and the rules text, each whole (temporary name, then rename)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(run_dir / RULES_COPY, rules.text.encode("utf-8"))
    write_atomic(run_dir / MANIFEST_FILE, manifest.to_json().encode("utf-8"))


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader sees the old file or the whole new one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def run_rules(run_dir: Path) -> RuleTable:
    """The rule table a run was started with (its copy in the run directory)."""
    return load_rules((run_dir / RULES_COPY).read_text(encoding="utf-8"))
