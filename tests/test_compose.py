"""compose.yaml and the Dockerfile: the production stack names only what the project has.

No container runs here. The checks are the ones a typo would break on a production host:
every ``tocsin ...`` command line parses against the real CLI, every queue has a consumer,
one beat, pinned images, secrets without defaults, dependencies that exist.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from feeds.feed_config import load_feed_config
from workers.cli.main import app
from workers.names import QueueNames

try:
    import yaml
except ModuleNotFoundError:  # a project dependency: fail below, never skip
    yaml = None

REPO_ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO_ROOT / "compose.yaml"
DOCKERFILE = REPO_ROOT / "Dockerfile"

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?message}, ${NAME?message}, ${NAME:+alt}
_INTERPOLATION = re.compile(
    r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?+])?(?P<rest>[^}]*)\}")
_SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|AUTH|_KEY\b")
_DURATION = re.compile(r"^(?:(?P<m>\d+)m)?(?:(?P<s>\d+)s)?$")

runner = CliRunner()


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    if yaml is None:
        pytest.fail("PyYAML is not installed, so compose.yaml cannot be checked: add "
                    "'pyyaml' to the dev dependencies in pyproject.toml")
    document = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(document, dict), "compose.yaml is not a mapping"
    return document


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = compose.get("services")
    assert isinstance(found, dict) and found, "compose.yaml has no services"
    return found


def _argv(command: str | list[str] | None) -> list[str]:
    if command is None:
        return []
    return shlex.split(command) if isinstance(command, str) else [str(a) for a in command]


def _tocsin_commands(services: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    """Each service's ``tocsin`` arguments (after the program name), by service."""
    commands = {}
    for name, service in services.items():
        argv = _argv(service.get("command"))
        if argv and argv[0] == "tocsin":
            commands[name] = argv[1:]
    return commands


def _is_group(command: Any) -> bool:
    return hasattr(command, "commands")


def _resolve(args: list[str]) -> tuple[list[str], Any, list[str]]:
    """Split ``args`` into the command path, the command object it names and its arguments.

    Typer vendors its own click, so commands are duck-typed: a group has ``commands``.
    """
    command: Any = typer.main.get_command(app)
    path: list[str] = []
    rest = list(args)
    while _is_group(command) and rest and rest[0] in command.commands:
        path.append(rest[0])
        command = command.commands[rest.pop(0)]
    return path, command, rest


def _problems_with_command(args: list[str]) -> list[str]:
    """Why ``tocsin ARGS`` would not run as written (empty: it would)."""
    path, command, rest = _resolve(args)
    shown = "tocsin " + " ".join(args)
    if _is_group(command):
        wanted = rest[0] if rest else "(nothing)"
        return [f"`{shown}`: no command {wanted!r} under `{' '.join(['tocsin', *path])}`"]
    result = runner.invoke(app, [*path, "--help"])
    if result.exit_code != 0:
        return [f"`tocsin {' '.join(path)} --help` exited {result.exit_code}: {result.output}"]
    problems = []
    for token in rest:
        option = token.split("=", 1)[0]
        if option.startswith("--") and not re.search(
                rf"(?<![\w-]){re.escape(option)}(?![\w-])", result.output):
            problems.append(f"`{shown}`: {option} is not in `tocsin {' '.join(path)} --help`")
    if not problems:
        try:  # the values too: types, choices, required arguments
            command.make_context(f"tocsin {' '.join(path)}", list(rest))
        except Exception as exc:  # typer's vendored click raises its own UsageError
            message = exc.format_message() if hasattr(exc, "format_message") else repr(exc)
            problems.append(f"`{shown}` does not parse: {message}")
    return problems


def _worker_params(args: list[str]) -> dict[str, Any] | None:
    """The parsed options of a ``tocsin worker`` command line (None: not a worker)."""
    path, command, rest = _resolve(args)
    if path != ["worker"]:
        return None
    try:
        return dict(command.make_context("tocsin worker", list(rest)).params)
    except Exception as exc:  # typer's vendored click raises its own UsageError
        raise AssertionError(f"`tocsin {' '.join(args)}` does not parse: {exc}") from exc


def _queues_of(args: list[str]) -> set[str] | None:
    """The queues a ``tocsin worker`` command consumes (None: not a worker)."""
    params = _worker_params(args)
    if params is None:
        return None
    return {q.strip() for q in params["queues"].split(",") if q.strip()}


