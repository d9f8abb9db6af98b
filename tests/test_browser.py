"""A real browser session: `streamlit run dashboard/Home.py` driven by headless Chromium.

Starts the app on a free localhost port with the tiny bundles and the repository's
``.streamlit/config.toml``, waits for ``/_stcore/health``, opens every page, downloads a figure,
uploads a photo on the open-world page and checks that labels appear. Every request the browser
makes is recorded: one to any host but localhost fails the test (offline means offline), and so
does a server log that shows an external-IP look-up. One screenshot per page lands in
``test-artifacts/browser/``. Without Chromium or playwright the test is skipped with the reason,
except under ``CI=true``, where a missing browser is a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest
from browser import (  # dashboard/browser.py, shared with the benchmarks
    CHROMIUM,
    CHROMIUM_ARGS,
    free_port,
    wait_for_health,
)

from tests.conftest import HOME, ROOT

pytestmark = pytest.mark.browser

ARTIFACTS = ROOT / "test-artifacts" / "browser"
# (url path, text that proves the page rendered)
PAGES = [
    ("", "ConceptLens"),
    ("hash_codes", "Hash codes"),
    ("concept_attention", "Concept attention"),
    ("retrieval", "Retrieval"),
    ("ceir_concepts", "CEIR"),
    ("open_world", "Open-world"),
]
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}
LOCAL_SCHEMES = {"data", "blob", "about"}  # inline content: no host is asked


def external(urls: list[str]) -> list[str]:
    """The URLs that would leave this machine."""
    return [
        url
        for url in urls
        if urlparse(url).scheme not in LOCAL_SCHEMES and urlparse(url).hostname not in LOCAL_HOSTS
    ]


def require_browser() -> None:
    problems = []
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        problems.append(f"Chromium is not installed at {CHROMIUM} (apt-get install -y chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        problems.append("the playwright package is not installed (pip install playwright)")
    if problems:
        reason = "; ".join(problems)
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"Browser test required under CI=true: {reason}.")
        pytest.skip(reason)


@pytest.fixture
def app_url(tiny_bundles):
    require_browser()
    port = free_port()
    env = os.environ | {"CONCEPTLENS_BUNDLES": str(tiny_bundles), "PYTHONPATH": str(ROOT)}
    log = ARTIFACTS / "streamlit.log"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as log_file:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streamlit",
                "run",
                str(HOME),
                "--server.headless",
                "true",
                "--server.port",
                str(port),
            ],  # everything else (usage statistics off, no external-IP look-up) from .streamlit/config.toml
            cwd=ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_for_health(url, process, log)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
    server_log = log.read_text()
    assert "External URL" not in server_log and "external IP" not in server_log, server_log[-2000:]


def test_every_page_opens_offline_and_an_upload_gets_labels(app_url, tmp_path):
    from PIL import Image
    from playwright.sync_api import expect, sync_playwright
    from skimage import data

    photo = tmp_path / "chelsea.png"
    Image.fromarray(data.chelsea()).save(photo)
    requested: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=list(CHROMIUM_ARGS)
        )
        context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
        context.on("request", lambda request: requested.append(request.url))  # pages and workers alike
        page = context.new_page()
        page.on("websocket", lambda socket: requested.append(socket.url))
        try:
            for path, marker in PAGES:
                page.goto(f"{app_url}/{path}", wait_until="domcontentloaded")
                heading = page.locator("h1").filter(has_text=marker).first
                expect(heading).to_be_visible(timeout=60_000)
                # wait for the script run to end: a click on a download button while the page is still drawn
                # reruns it, and the file the button points at can be gone before the browser asks for it
                expect(page.locator("[data-testid='stApp']")).to_have_attribute(
                    "data-test-script-state", "notRunning", timeout=60_000
                )
                page.wait_for_timeout(1500)  # let charts and images settle before the screenshot
                expect(page.locator("[data-testid='stException']")).to_have_count(0)
                page.screenshot(path=str(ARTIFACTS / f"{path or 'home'}.png"), full_page=True)
                if path == "ceir_concepts":  # a tab is drawn when it is opened, with no error
                    expect(page.get_by_text("What if? Edit the image's top concepts")).to_have_count(0)
                    page.get_by_role("tab", name="One image: concepts and what-if").click()
                    expect(page.get_by_text("What if? Edit the image's top concepts")).to_be_visible(
                        timeout=60_000
                    )
                    expect(page.locator("[data-testid='stException']")).to_have_count(0)
                if path == "hash_codes":  # a downloaded figure opens with no network: plotly.js inside
                    with page.expect_download(timeout=60_000) as download:
                        page.get_by_role("button", name="Download bit-matrix (HTML)").click()
                    html = Path(download.value.path()).read_text(encoding="utf-8")
                    assert "Plotly.newPlot" in html and '<script src="http' not in html

            page.goto(f"{app_url}/open_world", wait_until="domcontentloaded")
            expect(page.locator("h1").filter(has_text="Open-world").first).to_be_visible(timeout=60_000)
            page.locator("[data-testid='stFileUploader'] input[type='file']").first.set_input_files(
                str(photo)
            )
            expect(page.get_by_text("Concept labels").first).to_be_visible(timeout=60_000)
            # only drawn once the image has labels: the labels table and its CSV download
            expect(page.get_by_text("All labels").first).to_be_visible(timeout=60_000)
            expect(page.locator("[data-testid='stDataFrame']").first).to_be_visible(timeout=60_000)
            expect(page.get_by_role("button", name="Download concept_labels (CSV)")).to_be_visible(
                timeout=60_000
            )
            expect(page.locator("[data-testid='stAlert']").filter(has_text="Cannot open")).to_have_count(0)
            expect(page.locator("[data-testid='stException']")).to_have_count(0)
            page.wait_for_timeout(1000)
            page.screenshot(path=str(ARTIFACTS / "open_world_upload.png"), full_page=True)
        finally:
            browser.close()
    assert any(urlparse(url).path.endswith("/_stcore/stream") for url in requested), "requests were seen"
    assert external(requested) == [], f"requests that leave this machine: {sorted(set(external(requested)))}"
