"""The review workstation (issue 17): ``veil review IN REC --serve``, a real server on loopback,
driven in real headless Chromium (Debian's) by keyboard and mouse events: step to a frame,
draw boxes on two frames, suppress a confident track through its warning, re-render, sign
off. Then the record's edit log, the rendered bytes (equal to ``veil render`` of that record)
and ``veil verify`` are checked. The API's security (token, host, paths) is tested apart,
without a browser.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chromium import DevTools, Tab, chromium_path
from mediagen import make_clip
from test_edits import ScriptedDetector

import veil
from veil import DetectionConfig
from veil._provenance import keygen, verify
from veil._record import Record
from veil._review_app import ReviewSession, serve
from veil.cli import main

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / ".cache" / "test-artifacts"
PER_FRAME = DetectionConfig.from_preset("fast", detector={"stride": 1})  # the script is per frame


def faces(i: int) -> list[tuple[tuple[float, float, float, float], float]]:
    """Track 1: a face all along (score 0.95); track 2: a confident false hit, frames 16-30."""
    found = [((40.0 + i, 50.0, 110.0 + i, 130.0), 0.95)]
    if 16 <= i <= 30:
        found.append(((220.0, 150.0, 260.0, 190.0), 0.8))
    return found


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    src = make_clip(tmp_path / "in.mp4", frames=40)
    record = tmp_path / "in.veil.json"
    veil.detect(src, record, config=PER_FRAME, detector=ScriptedDetector(faces))
    private, public = keygen(tmp_path / "site.key")
    return {
        "src": src,
        "record": record,
        "out": tmp_path / "in.reviewed.mp4",
        "key": private,
        "pub": public,
        "tmp": tmp_path,
    }


@pytest.fixture
def app(files: dict[str, Path]) -> Iterator[Any]:
    session = ReviewSession(files["src"], files["record"], files["out"], sign_key=files["key"])
    server = serve(session, "127.0.0.1:0")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    session.close()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.system  # Debian's chromium (.ci/setup-system.sh)
def test_a_reviewer_corrects_renders_and_signs_off_in_the_browser(
    app: Any, files: dict[str, Path]
) -> None:
    browser = DevTools(chromium_path(), files["tmp"] / "profile")
    try:
        tab = Tab(browser)
        tab.navigate(app.url)
        tab.wait("document.body.dataset.loaded === '1' && document.body.dataset.busy === '0'")
        assert tab.evaluate("document.querySelectorAll('#tracks .track').length") == 2
        assert tab.evaluate("document.querySelectorAll('#timeline rect').length") >= 2
        tab.type_into("#who", "R. Viewer")
        tab.evaluate("document.activeElement.blur()")

        # frame-accurate stepping by keyboard
        for _ in range(5):
            tab.key("ArrowRight")
        tab.key("ArrowRight", shift=True)
        tab.wait("document.body.dataset.frame === '15' && document.body.dataset.loaded === '1'")

        # a box on frame 15 and one on frame 25, drawn with the mouse
        def draw(box: tuple[float, float, float, float]) -> None:
            tab.wait("document.body.dataset.loaded === '1'")
            rect = tab.evaluate(
                "(() => { const r = document.getElementById('overlay').getBoundingClientRect();"
                " const p = document.getElementById('picture');"
                " return [r.x, r.y, p.clientWidth / p.naturalWidth]; })()"
            )
            x, y, s = rect
            tab.drag([x + box[0] * s, y + box[1] * s], [x + box[2] * s, y + box[3] * s])

        tab.key("b")
        draw((150, 40, 200, 100))
        tab.key("ArrowRight", shift=True)
        tab.wait("document.body.dataset.frame === '25'")
        draw((170, 40, 220, 100))
        assert tab.evaluate("document.getElementById('keyframes').textContent") == (
            "keyframes: 15, 25"
        )
        tab.type_into("#boxwhy", "a face the detector missed, behind the lamp")
        tab.click("#saveboxes")
        tab.wait("document.getElementById('status').textContent.includes('saved')")
        record = Record.load(files["record"])
        added = record.edits[-1]
        assert added["action"] == "add_boxes" and added["who"] == "R. Viewer"
        assert [k["frame"] for k in added["keyframes"]] == [15, 25]
        for keyframe, want in zip(
            added["keyframes"], [(150, 40, 200, 100), (170, 40, 220, 100)], strict=True
        ):
            assert keyframe["box"] == pytest.approx(want, abs=1.0)

        # suppress the confident track 2: a warning first, then confirmed with a reason
        tab.click('.track[data-track="2"] button')
        tab.wait("document.getElementById('ask').open")
        tab.type_into("#askFields input", "reflection of a poster in the window")
        tab.click("#askOk")
        tab.wait("document.getElementById('askText').textContent.startsWith('WARNING')")
        assert tab.evaluate("document.getElementById('ask').open")
        assert len(Record.load(files["record"]).edits) == 1  # nothing suppressed yet
        tab.click("#askOk")
        tab.wait("document.querySelector('.track[data-track=\"2\"].suppressed') !== null")
        record = Record.load(files["record"])
        suppressed = record.edits[-1]
        assert suppressed["action"] == "suppress" and suppressed["track"] == 2
        assert suppressed["why"] == "reflection of a poster in the window"

        # re-render, then sign off
        tab.click("#render")
        tab.wait("document.getElementById('status').textContent.startsWith('rendered')")
        assert files["out"].is_file()
        tab.type_into("#statement", "Reviewed frame by frame: nothing identifiable left")
        tab.click("#sign")
        tab.wait("document.querySelectorAll('#approvals li').length === 1")
        tab.key("r")  # the rendered output's own frame
        tab.wait("document.body.dataset.loaded === '1' && document.body.dataset.busy === '0'")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        tab.screenshot(ARTIFACTS / "review-app.png")
        problems = tab.problems()
        requests = tab.requests()
    finally:
        stderr = browser.close()
    # the one answer not 2xx: the warning before the confident track was suppressed
    warned = [p for p in problems if "status of 409" in str(p.get("text"))]
    assert len(warned) == 1 and [p for p in problems if p not in warned] == [], (
        problems,
        stderr[-2000:],
    )
    assert requests and all(u.startswith(app.url.split("?")[0]) for u in requests), requests

    # the rendered bytes are `veil render` of the edited record (its approval aside)
    record = Record.load(files["record"])
    [approval] = record.approvals
    assert approval["who"] == "R. Viewer"
    assert approval["output_sha256"] == sha256(files["out"])
    again = files["tmp"] / "again.mp4"
    veil.render(files["src"], files["record"], again)
    assert sha256(again) == sha256(files["out"])
    manifest = json.loads((files["tmp"] / "in.reviewed.mp4.manifest.json").read_text())
    assert manifest["approval"] == approval
    result = verify(
        files["out"],
        files["tmp"] / "in.reviewed.mp4.manifest.json",
        input=files["src"],
        record=files["record"],
        public_key=files["pub"],
    )
    assert result.ok and result.signed, [c for c in result.checks if c.ok is False]
    [check] = [c for c in result.checks if c.name == "approval"]
    assert check.ok and "approved by R. Viewer" in check.detail


# --------------------------------------------------------------------------------------------
# The API without a browser


def request(
    server: Any,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    host, port = server.server_address[:2]
    connection = http.client.HTTPConnection(host if host != "0.0.0.0" else "127.0.0.1", port)
    data = body if isinstance(body, bytes) else None if body is None else json.dumps(body).encode()
    connection.request(method, path, body=data, headers=headers or {})
    response = connection.getresponse()
    payload = response.read()
    connection.close()
    kind = response.getheader("Content-Type", "")
    return response.status, json.loads(payload) if kind == "application/json" else payload


def test_changes_need_the_token_and_the_server_s_own_host(app: Any, files: dict[str, Path]) -> None:
    token = app.session.token
    before = sha256(files["record"])
    edit = {"action": "reviewed", "first": 0, "last": 3, "who": "A", "why": "looked"}
    for headers in ({}, {"X-Veil-Token": "wrong"}):
        status, answer = request(app, "POST", "/api/edit", edit, headers)
        assert status == 403 and "token" in answer["error"]
    status, answer = request(
        app, "POST", "/api/edit", edit, {"X-Veil-Token": token, "Host": "evil.example:80"}
    )
    assert status == 403 and "evil.example" in answer["error"]
    assert sha256(files["record"]) == before
    status, answer = request(app, "POST", "/api/edit", edit, {"X-Veil-Token": token})
    assert status == 200 and answer["edit"]["action"] == "reviewed"
    assert Record.load(files["record"]).edits[-1]["why"] == "looked"
    assert answer["state"]["edits"][-1]["what"] == "frames 0-3 reviewed"


def test_only_the_app_and_its_api_are_served(app: Any, files: dict[str, Path]) -> None:
    status, page = request(app, "GET", "/")
    assert status == 200 and app.session.token.encode() in page
    for path in (
        "/etc/passwd",
        "/../in.veil.json",
        "/%2e%2e/in.mp4",
        "/review_app/app.js",
        "/api/frame/../../in.veil.json",
        "/in.mp4",
    ):
        status, answer = request(app, "GET", path)
        assert status == 404 and set(answer) == {"error"}, path  # an error, no file's bytes
    status, answer = request(app, "GET", "/api/frame?frame=999")
    assert status == 404
    status, answer = request(app, "GET", "/api/frame?frame=x")
    assert status == 400
    status, answer = request(app, "GET", "/api/frame?frame=3&view=../in.mp4")
    assert status == 400
    token = {"X-Veil-Token": app.session.token}
    status, answer = request(app, "POST", "/api/edit", b"{not json", token)
    assert status == 400
    status, answer = request(app, "POST", "/api/edit", {"action": "suppress"}, token)
    assert status == 400 and "missing" in answer["error"]
    status, answer = request(
        app, "POST", "/api/edit", {"action": "trim", "track": 1, "first": 9, "last": 2,
                                   "who": "A", "why": "b"}, token,
    )  # fmt: skip
    assert status == 422 and "not a range" in answer["error"]
    status, _ = request(app, "GET", "/api/state")
    assert status == 200  # still serving after the garbage


def test_suppressing_a_confident_track_needs_a_confirmation_and_a_reason(
    app: Any, files: dict[str, Path]
) -> None:
    token = {"X-Veil-Token": app.session.token}
    ask = {"action": "suppress", "track": 1, "who": "A", "why": "not a face"}
    status, answer = request(app, "POST", "/api/edit", ask, token)
    assert status == 409 and answer["warning"] and "score 0.95" in answer["error"]
    status, answer = request(app, "POST", "/api/edit", ask | {"confirm": True, "why": "no"}, token)
    assert status == 400 and "at least 10 characters" in answer["error"]
    assert Record.load(files["record"]).edits == []


def test_sign_off_needs_a_current_render_and_a_key(app: Any, files: dict[str, Path]) -> None:
    token = {"X-Veil-Token": app.session.token}
    sign = {"who": "A. Reviewer", "statement": "nothing identifiable left"}
    status, answer = request(app, "POST", "/api/signoff", sign, token)
    assert status == 422 and "render" in answer["error"], answer  # nothing rendered yet
    status, answer = request(app, "POST", "/api/render", {}, token)
    assert status == 200 and answer["state"]["current"]
    request(app, "POST", "/api/edit", {"action": "grow", "track": 1, "factor": 0.1,
                                       "who": "A", "why": "hair"}, token)  # fmt: skip
    status, answer = request(app, "POST", "/api/signoff", sign, token)
    assert status == 422 and "render again" in answer["error"]
    request(app, "POST", "/api/render", {}, token)
    status, answer = request(app, "POST", "/api/signoff", sign, token)
    assert status == 200 and answer["approval"]["who"] == "A. Reviewer"
    # an edit after the sign-off: verify says the approval no longer holds
    request(app, "POST", "/api/edit", {"action": "reviewed", "first": 1, "last": 2,
                                       "who": "B", "why": "second look"}, token)  # fmt: skip
    result = verify(
        files["out"], files["tmp"] / "in.reviewed.mp4.manifest.json", record=files["record"]
    )
    [check] = [c for c in result.checks if c.name == "approval"]
    assert check.ok is False and "edited after it was approved" in check.detail, check


def test_the_cli_serves_on_loopback_and_names_the_token_elsewhere(
    files: dict[str, Path],
) -> None:
    session = ReviewSession(files["src"], files["record"], files["out"])
    server = serve(session, "0.0.0.0:0")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert f"?token={session.token}" in server.url
        status, answer = request(server, "GET", "/api/state")
        assert status == 403
        status, answer = request(server, "GET", f"/api/state?token={session.token}")
        assert status == 200 and answer["frames"] == 40
    finally:
        server.shutdown()
        server.server_close()
        session.close()
    assert main(["review", str(files["src"]), str(files["record"])]) == 2


def test_veil_review_serve_runs_until_stopped(files: dict[str, Path]) -> None:
    """The command itself: prints its URL, serves the page and the API, stops on SIGTERM."""
    import signal
    import subprocess
    import sys
    import urllib.request

    command = [sys.executable, "-c", "import sys\nfrom veil.cli import main\nsys.exit(main())",
               "review", str(files["src"]), str(files["record"]), "--serve",
               "--listen", "127.0.0.1:0"]  # fmt: skip
    app = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert app.stdout is not None
        line = app.stdout.readline()
        url = line.split()[2]
        assert url.startswith("http://127.0.0.1:") and "in.reviewed.mp4" in line
        with urllib.request.urlopen(url + "api/state", timeout=30) as response:
            assert json.loads(response.read())["frames"] == 40
        with urllib.request.urlopen(url + "app.js", timeout=30) as response:
            assert b"X-Veil-Token" in response.read()
    finally:
        app.send_signal(signal.SIGTERM)
        app.wait(timeout=30)
    assert app.returncode == 0, app.stderr.read() if app.stderr else ""