def _runs_beat(args: list[str]) -> bool:
    """Whether ``tocsin ARGS`` runs a beat (``beat``, ``run``, ``worker --beat``)."""
    if _resolve(args)[0] in (["beat"], ["run"]):
        return True
    params = _worker_params(args)
    return bool(params and params["beat"])


def _seconds(duration: str) -> int:
    match = _DURATION.match(str(duration))
    assert match and duration, f"unexpected duration {duration!r}"
    return int(match["m"] or 0) * 60 + int(match["s"] or 0)


def _tocsin_image(services: dict[str, dict[str, Any]]) -> str:
    built = {s["image"] for s in services.values() if "build" in s}
    assert len(built) == 1, f"expected one image built from the project, got {built}"
    return built.pop()


def test_compose_has_no_obsolete_version_key(compose: dict[str, Any]) -> None:
    assert "version" not in compose, "the Compose specification has no `version:` key"


def test_every_tocsin_command_names_a_real_command_with_real_options(
        services: dict[str, dict[str, Any]]) -> None:
    commands = _tocsin_commands(services)
    assert commands, "no service runs a tocsin command"
    problems = [f"{name}: {p}" for name, args in commands.items()
                for p in _problems_with_command(args)]
    assert not problems, "\n".join(problems)


def test_every_queue_has_a_worker_and_every_worker_queue_exists(
        services: dict[str, dict[str, Any]]) -> None:
    consumed: dict[str, set[str]] = {}
    for name, args in _tocsin_commands(services).items():
        queues = _queues_of(args)
        if queues is not None:
            consumed[name] = queues
    everything = set().union(*consumed.values()) if consumed else set()
    assert not set(QueueNames.ALL) - everything, \
        f"queues no worker consumes: {sorted(set(QueueNames.ALL) - everything)}"
    assert not everything - set(QueueNames.ALL), \
        f"workers consume queues that do not exist: {sorted(everything - set(QueueNames.ALL))}"


def test_red_alerts_have_a_worker_consuming_nothing_else(
        services: dict[str, dict[str, Any]]) -> None:
    queues = [_queues_of(args) for args in _tocsin_commands(services).values()]
    assert {QueueNames.DISPATCH_RED} in queues, \
        "no worker consumes dispatch.red alone: red alerts could wait behind other work"


def test_exactly_one_beat_runs(services: dict[str, dict[str, Any]]) -> None:
    beats = [name for name, args in _tocsin_commands(services).items() if _runs_beat(args)]
    assert len(beats) == 1, f"expected exactly one beat, got {beats}"
    beat = services[beats[0]]
    assert beat.get("deploy", {}).get("replicas", 1) == 1 and beat.get("scale", 1) == 1


def test_workers_get_time_to_finish_their_acks_late_tasks(
        services: dict[str, dict[str, Any]]) -> None:
    short = [name for name, args in _tocsin_commands(services).items()
             if _queues_of(args) is not None
             and _seconds(services[name].get("stop_grace_period", "10s")) < 60]
    assert not short, f"workers stopped in under 60 s (tasks are acks_late): {short}"


