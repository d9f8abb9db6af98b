"""A researcher's bundle in a real browser: 64-bit codes from 8 concepts, many classes, a class folder without
masks. At 1280 px no gallery tile overlaps another, and the sub-code picker lists exactly the values that
occur, each with its count (headless Chromium against ``streamlit run``)."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import pytest
from browser import CHROMIUM, CHROMIUM_ARGS, StreamlitServer  # dashboard/browser.py

from tests.test_browser import ARTIFACTS, require_browser

pytestmark = pytest.mark.browser

# Pairs of visible images in the main area whose boxes overlap by more than 2 px each way.
OVERLAPS = """
() => {
  const main = document.querySelector("[data-testid='stMain']");
  const boxes = [...main.querySelectorAll("img")]
    .filter((e) => e.offsetParent !== null)
    .map((e) => e.getBoundingClientRect())
    .filter((b) => b.width > 20);
  let pairs = 0;
  for (let i = 0; i < boxes.length; i++)
    for (let j = i + 1; j < boxes.length; j++) {
      const a = boxes[i], b = boxes[j];
      const w = Math.min(a.right, b.right) - Math.max(a.left, b.left);
      const h = Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top);
      if (w > 2 && h > 2) pairs++;
    }
  const right = main.getBoundingClientRect().right;
  return { images: boxes.length, pairs, beyond: boxes.filter((b) => b.right > right + 2).length };
}
"""


@pytest.fixture(scope="module")
def scale_bundles(tmp_path_factory) -> Path:
    from core.synthetic import make_concepthash_bundle

    root = tmp_path_factory.mktemp("scale")
    make_concepthash_bundle(
        root / "bundles" / "hash64",
        bits=64,
        concepts=8,
        classes=30,
        images=600,
        data_out=root / "data",
        progress=lambda *_: None,
    )
    return root / "bundles"


def settle(page) -> None:
    from playwright.sync_api import expect

    app = page.locator("[data-testid='stApp']")
    with contextlib.suppress(AssertionError):  # a rerun may already be over: its start is not required
        expect(app).to_have_attribute("data-test-script-state", "running", timeout=2_000)
    expect(page.locator("[data-testid='stApp']")).to_have_attribute(
        "data-test-script-state", "notRunning", timeout=60_000
    )
    page.wait_for_timeout(1200)  # images and charts draw after the run ends
    expect(page.locator("[data-testid='stException']")).to_have_count(0)


def test_a_64_bit_bundle_lays_out_without_overlap_and_offers_only_populated_subcode_values(
    scale_bundles, tmp_path
):
    from playwright.sync_api import expect, sync_playwright

    from core.bundle import read_bundle_arrays
    from core.concepthash.arrays import ARRAYS
    from lens.hashing import images_by_subcode

    require_browser()
    codes = read_bundle_arrays(scale_bundles / "hash64", ARRAYS)["db_codes"]
    counts = {value: len(rows) for value, rows in images_by_subcode(codes, 0, 8).items()}
    by_count = sorted(counts, key=lambda v: (-counts[v], v))
    populated = by_count[len(by_count) // 2]  # not among the four drawn at first
    missing = min(set(range(256)) - set(counts))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with StreamlitServer(scale_bundles, tmp_path / "server.log") as server, sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=list(CHROMIUM_ARGS)
        )
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        try:
            page.goto(f"{server.url}/concept_attention", wait_until="domcontentloaded")
            expect(page.locator("h1").filter(has_text="Concept attention").first).to_be_visible(
                timeout=60_000
            )
            settle(page)
            layout = page.evaluate(OVERLAPS)
            assert layout["images"] >= 9 and layout["pairs"] == 0 and layout["beyond"] == 0, layout

            page.goto(f"{server.url}/hash_codes", wait_until="domcontentloaded")
            expect(page.locator("h1").filter(has_text="Hash codes").first).to_be_visible(timeout=60_000)
            settle(page)
            page.get_by_role("tab", name="Images that turn it on").click()
            settle(page)
            layout = page.evaluate(OVERLAPS)
            page.screenshot(path=str(ARTIFACTS / "scale_bits.png"))
            assert layout["images"] >= 20 and layout["pairs"] == 0 and layout["beyond"] == 0, layout

            page.get_by_text("Sub-code", exact=True).click()
            settle(page)
            layout = page.evaluate(OVERLAPS)
            assert layout["pairs"] == 0 and layout["beyond"] == 0, layout
            picker = page.locator("[data-testid='stMultiSelect'] input").first
            searches = {}
            for value in (populated, missing):
                picker.fill(f"value {value} · ")
                page.wait_for_timeout(500)
                searches[value] = page.locator("[role='option']").all_inner_texts()
                picker.fill("")
            page.keyboard.press("Escape")
        finally:
            browser.close()
    # Typing a value's name finds that value (first among fuzzy matches) with its count; a value no image
    # has is not offered.
    (found,) = [text for text in searches[populated] if text.startswith(f"value {populated} ·")]
    match = re.fullmatch(r"value (\d+) · ([01]{8}) · (\d+) images? · mostly .+ \(\d+%\)", found.strip())
    assert match, found
    assert (int(match.group(1)), int(match.group(3))) == (populated, counts[populated])
    assert not [text for text in searches[missing] if text.startswith(f"value {missing} ·")], searches[
        missing
    ]
