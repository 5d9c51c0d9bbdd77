"""The API's own description: the docs page in a real browser offline, and schemathesis over the document."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import REPO, SERVICE_PORT, unavailable

OFFLINE_CHROMIUM = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--proxy-server=http://127.0.0.1:9",
    "--proxy-bypass-list=127.0.0.1",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--virtual-time-budget=20000",
    "--dump-dom",
]


@pytest.mark.embedded_only("the docs page is the same on every backend")
def test_the_docs_page_shows_every_operation_in_a_browser_with_no_network(api, service):
    import re
    import shutil
    import subprocess

    chromium = shutil.which("chromium")
    if chromium is None:
        unavailable("Debian's chromium is not installed (make test installs it: cluster/browser.sh)")
    document = api.get("/v2/openapi.json").json()
    operations = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    assert len(operations) >= 15
    page = api.get("/v2/docs").text
    assert not re.search(r"(src|href)=[\"']?(https?:)?//", page)  # nothing fetched from elsewhere
    for path in ("/v2/docs", "/v2/docs/v2/overview.html"):
        shown = subprocess.run(
            [chromium, *OFFLINE_CHROMIUM, f"http://127.0.0.1:{SERVICE_PORT}{path}"],
            capture_output=True,
            text=True,
            timeout=180,
        ).stdout
        rendered = set(re.findall(r'opblock-summary-method">([A-Z]+)</span>.{0,400}?data-path="([^"]+)"', shown, re.S))
        assert rendered == operations, operations ^ rendered


@pytest.mark.embedded_only("the document and the routes are the same on every backend")
def test_schemathesis_finds_nothing_over_the_openapi_document(api, service, people, tmp_path):
    """Every check of schemathesis, bounded in examples, over the running service; tests/api/schemathesis.toml
    allows only the spec's own answers that no OpenAPI document can rule out, and says why."""
    import subprocess
    import sys

    schemathesis = Path(sys.executable).parent / "schemathesis"
    run = subprocess.run(
        [
            str(schemathesis),
            "--no-color",
            "--config-file",
            str(REPO / "tests" / "api" / "schemathesis.toml"),
            "run",
            f"http://127.0.0.1:{SERVICE_PORT}/v2/openapi.json",
            "--max-examples",
            "25",
            "--max-failures",
            "20",
            "--request-timeout",
            "30",
            "--generation-deterministic",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )  # its cache goes there
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-2000:]
    people_count = api.get("/v2/galleries/people").json()["number_of_elements"]
    assert people_count == len(people)  # its writes left the others' data
