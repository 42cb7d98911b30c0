"""``veil live``'s fast checks (issue 4): source and sink URLs and the formats they get, unknown
schemes and protocols the FFmpeg build lacks (SRT) named in the error, the client importing
without prometheus-client, and the ``--metrics`` endpoint.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import av
import pytest
from live_detectors import _Fixed
from live_loopback import free_udp_port

from veil.live import run_live
from veil.live._endpoints import sink_endpoint, source_endpoint
from veil.media import ProtocolError

pytestmark = pytest.mark.timeout(600)

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("text", "fmt"),
    [
        ("udp://127.0.0.1:9000", "mpegts"),
        ("srt://127.0.0.1:9000", "mpegts"),
        ("rtmp://host/app/key", "flv"),
        ("rtsp://host:8554/cam", "rtsp"),
        ("out.m3u8", "hls"),
        ("out.ts", "mpegts"),
    ],
)
def test_sink_formats(text: str, fmt: str) -> None:
    assert sink_endpoint(text).format == fmt


def test_udp_sink_gets_ts_sized_datagrams() -> None:
    assert sink_endpoint("udp://127.0.0.1:9000").url.endswith("?pkt_size=1316")


def test_unknown_scheme_is_a_clear_error() -> None:
    with pytest.raises(ProtocolError, match="'gopher'"):
        source_endpoint("gopher://host/1")
    with pytest.raises(ProtocolError, match="'ftp'"):
        sink_endpoint("ftp://host/out.ts")


def test_missing_protocol_names_it(tmp_path: Path) -> None:
    """The PyAV wheel's FFmpeg has no libsrt: an SRT source or sink fails saying so."""
    try:
        av.open("srt://127.0.0.1:1?timeout=1", timeout=1)
    except av.error.ProtocolNotFoundError:
        pass
    except Exception:
        pytest.skip("this FFmpeg build has an srt protocol")
    summary_path = tmp_path / "r.jsonl"
    with pytest.raises(ProtocolError, match="no 'srt' protocol"):
        run_live(
            "srt://127.0.0.1:1", str(tmp_path / "o.ts"), detector=_Fixed(), record=summary_path
        )
    assert json.loads(summary_path.read_text().splitlines()[-1])["summary"]["frames_out"] == 0


def test_client_imports_without_prometheus(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['prometheus_client'] = None\n"
        "import veil.live, veil.cli\n"
        "from veil.live._stats import _start_metrics, LiveStats\n"
        "try:\n    _start_metrics('127.0.0.1:0', LiveStats())\n"
        "except veil.ConfigError as e:\n    print('ERR', e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "ERR --metrics needs prometheus-client" in out.stdout


def test_metrics_endpoint(tmp_path: Path) -> None:
    pytest.importorskip("prometheus_client")
    import urllib.request

    from mediagen import make_clip

    from veil.live._stats import LiveStats, _start_metrics

    stats = LiveStats()
    stats.stride = 3
    port = free_udp_port()  # a free number; TCP and UDP spaces are distinct but both free here
    server = _start_metrics(f"127.0.0.1:{port}", stats)
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
    finally:
        server.shutdown()
    text = body.decode()
    for name in (
        "veil_live_lag_seconds",
        "veil_live_stride 3.0",
        "veil_live_frames_masked_by_policy_total",
        "veil_live_frames_dropped",
    ):
        assert name in text, name
    del make_clip
