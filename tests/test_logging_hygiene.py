"""No frame data and no tokens in the server's logs (issue 9, hardening).

A server with token auth and TLS runs with every logger at DEBUG (veil's, gRPC's, the root)
through auth failures (no token, wrong token, wrong scope), bad requests (garbage image
bytes, undecodable protobuf, a broken stream), a backend failure, and a normal hybrid job.
All log output is captured and searched for the token strings, for the image bytes sent (as
raw bytes, their repr, hex and base64), and for any long base64- or hex-looking blob.
"""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from veil import DetectorSettings, fit_size
from veil.remote import ChannelOptions, RemoteDetector, RemoteError
from veil.v1 import detection_pb2 as pb
from veil.v1 import detection_pb2_grpc as pb_grpc
from veil.wire import Encoding, frame_message

pytestmark = pytest.mark.weights  # the fetched detector weights (make models)

SECRET = "tok-7f3a9c1e5b2d8f4a6c0e9b7d5f3a1c8e"
JOB_ONLY = "tok-jobonly-0b1c2d3e4f5a6b7c8d9e0f1a2b3c"
WRONG = "tok-wrong-9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c"
DISPLAY = (1280, 720)
SIZE = fit_size(*DISPLAY, 640)
BLOB = re.compile(r"[A-Za-z0-9+/=_-]{120,}|(?:[0-9a-fA-F]{2}){64,}|(?:\\x[0-9a-f]{2}){16,}")


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))  # the message with its traceback, as written


@pytest.fixture
def captured() -> Iterator[_Capture]:
    handler = _Capture()
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)


def picture(seed: int) -> Any:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (SIZE[1], SIZE[0], 3), np.uint8)


def test_logs_hold_no_tokens_and_no_frame_data(
    veil_server: Callable[..., Any],
    tls_files: dict[str, Path],
    tmp_path: Path,
    captured: _Capture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GRPC_VERBOSITY", "DEBUG")  # harmless if gRPC core read it already
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{SECRET} edge detect\n{JOB_ONLY} batch job\n")
    server = veil_server(
        tls_cert=tls_files["server_cert"], tls_key=tls_files["server_key"], token_file=tokens
    )
    url = f"grpcs://localhost:{server.port}"
    sent: list[bytes] = []

    def remote(token: str | None, **options: Any) -> RemoteDetector:
        from veil.remote import RetryPolicy

        return RemoteDetector(
            url,
            DetectorSettings(max_side=640),  # picture() is scaled to 640
            ChannelOptions(
                tls_ca=tls_files["ca"], token=token, retry=RetryPolicy(attempts=1), **options
            ),
        )

    for token in (None, WRONG, JOB_ONLY):  # auth failures
        with pytest.raises(RemoteError):
            remote(token)

    credentials = grpc.ssl_channel_credentials(tls_files["ca"].read_bytes())
    metadata = (("authorization", f"Bearer {SECRET}"),)
    with grpc.secure_channel(f"localhost:{server.port}", credentials) as channel:
        stub = pb_grpc.DetectionServiceStub(channel)
        bad_png = frame_message(picture(1), DISPLAY, index=0, encoding=Encoding.PNG)
        bad_png.data = bad_png.data[: len(bad_png.data) // 2]  # truncated PNG
        bad_raw = frame_message(picture(2), DISPLAY, index=0, encoding=Encoding.RAW)
        bad_raw.width = 600  # not fit_size
        for bad in (bad_png, bad_raw):
            sent.append(bad.data)
            with pytest.raises(grpc.RpcError):
                stub.Detect(pb.DetectRequest(frames=[bad]), timeout=30, metadata=metadata)
        garbage = pb.DetectRequest(frames=[bad_png]).SerializeToString()[:-7]
        with pytest.raises(grpc.RpcError):  # undecodable protobuf
            channel.unary_unary("/veil.v1.DetectionService/Detect")(
                garbage, timeout=30, metadata=metadata
            )
        with pytest.raises(grpc.RpcError):  # a stream that breaks its protocol mid-way
            frames = [frame_message(picture(3), DISPLAY, index=i) for i in (4, 4)]
            sent.extend(f.data for f in frames)
            list(
                stub.DetectStream(
                    iter(
                        [pb.DetectStreamRequest(start=pb.StreamStart())]
                        + [pb.DetectStreamRequest(frame=f) for f in frames]
                    ),
                    timeout=30,
                    metadata=metadata,
                )
            )
        # A backend failure (logged with its traceback, server-side).
        [backend] = server._backends.values()
        original = backend.infer

        def broken(batch: Any) -> Any:
            raise RuntimeError("simulated backend failure")

        backend.infer = broken  # the _Shared wrapper: only this server sees it
        try:
            with pytest.raises(grpc.RpcError) as caught:
                failing = frame_message(picture(4), DISPLAY, index=0)
                sent.append(failing.data)
                stub.Detect(pb.DetectRequest(frames=[failing]), timeout=30, metadata=metadata)
            assert caught.value.code() is grpc.StatusCode.INTERNAL  # type: ignore[attr-defined]
        finally:
            backend.infer = original

    # A normal hybrid job (PNG frames over a stream).
    with remote(SECRET) as detector:
        images = [picture(10 + i) for i in range(3)]
        assert len(detector.detect(images, [DISPLAY] * 3)) == 3
        sent.extend(frame_message(i, DISPLAY, index=0, encoding=Encoding.PNG).data for i in images)

    text = "\n".join(captured.lines)
    assert "refused /veil.v1.DetectionService/GetModelInfo" in text  # auth failures were logged
    assert "simulated backend failure" in text  # ... and the backend's traceback
    assert len(captured.lines) > 10
    for token in (SECRET, JOB_ONLY, WRONG):
        assert token not in text
        assert token[4:20] not in text  # nor a recognisable part of one
    for data in sent:
        chunk = data[100:132]
        for form in (repr(chunk)[2:-1], chunk.hex(), base64.b64encode(data[99:147]).decode()):
            assert form not in text
    blobs = BLOB.findall(text)
    assert not blobs, f"binary-looking blobs in the logs: {[b[:60] for b in blobs]}"