def test_pulled_images_are_pinned_to_a_version(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        image = service.get("image")
        assert image, f"{name} has no image"
        reference, _, tag = image.rpartition(":")
        assert reference and "/" not in tag, f"{name}: image {image!r} has no tag"
        assert tag != "latest" and re.match(r"v?\d", tag), \
            f"{name}: image {image!r} is not pinned to a version"


def test_the_project_image_is_tagged_with_the_project_version(
        services: dict[str, dict[str, Any]]) -> None:
    version = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
    image = _tocsin_image(services)
    assert image.endswith(f":{version}"), \
        f"compose.yaml builds {image} but pyproject.toml is at version {version}"
    # The image is built (never pulled: a registry could hold another image of that name).
    for name, service in services.items():
        if service["image"] == image:
            assert service.get("pull_policy") in ("build", "never"), \
                f"{name} may pull {image} from a registry"


def test_secrets_are_required_and_have_no_default_anywhere() -> None:
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    uses = [(m["name"], m["op"] or "") for m in _INTERPOLATION.finditer(text)]
    required = {name for name, op in uses if op in (":?", "?")}
    for name, op in uses:
        if _SECRET_NAME.search(name):
            assert op in (":?", "?"), f"secret ${{{name}}} must be required (${{{name}:?...}})"
        if name in required:
            assert op not in (":-", "-", ":+", "+"), f"${{{name}}} is required elsewhere but " \
                "given a default here"
    assert {"TOCSIN_DB_PASSWORD", "TOCSIN_WEBHOOK_SECRET"} <= required


def test_no_secret_is_written_in_the_file(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        environment = service.get("environment") or {}
        if isinstance(environment, list):
            environment = dict(e.split("=", 1) for e in environment)
        for key, value in environment.items():
            text = str(value)
            if _SECRET_NAME.search(key):
                assert _INTERPOLATION.fullmatch(text), f"{name}: {key} is written in the file"
            password = re.match(r"^[a-z+]+://[^:/@]*:(?P<password>[^@]*)@", text)
            if password:
                assert _INTERPOLATION.fullmatch(password["password"]), \
                    f"{name}: {key} has a password written in the file"


def test_depends_on_names_services_that_can_meet_the_condition(
        services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        depends = service.get("depends_on") or {}
        if isinstance(depends, list):
            depends = {target: {"condition": "service_started"} for target in depends}
        for target, spec in depends.items():
            assert target in services, f"{name} depends on {target!r}, which is not a service"
            assert target != name, f"{name} depends on itself"
            condition = spec.get("condition", "service_started")
            if condition == "service_healthy":
                assert "healthcheck" in services[target], \
                    f"{name} waits for {target} to be healthy, but it has no healthcheck"
            if condition == "service_completed_successfully":
                assert services[target].get("restart", "no") == "no", \
                    f"{name} waits for {target} to finish, but it restarts"


def test_volumes_are_declared_and_mounted_files_exist(compose: dict[str, Any],
                                                      services: dict[str, dict[str, Any]]) -> None:
    declared = set(compose.get("volumes") or {})
    for name, service in services.items():
        for volume in service.get("volumes") or ():
            source = str(volume).split(":", 1)[0]
            if source.startswith((".", "/")):
                assert (REPO_ROOT / source).exists(), f"{name} mounts {source}, which is missing"
            else:
                assert source in declared, f"{name} mounts volume {source!r}, not declared"


def test_the_mounted_feeds_file_is_valid_for_the_feed_loader(
        services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        target = (service.get("environment") or {}).get("TOCSIN_FEEDS_CONFIG")
        if not target:
            continue
        mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in service.get("volumes", ())}
        assert target in mounts, f"{name}: TOCSIN_FEEDS_CONFIG={target} is not mounted"
        config = load_feed_config(REPO_ROOT / mounts[target])
        assert config.feeds, f"{mounts[target]} names no feed"


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
            for line in lines if line and not line.startswith("#")]


def test_the_dockerfile_runs_an_existing_command_as_a_user_who_is_not_root() -> None:
    instructions = _dockerfile_instructions()
    entrypoint = [json.loads(a) for i, a in instructions if i == "ENTRYPOINT"]
    cmd = [json.loads(a) for i, a in instructions if i == "CMD"]
    assert cmd, "the Dockerfile has no CMD in exec form"
    argv = (entrypoint[-1] if entrypoint else []) + cmd[-1]
    assert argv[0] == "tocsin", f"the image runs {argv}, not a tocsin command"
    path, command, rest = _resolve(argv[1:])
    assert runner.invoke(app, [*path, *rest]).exit_code == 0, f"`{' '.join(argv)}` fails"
    users = [a for i, a in instructions if i == "USER"]
    assert users and users[-1] not in ("root", "0"), "the image runs as root"


def test_the_dockerfile_bases_are_pinned_to_a_version() -> None:
    for instruction, argument in _dockerfile_instructions():
        if instruction == "FROM":
            image = argument.split()[0]
            _, _, tag = image.rpartition(":")
            assert tag and tag != "latest" and re.match(r"\d", tag), \
                f"FROM {image} is not pinned to a version"


def test_the_api_service_publishes_its_port_and_checks_health_on_a_real_route(
        services: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    from api.app import create_app
    from api.settings import ApiSettings

    api = services["api"]
    args = _argv(api["command"])
    port = args[args.index("--port") + 1]
    assert any(str(p).endswith(f":{port}:{port}") for p in api["ports"])
    probe = " ".join(api["healthcheck"]["test"])
    path = re.search(rf"127\.0\.0\.1:{port}(/[^'\"]*)", probe)
    assert path is not None, f"the api healthcheck does not probe port {port}: {probe}"
    app = create_app(ApiSettings(data_dir=tmp_path), migrate=False)
    assert "get" in app.openapi()["paths"][path.group(1)]
