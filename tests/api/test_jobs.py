"""Analysts' overlay jobs over HTTP: submit, follow, download; on a 10 x 10 region pack.

The pack ``tiny``: 1 km cells in EPSG:3035 from (4,000,000 E, 3,000,000 N); zone A (West)
is columns 0-4 with 10 people a cell, zone B (East) columns 5-9 with 1 person a cell. The
hazard, on the same grid: 1.0 in columns 0-2 (class 1 with breaks 0.5,1.5), 2.0 in rows
0-3 of columns 3-6 (class 2), 0 elsewhere. By hand:

- A: class 1 = 10 rows x 3 columns x 10 = 300; class 2 = 4 x 2 x 10 = 80; below = 12 x 10.
- B: class 1 = 0; class 2 = 4 x 2 x 1 = 8; below = 42 x 1.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from tocsin_testing.api import NOW, ApiWorld
from tocsin_testing.tiny_pack import build_pack, tif_bytes

from api.errors import ApiError
from api.uploads import hazard_file_name
from store import feeds_repo, jobs_repo
from store.api_models import OverlayJobRow
from store.db import session_scope
from workers.analysis_job import RESULT_FILES, redrive_jobs, run_analysis_job


def _hazard() -> np.ndarray:
    values = np.zeros((10, 10), dtype="float32")
    values[:, :3] = 1.0
    values[:4, 3:7] = 2.0
    return values


@dataclass
class Jobs:
    """The API world with the ``tiny`` pack installed and the messages it sent."""

    world: ApiWorld
    sent: list[str]

    def submit(self, headers: dict[str, str], *, content: bytes | None = None,
               filename: str = "flood.tif", **fields: object):  # noqa: ANN201 - a Response
        data = {"region": "tiny", "breaks": "0.5,1.5", **{k: str(v) for k, v in fields.items()}}
        files = {"hazard": (filename, content, "application/octet-stream")} \
            if content is not None else None
        return self.world.client.post("/v1/jobs", data=data, files=files, headers=headers)

    def run(self, job_id: str) -> jobs_repo.OverlayJobRecord:
        run_analysis_job(self.world.sessions, job_id, now=lambda: NOW)
        with session_scope(self.world.sessions) as session:
            return jobs_repo.get_job(session, job_id)

    def rows(self) -> int:
        with session_scope(self.world.sessions) as session:
            return session.query(OverlayJobRow).count()


@pytest.fixture
def jobs(world: ApiWorld) -> Jobs:
    build_pack(world.data_dir / "regions" / "tiny")
    sent: list[str] = []
    world.client.app.state.enqueue_overlay_job = sent.append  # type: ignore[attr-defined]
    return Jobs(world, sent)


def _field(answer) -> str:  # noqa: ANN001
    return answer.json()["errors"][0]["field"]


def test_an_uploaded_geotiff_runs_to_done_with_the_hand_computed_exposure(jobs: Jobs) -> None:
    answer = jobs.submit(jobs.world.north, content=tif_bytes(_hazard()))
    assert answer.status_code == 202, answer.text
    job = answer.json()
    assert answer.headers["Location"] == f"/v1/jobs/{job['job_id']}" == job["url"]
    assert job["status"] == "queued" and job["progress"] == 0 and job["results"] == {}
    assert job["hazard"] == "flood.tif" and job["options"]["breaks"] == [0.5, 1.5]
    assert "results_dir" not in job["options"] and "region_manifest" not in job["options"]
    assert jobs.sent == [job["job_id"]]
    assert jobs.run(job["job_id"]).status == "done"
    done = jobs.world.client.get(job["url"], headers=jobs.world.north).json()
    assert done["status"] == "done" and done["progress"] == 1.0 and done["step"] == "done"
    assert done["attempts"] == 1 and done["error"] is None
    assert sorted(done["results"]) == sorted(RESULT_FILES)
    table = jobs.world.client.get(done["results"]["exposure.csv"], headers=jobs.world.north)
    people = {(r["zone_id"], int(r["class"])): float(r["population"])
              for r in csv.DictReader(io.StringIO(table.text))}
    assert people == {("A", 0): 120.0, ("A", 1): 300.0, ("A", 2): 80.0,
                      ("B", 0): 42.0, ("B", 1): 0.0, ("B", 2): 8.0}


def test_each_result_downloads_with_its_media_type(jobs: Jobs) -> None:
    job_id = jobs.submit(jobs.world.north, content=tif_bytes(_hazard())).json()["job_id"]
    jobs.run(job_id)
    signatures = {"exposure.csv": b"zone_id,", "access.csv": b"zone_id,",
                  "footprint.gpkg": b"SQLite format 3\x00", "map.png": b"\x89PNG",
                  "report.html": b"<!"}
    for name, media in RESULT_FILES.items():
        got = jobs.world.client.get(f"/v1/jobs/{job_id}/results/{name}", headers=jobs.world.north)
        assert got.status_code == 200, (name, got.text)
        assert got.headers["content-type"] == media
        assert got.headers["x-content-type-options"] == "nosniff"
        assert got.content.lstrip()[:len(signatures[name])].lower() == \
            signatures[name].lower(), name


def test_progress_is_written_step_by_step_while_the_overlay_runs(jobs: Jobs) -> None:
    job_id = jobs.submit(jobs.world.north, content=tif_bytes(_hazard())).json()["job_id"]
    seen: list[tuple[float, str | None]] = []
    import workers.overlay_job as pipeline

    real = pipeline.run_overlay_job

    def watching(job, options, *, progress):  # noqa: ANN001, ANN202
        def step(name: str) -> None:
            progress(name)
            with session_scope(jobs.world.sessions) as session:
                row = jobs_repo.get_job(session, job_id)
            seen.append((row.progress, row.step))
        return real(job, options, progress=step)

    pipeline.run_overlay_job = watching  # type: ignore[assignment]
    try:
        jobs.run(job_id)
    finally:
        pipeline.run_overlay_job = real  # type: ignore[assignment]
    fractions = [p for p, _ in seen]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] < 1.0
    assert [s for _, s in seen][:3] == ["read hazard", "load region", "overlay"]
    assert jobs.world.client.get(f"/v1/jobs/{job_id}",
                                 headers=jobs.world.north).json()["progress"] == 1.0


def _zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("flood.tif", b"II*\x00")
    return buffer.getvalue()


@pytest.mark.parametrize(("content", "filename"), [
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "flood.tif"),
    (b"depth\n1.5\n", "flood.tif"),
    (_zip_bytes(), "flood.tif"),
    (b"<?xml version='1.0'?><kml><Document/></kml>", "grid.xml"),
    (b"<?xml version='1.0'?><!DOCTYPE lol [<!ENTITY lol 'lol'>]><shakemap_grid>&lol;"
     b"</shakemap_grid>", "grid.xml"),
], ids=["png", "text", "zip", "other-xml", "xml-with-entities"])
def test_a_file_that_is_no_hazard_raster_is_refused_with_415_naming_hazard(
        jobs: Jobs, content: bytes, filename: str) -> None:
    answer = jobs.submit(jobs.world.north, content=content, filename=filename)
    assert answer.status_code == 415, answer.text
    assert _field(answer) == "hazard"
    assert jobs.rows() == 0 and jobs.sent == []
    assert not any((jobs.world.data_dir / "jobs").glob("*/*/*"))


@pytest.mark.parametrize(("head", "name"), [
    (b"II*\x00", "hazard.tif"), (b"MM\x00*", "hazard.tif"), (b"II+\x00", "hazard.tif"),
    (b"CDF\x01", "hazard.nc"), (b"CDF\x02", "hazard.nc"), (b"\x89HDF\r\n\x1a\n", "hazard.nc"),
    (b"GRIB", "hazard.grib2"), (b"\x01\r\r\n123\r\r\nHTXA50 KWBC 011200\r\r\nGRIB", "hazard.grib2"),
    (gzip.compress(b"<?xml version='1.0'?><shakemap_grid></shakemap_grid>"), "grid.xml.gz"),
])
def test_each_accepted_format_is_recognised_by_its_first_bytes(tmp_path: Path, head: bytes,
                                                                name: str) -> None:
    path = tmp_path / "upload.part"
    path.write_bytes(head + b"\x00" * 16 if not head.startswith(b"\x1f\x8b") else head)
    assert hazard_file_name(path) == name


def test_a_gzip_that_is_no_shakemap_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "upload.part"
    path.write_bytes(gzip.compress(b"depth\n1.5\n"))
    with pytest.raises(ApiError) as refused:
        hazard_file_name(path)
    assert refused.value.status_code == 415 and refused.value.errors[0].field == "hazard"


def test_a_shakemap_grid_xml_is_accepted_by_its_root_element(jobs: Jobs) -> None:
    grid = (b"<?xml version='1.0' encoding='UTF-8'?>\n<shakemap_grid xmlns="
            b"'http://earthquake.usgs.gov/eqcenter/shakemap' event_id='x'></shakemap_grid>")
    answer = jobs.submit(jobs.world.north, content=grid, filename="../../etc/passwd")
    assert answer.status_code == 202, answer.text
    assert answer.json()["hazard"] == "passwd"
    with session_scope(jobs.world.sessions) as session:
        stored = jobs_repo.get_job(session, answer.json()["job_id"])
    assert Path(stored.hazard_path).name == "grid.xml"
    assert Path(stored.hazard_path).parent.parent.name == stored.job_id


def test_an_empty_upload_is_422_and_one_over_the_limit_413_both_naming_hazard(
        jobs: Jobs) -> None:
    empty = jobs.submit(jobs.world.north, content=b"")
    assert empty.status_code == 422 and _field(empty) == "hazard"
    state = jobs.world.client.app.state  # type: ignore[attr-defined]
    state.settings = state.settings.model_copy(update={"api_max_upload_bytes": 2_000})
    big = jobs.submit(jobs.world.north, content=b"II*\x00" + b"\x00" * 5_000)
    assert big.status_code == 413 and _field(big) == "hazard"
    assert jobs.rows() == 0
    assert not any((jobs.world.data_dir / "jobs").glob("*/*/*"))


def test_an_unknown_region_is_422_naming_region_and_listing_the_packs(jobs: Jobs) -> None:
    answer = jobs.submit(jobs.world.north, content=tif_bytes(_hazard()), region="atlantis")
    assert answer.status_code == 422 and _field(answer) == "region"
    assert "tiny" in answer.json()["detail"]
    traversal = jobs.submit(jobs.world.north, content=tif_bytes(_hazard()), region="../tiny")
    assert traversal.status_code == 422 and _field(traversal) == "region"


@pytest.mark.parametrize("breaks", ["1,abc", "1.5,0.5", "0.5,0.5", "nan", "1,inf", ",",
                                    ",".join(str(i) for i in range(30))])
def test_bad_breaks_are_422_naming_breaks(jobs: Jobs, breaks: str) -> None:
    answer = jobs.submit(jobs.world.north, content=tif_bytes(_hazard()), breaks=breaks)
    assert answer.status_code == 422, answer.text
    assert _field(answer) == "breaks"
    assert jobs.rows() == 0


@pytest.mark.parametrize(("fields", "field"), [
    ({"member": "exceedance"}, "threshold"),
    ({"threshold": "nan"}, "threshold"),
    ({"kind": "volcano"}, "kind"),
    ({"impassable_from_class": "3"}, "impassable_from_class"),
])
def test_bad_reader_options_are_422_naming_the_field(jobs: Jobs, fields: dict[str, str],
                                                     field: str) -> None:
    answer = jobs.submit(jobs.world.north, content=tif_bytes(_hazard()), **fields)
    assert answer.status_code == 422, answer.text
    assert _field(answer) == field


def test_neither_or_both_a_file_and_a_feed_item_is_422_naming_hazard(jobs: Jobs) -> None:
    neither = jobs.submit(jobs.world.north)
    assert neither.status_code == 422 and _field(neither) == "hazard"
    both = jobs.submit(jobs.world.north, content=tif_bytes(_hazard()), feed_item=1)
    assert both.status_code == 422 and _field(both) == "hazard"
    missing = jobs.submit(jobs.world.north, feed_item=999)
    assert missing.status_code == 422 and _field(missing) == "feed_item"


def test_another_agency_and_an_admin_get_404_for_the_job_and_its_results(jobs: Jobs) -> None:
    job_id = jobs.submit(jobs.world.north, content=tif_bytes(_hazard())).json()["job_id"]
    jobs.run(job_id)
    client = jobs.world.client
    for other in (jobs.world.south, jobs.world.admin):
        assert client.get(f"/v1/jobs/{job_id}", headers=other).status_code == 404
        assert client.get(f"/v1/jobs/{job_id}/results/exposure.csv",
                          headers=other).status_code == 404
        assert client.get("/v1/jobs", headers=other).json()["items"] == []
    assert client.get(f"/v1/jobs/{job_id}", headers=jobs.world.north).status_code == 200


def test_an_admin_key_submits_and_sees_its_own_jobs(jobs: Jobs) -> None:
    answer = jobs.submit(jobs.world.admin, content=tif_bytes(_hazard()))
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["job_id"]
    assert jobs.world.client.get(f"/v1/jobs/{job_id}", headers=jobs.world.admin).status_code \
        == 200
    assert jobs.world.client.get(f"/v1/jobs/{job_id}", headers=jobs.world.north).status_code \
        == 404


def test_no_key_is_401_on_every_job_route(jobs: Jobs) -> None:
    client = jobs.world.client
    assert jobs.submit({}, content=tif_bytes(_hazard())).status_code == 401
    assert client.get("/v1/jobs").status_code == 401
    assert client.get(f"/v1/jobs/{'0' * 32}").status_code == 401
    assert client.get(f"/v1/jobs/{'0' * 32}/results/map.png").status_code == 401
    assert jobs.rows() == 0


def test_results_are_409_until_the_job_is_done_and_404_for_unknown_names(jobs: Jobs) -> None:
    job_id = jobs.submit(jobs.world.north, content=tif_bytes(_hazard())).json()["job_id"]
    client, north = jobs.world.client, jobs.world.north
    waiting = client.get(f"/v1/jobs/{job_id}/results/exposure.csv", headers=north)
    assert waiting.status_code == 409 and "queued" in waiting.json()["detail"]
    jobs.run(job_id)
    for name in ("secrets.txt", "..%2Fregion.toml", "input"):
        assert client.get(f"/v1/jobs/{job_id}/results/{name}", headers=north).status_code == 404
    assert client.get("/v1/jobs/not-a-job", headers=north).status_code == 422
    assert client.get(f"/v1/jobs/{'0' * 32}", headers=north).status_code == 404


def test_a_hazard_that_misses_the_region_fails_the_job_with_the_reason(jobs: Jobs) -> None:
    far = tif_bytes(_hazard(), transform=Affine(1000.0, 0.0, 100_000.0, 0.0, -1000.0, 100_000.0))
    job_id = jobs.submit(jobs.world.north, content=far).json()["job_id"]
    assert jobs.run(job_id).status == "failed"
    failed = jobs.world.client.get(f"/v1/jobs/{job_id}", headers=jobs.world.north).json()
    assert failed["status"] == "failed" and failed["step"] == "failed"
    assert "overlap" in failed["error"] and str(jobs.world.data_dir) not in failed["error"]
    answer = jobs.world.client.get(f"/v1/jobs/{job_id}/results/map.png",
                                   headers=jobs.world.north)
    assert answer.status_code == 409 and "failed" in answer.json()["detail"]


def test_a_corrupt_geotiff_fails_the_job_saying_it_could_not_be_read(jobs: Jobs) -> None:
    job_id = jobs.submit(jobs.world.north, content=b"II*\x00" + b"\x00" * 60).json()["job_id"]
    run = jobs.run(job_id)
    assert run.status == "failed" and run.error is not None
    assert run.error.startswith("the hazard could not be read")
    assert "hazard.tif" in run.error and str(jobs.world.data_dir) not in run.error


def test_a_stored_feed_item_is_overlaid_by_its_id(jobs: Jobs, tmp_path: Path) -> None:
    archived = tmp_path / "archive" / "flood-run.tif"
    archived.parent.mkdir()
    tif_bytes(_hazard(), path=archived)
    with session_scope(jobs.world.sessions) as session:
        item_id, _ = feeds_repo.add_item(
            session, feed_id="floods", checksum="sha256:abc", archive_path=str(archived),
            source_uri="file:///in/flood-run.tif", original_name="flood-run.tif",
            fetched_at=NOW, issued_at=None)
    answer = jobs.submit(jobs.world.north, feed_item=item_id)
    assert answer.status_code == 202, answer.text
    assert "flood-run.tif" in answer.json()["hazard"]
    assert answer.json()["options"]["feed_item"] == item_id
    assert jobs.run(answer.json()["job_id"]).status == "done"
    table = jobs.world.client.get(f"/v1/jobs/{answer.json()['job_id']}/results/exposure.csv",
                                  headers=jobs.world.north).text
    assert sum(float(r["population"]) for r in csv.DictReader(io.StringIO(table))
               if r["class"] == "2") == 88.0


def test_jobs_are_listed_newest_first_one_page_at_a_time(jobs: Jobs) -> None:
    state = jobs.world.client.app.state  # type: ignore[attr-defined]
    ids = []
    for minute in range(3):
        state.clock = lambda minute=minute: NOW + timedelta(minutes=minute)
        ids.append(jobs.submit(jobs.world.north, content=tif_bytes(_hazard())).json()["job_id"])
    client = jobs.world.client
    first = client.get("/v1/jobs?limit=2", headers=jobs.world.north).json()
    assert [j["job_id"] for j in first["items"]] == ids[::-1][:2] and first["next"]
    rest = client.get(f"/v1/jobs?limit=2&cursor={first['next']}", headers=jobs.world.north)
    assert [j["job_id"] for j in rest.json()["items"]] == ids[:1]
    assert rest.json()["next"] is None
    assert client.get("/v1/jobs?cursor=nonsense", headers=jobs.world.north).status_code == 400


def test_a_job_stays_queued_when_the_broker_is_down_and_the_redrive_sends_it(
        jobs: Jobs) -> None:
    def broker_down(_job_id: str) -> None:
        raise ConnectionRefusedError("broker down")

    jobs.world.client.app.state.enqueue_overlay_job = broker_down  # type: ignore[attr-defined]
    answer = jobs.submit(jobs.world.north, content=tif_bytes(_hazard()))
    assert answer.status_code == 202 and answer.json()["status"] == "queued"
    sent: list[str] = []
    assert redrive_jobs(jobs.world.sessions, sent.append, now=NOW + timedelta(seconds=30)) == []
    later = NOW + timedelta(minutes=11)
    assert redrive_jobs(jobs.world.sessions, sent.append, now=later) == [answer.json()["job_id"]]


def test_a_job_is_claimed_by_one_worker_only_and_again_once_its_worker_is_gone(
        jobs: Jobs) -> None:
    job_id = jobs.submit(jobs.world.north, content=tif_bytes(_hazard())).json()["job_id"]

    def claim(at: datetime) -> jobs_repo.OverlayJobRecord | None:
        with session_scope(jobs.world.sessions) as session:
            return jobs_repo.claim_job(session, job_id, now=at, stale_s=3600, max_attempts=2)

    assert claim(NOW) is not None
    assert claim(NOW + timedelta(minutes=1)) is None
    again = claim(NOW + timedelta(hours=2))
    assert again is not None and again.attempts == 2
    assert claim(NOW + timedelta(hours=4)) is None  # out of attempts
    assert redrive_jobs(jobs.world.sessions, lambda _id: None, now=NOW + timedelta(hours=4),
                        stale_s=3600, max_attempts=2) == []
    with session_scope(jobs.world.sessions) as session:
        gone = jobs_repo.get_job(session, job_id)
    assert gone.status == "failed" and "stopped" in (gone.error or "")


@pytest.fixture
def worker(world: ApiWorld, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A real ``tocsin worker`` on the analysis queue, over the filesystem broker."""
    url = world.sessions.kw["bind"].url.render_as_string(hide_password=False)
    env = {**os.environ, "TOCSIN_DATA_DIR": str(world.data_dir), "TOCSIN_DATABASE_URL": url,
           "TOCSIN_FEEDS_CONFIG": "", "TOCSIN_BROKER_URL": ""}
    log = (tmp_path / "worker.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "workers.cli", "worker", "--queues", "analysis",
         "--concurrency", "1", "--log-format", "text"],
        cwd=tmp_path, env={**env, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        stdout=log, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.mark.slow
def test_a_real_worker_runs_a_job_the_api_handed_to_the_broker(
        request: pytest.FixtureRequest, world: ApiWorld, tmp_path: Path) -> None:
    if "postgresql" in request.node.callspec.id:
        pytest.skip("the PostgreSQL test schema is set per connection, not in a URL a "
                    "worker process could be given")
    build_pack(world.data_dir / "regions" / "tiny")
    answer = world.client.post("/v1/jobs", data={"region": "tiny", "breaks": "0.5,1.5"},
                               files={"hazard": ("flood.tif", tif_bytes(_hazard()))},
                               headers=world.north)
    assert answer.status_code == 202, answer.text
    request.getfixturevalue("worker")
    deadline = time.monotonic() + 90
    status = "queued"
    while time.monotonic() < deadline and status in ("queued", "running"):
        time.sleep(0.5)
        status = world.client.get(answer.json()["url"], headers=world.north).json()["status"]
    log = (tmp_path / "worker.log").read_text(errors="replace")
    assert status == "done", log[-3000:]
