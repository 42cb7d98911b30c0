"""The review report opens in real headless Chromium, driven over the DevTools protocol: no
console errors, no request leaves the file, the timeline and thumbnails are there, and a
screenshot is taken (kept in .cache/test-artifacts/review.png for people to look at)."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from chromium import DevTools, chromium_path
from mediagen import make_clip
from test_edits import ScriptedDetector

import veil
from veil import DetectionConfig
from veil.cli import main
from veil.review._report import build_report
from veil.review._risk import risk_series

FAST = DetectionConfig.from_preset("fast", detector={"stride": 1})  # the script is per frame
ARTIFACTS = Path(__file__).resolve().parents[1] / ".cache" / "test-artifacts"


def faces(i: int) -> list[tuple[tuple[float, float, float, float], float]]:
    """Track 1 all along, with a 3-frame gap and low scores late; track 2 a short false hit."""
    found = []
    if not 10 <= i < 13:
        found.append(((40.0 + i, 50.0, 110.0 + i, 130.0), 0.62 if i >= 20 else 0.95))
    if 16 <= i < 18:
        found.append(((220.0, 150.0, 260.0, 190.0), 0.55))
    return found


@pytest.fixture(scope="module")
def reviewed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("review")
    src = make_clip(tmp / "in.mp4", frames=30)
    record = tmp / "in.veil.json"
    veil.detect(src, record, config=FAST, detector=ScriptedDetector(faces))
    assert (
        main(
            [
                "edit",
                str(record),
                "--suppress",
                "2",
                "--who",
                "R. Viewer",
                "--why",
                "reflection in the window",
            ]
        )
        == 0
    )
    report = tmp / "report.html"
    assert main(["review", str(src), str(record), "-o", str(report)]) == 0
    return {"src": src, "record": record, "report": report, "tmp": tmp}


def open_in_chromium(page: Path, profile: Path, screenshot: Path) -> dict[str, Any]:
    browser = DevTools(chromium_path(), profile)
    try:
        target = browser.call("Target.createTarget", url="about:blank")["targetId"]
        session = browser.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Runtime", "Log", "Page", "Network"):
            browser.call(f"{domain}.enable", session)
        browser.call(
            "Emulation.setDeviceMetricsOverride",
            session,
            width=1280,
            height=900,
            deviceScaleFactor=1,
            mobile=False,
        )
        browser.call("Page.navigate", session, url=page.resolve().as_uri())
        browser.wait_for("Page.loadEventFired")
        probe = """JSON.stringify({
            timeline: !!document.querySelector('svg#timeline'),
            lanes: document.querySelectorAll('svg#timeline rect title').length,
            thumbs: [...document.querySelectorAll('img.thumb')]
                .map(i => [i.complete, i.naturalWidth]),
            external: [...document.querySelectorAll('[src],[href]')]
                .map(e => e.getAttribute('src') || e.getAttribute('href'))
                .filter(u => !u.startsWith('data:') && !u.startsWith('#')),
            text: document.body.innerText,
            height: document.documentElement.scrollHeight})"""
        result = browser.call("Runtime.evaluate", session, expression=probe, returnByValue=True)
        dom = json.loads(result["result"]["value"])
        browser.call(
            "Emulation.setDeviceMetricsOverride",
            session,
            width=1280,
            height=int(dom["height"]),
            deviceScaleFactor=1,
            mobile=False,
        )
        shot = browser.call("Page.captureScreenshot", session, format="png")
        screenshot.write_bytes(base64.b64decode(shot["data"]))
        events = list(browser.events)
    finally:
        stderr = browser.close()
    errors = [e["params"] for e in events if e.get("method") == "Runtime.exceptionThrown"]
    errors += [
        e["params"]
        for e in events
        if e.get("method") == "Runtime.consoleAPICalled"
        and e["params"]["type"] in ("error", "assert")
    ]
    errors += [
        e["params"]["entry"]
        for e in events
        if e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error"
    ]
    requests = [
        e["params"]["request"]["url"]
        for e in events
        if e.get("method") == "Network.requestWillBeSent"
    ]
    return {"dom": dom, "errors": errors, "requests": requests, "stderr": stderr}


@pytest.mark.system  # Debian's chromium (.ci/setup-system.sh)
def test_the_report_opens_in_chromium_without_errors(reviewed: dict[str, Path]) -> None:
    screenshot = reviewed["tmp"] / "report.png"
    seen = open_in_chromium(reviewed["report"], reviewed["tmp"] / "profile", screenshot)
    assert seen["errors"] == [], seen["errors"]
    assert "CONSOLE" not in seen["stderr"], seen["stderr"]
    assert all(u.startswith(("file:", "data:")) for u in seen["requests"]), seen["requests"]
    dom = seen["dom"]
    assert dom["timeline"] and dom["lanes"] > 3
    assert dom["external"] == []
    assert len(dom["thumbs"]) >= 6
    assert all(complete and width > 0 for complete, width in dom["thumbs"])  # JPEGs decoded
    text = dom["text"]
    for expected in (
        "Timeline",
        "Tracks",
        "Frames flagged for attention",
        "bridged gap",
        "low confidence",
        "SUPPRESSED",
        "reflection in the window",
        "Parameters and hashes",
        veil.Record.load(reviewed["record"]).sha256(),
    ):
        assert expected in text, expected
    picture = cv2.imread(str(screenshot))
    assert picture is not None and picture.shape[1] == 1280 and picture.shape[0] > 1200
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(screenshot, ARTIFACTS / "review.png")


def _first_thumbnail(html: str) -> np.ndarray:
    start = html.index('class="thumb"')
    start = html.index("data:image/jpeg;base64,", start) + len("data:image/jpeg;base64,")
    data = base64.b64decode(html[start : html.index('"', start)])
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR).astype(np.int16)


def test_thumbnails_are_masked_unless_asked_for_unmasked(reviewed: dict[str, Path]) -> None:
    record = veil.Record.load(reviewed["record"])
    masked = build_report(reviewed["src"], record).html
    unmasked = build_report(reviewed["src"], record, unmasked=True).html
    assert "UNMASKED THUMBNAILS" in unmasked and "UNMASKED THUMBNAILS" not in masked
    assert "Content-Security-Policy" in masked
    difference = np.abs(_first_thumbnail(masked) - _first_thumbnail(unmasked)).mean()
    assert difference > 15  # the masked one is blurred


def test_residual_risk_is_shown_when_the_record_has_it(reviewed: dict[str, Path]) -> None:
    record = veil.Record.load(reviewed["record"])
    block = {
        "estimate": 0.03,
        "method": "second detector",
        "frames": [
            {"frame": 4, "risk": 0.8},
            {"frame": 5, "risk": 0.7},
            {"frame": 20, "risk": 0.1},
        ],
    }
    report = build_report(reviewed["src"], record, document={"residual_risk": block})
    assert "Residual risk" in report.html and "second detector" in report.html
    risky = [f for f in report.flags if f.reason == "residual risk"]
    assert [(f.first, f.last) for f in risky] == [(4, 5)]
    assert risk_series({"per_frame": [0.1, 0.2]}, 2) == {0: 0.1, 1: 0.2}


def test_the_records_residual_risk_block_is_shown(reviewed: dict[str, Path]) -> None:
    record = veil.Record.load(reviewed["record"])
    block = {
        "near_threshold": {
            "frames": 2,
            "candidates": 3,
            "worst": [
                {"frame": 7, "candidates": 2, "best_score": 0.41},
                {"frame": 8, "candidates": 1, "best_score": 0.3},
            ],
        },
        "bridged_gaps": {"count": 1, "frames": 3, "longest": 3, "list": []},
        "unconfirmed_tracks": {"count": 0, "list": []},
        "estimate": {
            "review_frames": 5,
            "review_share": 0.1667,
            "level": "medium",
            "basis": "frames with near-threshold candidates",
        },
    }
    report = build_report(reviewed["src"], record, document={"residual_risk": block})
    assert "residual risk: medium" in report.html and "5 frames to review" in report.html
    assert "near misses" in report.html  # charted on the timeline
    near = [(f.first, f.last) for f in report.flags if f.reason == "residual risk"]
    assert near == [(7, 8)]


def test_flags_name_the_gap_the_low_scores_and_the_short_track(reviewed: dict[str, Path]) -> None:
    record = veil.Record.load(reviewed["record"])
    flags = build_report(reviewed["src"], record).flags
    found = {(f.reason, f.first, f.last) for f in flags}
    assert ("bridged gap", 10, 12) in found
    assert ("low confidence", 20, 29) in found
    # track 2 is suppressed: its flags are gone with it
    assert all(f.track != 2 for f in flags)
