"""Signed provenance: a signed manifest verifies; one byte changed in the output, the audio
packets, the record or the manifest makes ``veil verify`` fail and name exactly what failed."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import av
import pytest
from mediagen import make_clip

import veil
from veil import DetectionConfig
from veil.cli import main
from veil.job._provenance import canonical
from veil.job._verify import verify

FAST = DetectionConfig.from_preset("fast")


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("signed")
    src = make_clip(tmp / "in.mp4", frames=12, audio="aac")
    assert main(["keygen", "-o", str(tmp / "site.key")]) == 0
    out = tmp / "out.mp4"
    assert (
        main(
            [
                "anonymize",
                "-q",
                str(src),
                "-o",
                str(out),
                "--preset",
                "fast",
                "--sign-key",
                str(tmp / "site.key"),
            ]
        )
        == 0
    )
    return {
        "src": src,
        "out": out,
        "record": tmp / "out.mp4.veil.json",
        "manifest": tmp / "out.mp4.manifest.json",
        "key": tmp / "site.key",
        "pub": tmp / "site.key.pub",
        "tmp": tmp,
    }


def _copy(signed: dict[str, Path], dest: Path) -> dict[str, Path]:
    files = {k: dest / v.name for k, v in signed.items() if k in ("out", "record", "manifest")}
    for key, path in files.items():
        shutil.copyfile(signed[key], path)
    return {**signed, **files}


def _flip_in_packet(path: Path, kind: str) -> None:
    """Change one byte in the middle of a packet of the first ``kind`` stream."""
    with av.open(str(path)) as container:
        stream = next(s for s in container.streams if s.type == kind)
        packet = next(p for p in container.demux(stream) if p.size > 16 and p.pos is not None)
        offset = packet.pos + packet.size // 2
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def _flip_record_byte(path: Path) -> None:
    data = path.read_bytes()
    i = data.index(b'"name":"in.mp4"') + len(b'"name":"in.mp')
    path.write_bytes(data[:i] + b"5" + data[i + 1 :])


def _flip_manifest_byte(path: Path) -> None:
    text = path.read_text()
    path.write_text(text.replace('"name":"out.mp4"', '"name":"out.mp5"', 1))


def _run_verify(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str], *extra: str
) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(
        [
            "verify",
            str(files["out"]),
            str(files["manifest"]),
            "--input",
            str(files["src"]),
            "--public-key",
            str(files["pub"]),
            *extra,
        ]
    )
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


@pytest.mark.weights
def test_the_manifest_binds_everything(signed: dict[str, Path]) -> None:
    manifest = json.loads(signed["manifest"].read_text())
    record = veil.Record.load(signed["record"])
    assert manifest["input_sha256"] == record.input["sha256"]
    assert manifest["input_streams"] == record.input["streams"]
    assert manifest["record_sha256"] == record.file_sha256
    assert manifest["detector"]["weights_sha256"] == record.detector["weights_sha256"]
    assert manifest["tracker"] == record.tracker.to_json()
    assert manifest["copied_streams"] == [{"input": 1, "output": 1}]
    assert {"style", "encoder", "veil_version", "output"} <= manifest.keys()
    assert manifest["signature"]["algorithm"] == "ed25519"
    # the signature covers the content, not the bytes: key order does not matter
    shuffled = dict(reversed(list(manifest.items())))
    assert canonical(shuffled) == canonical(manifest)


@pytest.mark.weights
def test_an_untouched_output_verifies(
    signed: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, err = _run_verify(signed, capsys)
    assert rc == 0, out + err
    assert "FAILED" not in out
    assert "ok      audio stream #1 (audio, aac) -> output #1: " in out
    assert "ok      record: out.mp4.veil.json" in out
    assert out.strip().splitlines()[-1] == f"{signed['out']}: integrity and signature verified"


@pytest.mark.weights
@pytest.mark.parametrize(
    ("tamper", "failed"),
    [
        (
            lambda f: _flip_in_packet(f["out"], "video"),
            ["output", "output stream #0 (video, h264)"],
        ),
        (
            lambda f: _flip_in_packet(f["out"], "audio"),
            [
                "output",
                "output stream #1 (audio, aac)",
                "audio stream #1 (audio, aac) -> output #1",
            ],
        ),
        (lambda f: _flip_record_byte(f["record"]), ["record"]),
        (lambda f: _flip_manifest_byte(f["manifest"]), ["signature"]),
    ],
    ids=["output", "audio-packets", "record", "manifest"],
)
def test_one_changed_byte_fails_and_says_which(
    signed: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    tamper: Callable[[dict[str, Path]], None],
    failed: list[str],
) -> None:
    files = _copy(signed, tmp_path)
    tamper(files)
    result = verify(files["out"], files["manifest"], input=files["src"], public_key=files["pub"])
    assert [c.name for c in result.failed] == failed
    rc, _, err = _run_verify(files, capsys)
    assert rc == 7
    assert err.strip() == f"veil: verify failed: {', '.join(failed)}"


@pytest.mark.weights
def test_another_key_is_refused(
    signed: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keygen", "-o", str(tmp_path / "other.key")]) == 0
    rc, out, _ = _run_verify({**signed, "pub": tmp_path / "other.key.pub"}, capsys)
    assert rc == 7
    assert "FAILED  signature: signed by key" in out and "not by the given public key" in out


@pytest.mark.parametrize(
    ("extra", "rc", "last_line"),
    [
        ([], 0, "{out}: integrity verified, not signed"),
        (["--require-signature"], 7, "veil: verify failed: signature"),
        (["--public-key", "{pub}"], 7, "veil: verify failed: signature"),
    ],
    ids=["integrity-only", "signature-required", "key-pinned"],
)
@pytest.mark.weights
def test_an_unsigned_manifest_verifies_integrity_and_says_it_is_not_signed(
    signed: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    rc: int,
    last_line: str,
) -> None:
    """Bug: a valid unsigned output said "verify failed" (exit 7) though every integrity
    check passed. Unsigned is now a note (exit 0) unless a signature is asked for."""
    files = _copy(signed, tmp_path)
    manifest = json.loads(files["manifest"].read_text())
    del manifest["signature"]
    files["manifest"].write_text(json.dumps(manifest))
    result = verify(files["out"], files["manifest"], input=files["src"])
    assert result.ok and not result.signed
    (note,) = [c for c in result.checks if c.name == "signature"]
    assert note.ok is None and "not signed" in note.detail
    required = verify(files["out"], files["manifest"], require_signature=True)
    assert [c.name for c in required.failed] == ["signature"]
    assert "not signed" in required.failed[0].detail

    capsys.readouterr()
    args = [a.format(pub=files["pub"]) for a in extra]
    code = main(
        ["verify", str(files["out"]), str(files["manifest"]), "--input", str(files["src"]), *args]
    )
    captured = capsys.readouterr()
    assert code == rc, captured.out + captured.err
    assert "FAILED" not in captured.out.replace("FAILED  signature", "")  # integrity all ok
    shown = (captured.err or captured.out).strip().splitlines()[-1]
    assert shown == last_line.format(out=files["out"])


@pytest.mark.weights
def test_the_wrong_input_is_named(signed: dict[str, Path], tmp_path: Path) -> None:
    other = make_clip(tmp_path / "other.mp4", frames=13, audio="aac")
    result = verify(signed["out"], signed["manifest"], input=other, public_key=signed["pub"])
    assert [c.name for c in result.failed] == ["input"]


@pytest.mark.weights
def test_keygen_never_overwrites(
    signed: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    before = signed["key"].read_bytes()
    assert main(["keygen", "-o", str(signed["key"])]) == 5
    assert "already exists" in capsys.readouterr().err
    assert signed["key"].read_bytes() == before
    assert signed["key"].stat().st_mode & 0o077 == 0


def test_a_bad_sign_key_fails_before_any_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = make_clip(tmp_path / "in.mp4", frames=4)
    (tmp_path / "bad.key").write_text("not a key")
    rc = main(
        [
            "anonymize",
            "-q",
            str(src),
            "-o",
            str(tmp_path / "out.mp4"),
            "--preset",
            "fast",
            "--sign-key",
            str(tmp_path / "bad.key"),
        ]
    )
    assert rc == 2
    assert "not an unencrypted PEM private key" in capsys.readouterr().err
    assert not (tmp_path / "out.mp4").exists()
