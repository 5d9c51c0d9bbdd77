"""`facegrid import`: a folder or a CSV listing enrolled over HTTP, resumable, with a report."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from tests.helpers import SERVICE_PORT


def run_import(source: Path, gallery: str, report: Path, *options: str) -> int:
    """`facegrid import SOURCE --gallery GALLERY` against the test service, quiet, reporting to REPORT."""
    from cluster.cli import main

    url = f"http://127.0.0.1:{SERVICE_PORT}"
    return main(
        ["import", str(source), "--gallery", gallery, "--url", url, "--quiet", "--report", str(report), *options]
    )


@pytest.mark.embedded_only("the import speaks HTTP only: one backend is enough")
def test_import_enrols_a_folder_over_http_resumes_and_reports_every_photo(api, service, faces_dir, labels, tmp_path):
    report = tmp_path / "report.csv"
    assert run_import(faces_dir, "imported", report) == 0
    rows = {row["path"]: row for row in csv.DictReader(open(report, newline=""))}
    faces_in = {row["file"]: int(row["faces_in_image"].strip()) for row in labels}
    assert {Path(path).name for path in rows} == set(faces_in)
    outcome = {Path(path).name: row["outcome"] for path, row in rows.items()}
    assert {name for name, count in faces_in.items() if count == 0} <= {n for n, o in outcome.items() if o == "no face"}
    with_faces = [name for name, count in faces_in.items() if count > 0]
    enrolled = [name for name in with_faces if outcome[name] == "enrolled"]
    assert len(enrolled) >= 0.95 * len(with_faces)
    assert api.get("/v2/galleries/imported").json()["number_of_elements"] == list(outcome.values()).count("enrolled")
    some = next(row for row in rows.values() if row["outcome"] == "enrolled")
    assert api.get(f"/v2/galleries/imported/faces/{some['id']}").json()["meta"] == {"file": Path(some["path"]).name}

    assert run_import(faces_dir, "imported", report, "--several", "skip") == 0  # resumed: nothing enrolled twice
    again = {row["path"]: row["outcome"] for row in csv.DictReader(open(report, newline=""))}
    assert all(again[path] == "already there" for path, row in rows.items() if row["outcome"] == "enrolled")
    assert "enrolled" not in again.values()

    listing = tmp_path / "photos.csv"
    group = next(name for name, count in faces_in.items() if count > 1)
    listing.write_text(
        "path,id,meta,site\n"
        f'{faces_dir / enrolled[0]},91,"{{""name"": ""ann""}}",north\n'
        f"{faces_dir / 'missing.jpg'},92,,\n"
        f"{faces_dir / group},93,,south\n"
    )
    assert run_import(listing, "listed", report, "--several", "skip") == 0
    listed = {row["id"]: row["outcome"] for row in csv.DictReader(open(report, newline=""))}
    assert listed == {"91": "enrolled", "92": "unreadable", "93": "several faces, skipped"}
    assert api.get("/v2/galleries/listed/faces/91").json()["meta"] == {"name": "ann", "site": "north"}
