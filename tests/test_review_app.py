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
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from chromium import DevTools, Tab, chromium_path
from mediagen import make_clip
from test_edits import ScriptedDetector

import veil
from veil import DetectionConfig
from veil.cli import main
from veil.job._provenance import keygen
from veil.job._record import Record
from veil.job._verify import verify
from veil.review import ReviewSession, serve

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


def test_every_read_but_the_page_s_own_files_needs_the_token(
    app: Any, files: dict[str, Path]
) -> None:
    """Another local user (no token) gets neither the page (it holds the token) nor a
    picture (faces unmasked); the script, style and icon hold neither."""
    token = app.session.token
    for path in ("/", "/api/state", "/api/frame?frame=3&view=original", "/api/thumb?track=1"):
        status, answer = request(app, "GET", path)
        assert status == 403 and "token" in answer["error"], path
        status, _ = request(app, "GET", path + ("&" if "?" in path else "?") + f"token={token}")
        assert status == 200, path
    for path in ("/app.js", "/app.css", "/icon.svg"):
        status, body = request(app, "GET", path)
        assert status == 200 and token.encode() not in body, path
    status, answer = request(
        app, "GET", f"/api/state?token={token}", headers={"Host": "evil.example:80"}
    )
    assert status == 403 and "evil.example" in answer["error"]


def test_only_the_app_and_its_api_are_served(app: Any, files: dict[str, Path]) -> None:
    status, page = request(app, "GET", f"/?token={app.session.token}")
    assert status == 200 and app.session.token.encode() in page
    token = {"X-Veil-Token": app.session.token}
    for path in (
        "/etc/passwd",
        "/../in.veil.json",
        "/%2e%2e/in.mp4",
        "/review_app/app.js",
        "/api/frame/../../in.veil.json",
        "/in.mp4",
    ):
        status, answer = request(app, "GET", path, headers=token)
        assert status == 404 and set(answer) == {"error"}, path  # an error, no file's bytes
    status, answer = request(app, "GET", "/api/frame?frame=999", headers=token)
    assert status == 404
    status, answer = request(app, "GET", "/api/frame?frame=x", headers=token)
    assert status == 400
    status, answer = request(app, "GET", "/api/frame?frame=3&view=../in.mp4", headers=token)
    assert status == 400
    status, answer = request(app, "POST", "/api/edit", b"{not json", token)
    assert status == 400
    status, answer = request(app, "POST", "/api/edit", {"action": "suppress"}, token)
    assert status == 400 and "missing" in answer["error"]
    status, answer = request(
        app, "POST", "/api/edit", {"action": "trim", "track": 1, "first": 9, "last": 2,
                                   "who": "A", "why": "a range turned round",
                                   "confirm": True}, token,
    )  # fmt: skip
    assert status == 422 and "not a range" in answer["error"]
    status, _ = request(app, "GET", "/api/state", headers=token)
    assert status == 200  # still serving after the garbage


def test_suppressing_a_confident_track_needs_a_confirmation_and_a_reason(
    app: Any, files: dict[str, Path]
) -> None:
    token = {"X-Veil-Token": app.session.token}
    ask = {"action": "suppress", "track": 1, "who": "A", "why": "not a face"}
    status, answer = request(app, "POST", "/api/edit", ask, token)
    assert status == 409 and answer["warning"] and "scored 0.95" in answer["error"]
    status, answer = request(app, "POST", "/api/edit", ask | {"confirm": True, "why": "no"}, token)
    assert status == 400 and "at least 10 characters" in answer["error"]
    # trimming the confident detections away is the same decision
    trim = {"action": "trim", "track": 1, "first": 0, "last": 5, "who": "A", "why": "no"}
    status, answer = request(app, "POST", "/api/edit", trim, token)
    assert status == 409 and answer["warning"] and "trimming track 1" in answer["error"]
    assert Record.load(files["record"]).edits == []
    why = "a mannequin in the shop window"
    status, _ = request(app, "POST", "/api/edit", trim | {"confirm": True, "why": why}, token)
    assert status == 200
    # a second trim outside the first would leave nothing: that is a suppression, refused
    again = trim | {"first": 20, "last": 30, "confirm": True, "why": why}
    status, answer = request(app, "POST", "/api/edit", again, token)
    assert status == 422 and "outside track 1's frames 0-5" in answer["error"]
    # boxes for the trimmed track would be trimmed too: refused, a new track is asked for
    boxes = {"action": "add_boxes", "track": 1, "who": "A", "why": "the face again",
             "keyframes": [{"frame": 30, "box": [40, 50, 110, 130]}]}  # fmt: skip
    status, answer = request(app, "POST", "/api/edit", boxes, token)
    assert status == 422 and "add them as a new track" in answer["error"]
    status, answer = request(app, "POST", "/api/edit", boxes | {"track": None}, token)
    assert status == 200 and answer["edit"]["track"] == 3


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
    # a manifest changed after the render (here: its output's size) is not signed off
    manifest_file = files["tmp"] / "in.reviewed.mp4.manifest.json"
    rendered = manifest_file.read_bytes()
    tampered = json.loads(rendered)
    tampered["output"]["size"] += 1
    manifest_file.write_text(json.dumps(tampered))
    status, answer = request(app, "POST", "/api/signoff", sign, token)
    assert status == 422 and "does not verify" in answer["error"]
    manifest_file.write_bytes(rendered)
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


