"""The viewer page in a real headless Chromium (Debian's ``chromium``), driven by Playwright.

``pytest -k browser`` selects these. Chromium comes from the README's Debian set-up line
and ``.ci/run``; a missing browser is a failure, not a skip.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from framestream.serve.launch import CHROMIUM_ARGS, find_chromium
from serve_support import serve


@pytest.fixture(scope="module")
def server():
    with serve("--max-sessions", "2", "--fps", "24") as proc:
        yield proc


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=find_chromium(), headless=True, args=list(CHROMIUM_ARGS), timeout=60_000)
        try:
            yield browser
        finally:
            browser.close()


def stats(page) -> dict:
    return page.evaluate("() => JSON.parse(JSON.stringify(window.fsStats))")


def artifact_dir(tmp_path: Path) -> Path:
    target = Path(os.environ.get("FRAMESTREAM_TEST_ARTIFACTS", tmp_path))
    target.mkdir(parents=True, exist_ok=True)
    return target


@pytest.mark.parametrize("transport", ["websocket", "webrtc"])
def test_browser_streams_and_steers(server, browser, transport: str, tmp_path: Path) -> None:
    page = browser.new_page(viewport={"width": 900, "height": 800})
    try:
        page.set_default_timeout(30_000)
        page.goto(f"{server.base_url}/")
        page.wait_for_function("() => window.fsStats && window.fsStats.state === 'ready'")
        page.select_option("#transport", "auto" if transport == "webrtc" else transport)
        page.fill("#prompt", "a red fox running through fresh snow")
        page.click("#start")
        page.wait_for_function("() => window.fsStats.painted >= 24", timeout=45_000)
        first = stats(page)
        assert first["transport"] == transport, first["errors"]
        assert first["ttffMs"] is not None and first["ttffMs"] > 0
        assert first["firstFrameLatencies"], "the page measured no glass-to-glass latency"

        page.fill("#prompt", "a blue whale under the northern lights")
        page.click("#steer")
        page.wait_for_function(f"() => window.fsStats.painted >= {first['painted'] + 24}", timeout=45_000)
        after = stats(page)
        assert after["transport"] == transport and not [e for e in after["errors"] if not e.startswith("fallback")]
        assert after["state"] == "streaming"
        shot = artifact_dir(tmp_path) / f"browser-{transport}.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000

        page.click("#stop")
        page.wait_for_function("() => window.fsStats.state === 'ended'")
        assert page.inner_text("#status").startswith("stopped")
        assert page.is_enabled("#start")
    finally:
        page.close()


def test_browser_falls_back_to_websocket_when_webrtc_fails(server, browser) -> None:
    page = browser.new_page()
    try:
        page.set_default_timeout(30_000)
        # A browser whose WebRTC breaks at connection time (blocked by policy, say).
        page.add_init_script("window.RTCPeerConnection = function () { throw new Error('WebRTC blocked'); };")
        page.goto(f"{server.base_url}/")
        page.wait_for_function("() => window.fsStats && window.fsStats.state === 'ready'")
        page.click("#start")  # transport "auto"
        page.wait_for_function("() => window.fsStats.transport === 'websocket' && window.fsStats.painted >= 12", timeout=45_000)
        result = stats(page)
        assert any(e.startswith("fallback") and "WebRTC blocked" in e for e in result["errors"]), result["errors"]
        assert result["state"] == "streaming"
        page.click("#stop")
        page.wait_for_function("() => window.fsStats.state === 'ended'")
    finally:
        page.close()
