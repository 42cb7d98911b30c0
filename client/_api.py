"""The public Python API (``veil.anonymize``, ``veil.detect``, ``veil.render``; ``veil``
re-exports it): paths checked and replaced all or nothing, the detector opened and closed, and
``veil.job``'s detect and render jobs run with a preset's settings."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from veil.core import Detector, DetectorError, LowLightPass
from veil.job import (
    DetectionConfig,
    DetectorSettings,
    JobResult,
    Record,
    Signer,
    VideoOptions,
    default_record_path,
    detect_job,
    manifest_path,
    render_job,
)
from veil.mask import Style
from veil.media import EncoderSettings, check_paths, probe, replacing


def open_detector(
    settings: DetectorSettings, *, url: str | None = None, channel: Any = None
) -> Detector:
    """The detector for ``settings``: in process (onnxruntime), or on the veil server at
    ``url`` (``grpc[s]://HOST:PORT``, hybrid mode) reached with ``channel``
    (``veil.remote.ChannelOptions``; None: defaults)."""
    if url is not None:
        from veil.remote import RemoteDetector

        return RemoteDetector(url, settings, channel)
    try:
        from veil.server.engine import load_detector
    except ImportError as exc:
        raise DetectorError(
            f"the in-process detector needs onnxruntime ({exc}); install veil[local]"
        ) from exc
    try:
        return load_detector(
            settings.model,
            max_side=settings.max_side,
            score_threshold=settings.model_threshold,
            nms_threshold=settings.nms_threshold,
            provider=settings.provider,
            flip=settings.flip,
            tiles=settings.tiles,
        )
    except (OSError, RuntimeError, ValueError) as exc:
        raise DetectorError(f"cannot load detector {settings.model!r}: {exc}") from exc


def client_passes(detector: Detector, settings: DetectorSettings) -> Detector:
    """``detector`` with the passes that run in the client whichever detector answers (in
    process, hybrid or a cloud job's), as ``settings`` asks: the low-light pass, its second
    opinions counted from the new-track threshold."""
    return LowLightPass(detector, settings.score_threshold) if settings.low_light else detector


def _detect_job(
    input: Path,
    config: DetectionConfig,
    detector: Detector | None,
    *,
    record_path: Path | None,
    drop_streams: Sequence[int],
    progress: bool,
    output: Path | None = None,
    video: VideoOptions | None = None,
) -> JobResult:
    """A detection job with ``config``'s settings, on ``detector`` or one opened (and closed)
    here, with the passes that run in the client whichever detector answers."""
    owned = detector is None
    if owned:
        # A bad input, or a picture stream not dropped, is named before the model loads.
        probe(input, drop=drop_streams)
    detector = detector or open_detector(config.detector)
    try:
        return detect_job(
            Path(input),
            detector=client_passes(detector, config.detector),
            tracker=config.tracker_for_run,
            batch_size=config.detector.batch_size,
            stride=config.detector.stride,
            preset=config.choice,
            drop_streams=drop_streams,
            record_path=record_path,
            output=output,
            video=video,
            progress=progress,
        )
    finally:
        if owned:
            detector.close()


def _video(
    style: Style | None,
    encoder: EncoderSettings | None,
    sign_key: Path | str | None,
    manifest: Path,
) -> VideoOptions:
    """The output video's options from the public functions' arguments (None: defaults);
    the signing key is read here, so a bad key is refused before any work."""
    return VideoOptions(
        style=style or Style(),
        encoder=encoder or EncoderSettings(),
        signer=None if sign_key is None else Signer.load(sign_key),
        manifest=manifest,
    )


def detect(
    input: Path | str,
    record: Path | str | None = None,
    *,
    config: DetectionConfig | None = None,
    detector: Detector | None = None,
    progress: bool = False,
    overwrite: bool = False,
    drop_streams: Sequence[int] = (),
) -> Record:
    """Find and track every face in ``input``; write the record to ``record`` if given.

    An existing ``record`` is replaced only with ``overwrite`` (else :class:`OutputExists`,
    a ``ConfigError`` and ``FileExistsError``), and is removed if the run then fails; a record
    that is the input itself is a ``ConfigError``. ``drop_streams``: as for :func:`anonymize`.
    """
    record_path = None if record is None else Path(record)
    writes = [] if record_path is None else [("record", record_path)]
    check_paths([("input", Path(input))], writes, overwrite=overwrite)
    with replacing([path for _, path in writes], overwrite=overwrite):
        result = _detect_job(
            Path(input),
            config or DetectionConfig(),
            detector,
            record_path=record_path,
            progress=progress,
            drop_streams=drop_streams,
        )
    return result.record


def render(
    input: Path | str,
    record: Record | Path | str,
    output: Path | str,
    *,
    style: Style | None = None,
    encoder: EncoderSettings | None = None,
    progress: bool = False,
    sign_key: Path | str | None = None,
    manifest: Path | str | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Mask ``input`` as ``record`` says (reviewer edits applied); writes ``output`` and its
    manifest (``manifest``, default ``output.manifest.json``), signed with ``sign_key``.

    Existing files are replaced only with ``overwrite`` (else :class:`OutputExists`), and
    removed if the run then fails; two of input, record, output and manifest that are one
    file are a ``ConfigError``.
    """
    output = Path(output)
    manifest_out = manifest_path(output) if manifest is None else Path(manifest)
    reads = [("input", Path(input))]
    if not isinstance(record, Record):
        reads.append(("record", Path(record)))
    writes = [("output", output), ("manifest", manifest_out)]
    check_paths(reads, writes, overwrite=overwrite)
    video = _video(style, encoder, sign_key, manifest_out)
    if not isinstance(record, Record):
        record = Record.load(Path(record))
    with replacing([path for _, path in writes], overwrite=overwrite):
        result = render_job(Path(input), record, output, video=video, progress=progress)
    assert result.manifest is not None
    return result.manifest


def anonymize(
    input: Path | str,
    output: Path | str,
    *,
    record: Path | str | None = None,
    write_record: bool = True,
    config: DetectionConfig | None = None,
    detector: Detector | None = None,
    style: Style | None = None,
    encoder: EncoderSettings | None = None,
    progress: bool = False,
    sign_key: Path | str | None = None,
    manifest: Path | str | None = None,
    overwrite: bool = False,
    drop_streams: Sequence[int] = (),
) -> JobResult:
    """Detect, track and mask in one pass; the record goes beside ``output`` by default.
    The manifest (``manifest``, default ``output.manifest.json``) is signed with ``sign_key``.

    Existing files are replaced only with ``overwrite`` (else :class:`OutputExists`), and
    removed if the run then fails; two of input, output, record and manifest that are one
    file are a ``ConfigError``.

    Only the main video is masked, and no other picture stream is ever copied unmasked: an
    input with another (a second camera, cover art, a thumbnail track) raises ``InputError``
    unless ``drop_streams`` names each one, to be left out (the record and manifest say so).
    """
    output = Path(output)
    record_path = None
    if write_record:
        record_path = Path(record) if record is not None else default_record_path(output)
    manifest_out = manifest_path(output) if manifest is None else Path(manifest)
    writes = [("output", output), ("manifest", manifest_out)]
    if record_path is not None:
        writes.insert(1, ("record", record_path))
    check_paths([("input", Path(input))], writes, overwrite=overwrite)
    video = _video(style, encoder, sign_key, manifest_out)
    with replacing([path for _, path in writes], overwrite=overwrite):
        return _detect_job(
            Path(input),
            config or DetectionConfig(),
            detector,
            record_path=record_path,
            drop_streams=drop_streams,
            progress=progress,
            output=output,
            video=video,
        )