def test_bound_elsewhere_the_page_loads_with_the_token_in_its_url(
    files: dict[str, Path],
) -> None:
    session = ReviewSession(files["src"], files["record"], files["out"])
    server = serve(session, "0.0.0.0:0")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert server.url.endswith(f"/?token={session.token}")
        status, answer = request(server, "GET", "/api/state")
        assert status == 403
        for path in ("/?token=" + session.token, "/app.js", "/app.css", "/icon.svg"):
            assert request(server, "GET", path)[0] == 200, path
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
        base, _, query = url.partition("?")
        with urllib.request.urlopen(f"{base}api/state?{query}", timeout=30) as response:
            assert json.loads(response.read())["frames"] == 40
        with urllib.request.urlopen(base + "app.js", timeout=30) as response:
            assert b"X-Veil-Token" in response.read()
    finally:
        app.send_signal(signal.SIGTERM)
        app.wait(timeout=30)
    assert app.returncode == 0, app.stderr.read() if app.stderr else ""


def _numbered(path: Path, options: dict[str, str], frames: int = 60) -> Path:
    """A clip whose frame ``i`` carries ``4 i`` in its top-left corner."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=Fraction(25), options=options)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        for i in range(frames):
            picture = np.full((120, 160, 3), 128, np.uint8)
            picture[:16, :16] = 4 * i
            picture[40:80, 40:120] = (i * 37) % 256  # something for the encoder to move
            out.mux(stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")))
        out.mux(stream.encode())
    return path


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("gops.mp4", {"g": "10", "bf": "3"}),
        ("open-gop.mp4", {"g": "10", "bf": "3", "x264-params": "open-gop=1"}),
        ("stream.ts", {"g": "10", "bf": "2"}),
        ("bframes.avi", {"g": "10", "bf": "2"}),
    ],
)
def test_every_frame_shown_is_the_frame_the_record_numbers(
    tmp_path: Path, name: str, options: dict[str, str]
) -> None:
    """Frame-accurate in any order (jumps back and forth, steps): frame ``i`` as the app
    decodes it is frame ``i`` as veil's reader (and so the record) numbers it, whether the
    container seeks true (MP4 with B-frames, an open GOP) or not (MPEG-TS; AVI, whose
    timestamps the reader repairs)."""
    clip = _numbered(tmp_path / name, options)
    from veil.media import DecodedFrame, Frames, Input, probe

    with Input(clip, probe(clip)) as reader:
        pts = [i.frame.pts for i in reader.demux() if isinstance(i, DecodedFrame)]
    frames = Frames(clip, pts)
    order = [*range(0, 60, 7), 59, 3, 4, 5, 33, 32, 31, 0, 58, 12, 13, 14, 15, 40, 1]
    for i in order:
        corner = frames.get(i).to_ndarray(format="rgb24")[:16, :16].astype(float).mean()
        assert abs(corner - 4 * i) < 4, (name, i, corner)
    frames.close()
