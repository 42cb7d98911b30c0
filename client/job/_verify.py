"""Checking an output against its manifest (``veil verify``): the signature, the output's
bytes and streams, the copied streams against the input's packets, the dropped picture
streams' absence, the input and the record, and a reviewer's sign-off. Every check is run and
reported, pass or fail, so a failed verification says everything that is wrong at once.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path

import av
import av.error
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from veil.core import RecordError, VeilError
from veil.media import packet_digests as read_digests
from veil.media import sha256_file

from ._documents import JsonObject, validate
from ._edits import describe
from ._provenance import canonical, default_record_path, key_id, load_public_key, raw_key
from ._record import Record


class VerificationError(VeilError):
    """An output does not match its manifest (or the manifest its signature)."""

    exit_code = 7


def packet_digests(path: Path) -> list[JsonObject]:
    """Per-stream packet count and payload sha256 of a file, packets only (nothing decoded).

    The same digests ``Input.demux`` computes while a job runs (empty packets skipped).
    """
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            digests = read_digests(container)
    except av.error.FFmpegError as exc:
        raise VerificationError(f"{path}: cannot be demuxed ({exc})") from exc
    return [d.to_json() for d in digests.values()]


@dataclass(frozen=True)
class Check:
    """One verification step: ``ok`` True (passed), False (failed) or None (a note)."""

    name: str
    ok: bool | None
    detail: str


@dataclass
class Verification:
    checks: list[Check] = field(default_factory=list)

    def add(self, name: str, ok: bool | None, detail: str) -> None:
        self.checks.append(Check(name, ok, detail))

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.ok is False]

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def signed(self) -> bool:
        """A signature was checked and is good (an unsigned manifest is only a note)."""
        return any(c.name == "signature" and c.ok for c in self.checks)


def _check_dropped(
    manifest: JsonObject, actual: dict[int, JsonObject], result: Verification
) -> None:
    """Picture streams left out at the user's request (``--drop-stream``): said so, never
    called copied, and checked absent (no output stream carries their packets)."""
    for entry in manifest.get("dropped_streams", []):
        kind = "attached picture" if entry.get("attached_picture") else "video"
        label = f"input {_stream_label(entry)}"
        found = [k for k, got in actual.items() if _same_packets(got, entry)]
        if found:
            result.add(
                label,
                False,
                f"the manifest says it was dropped, but output stream #{found[0]} carries its "
                "packets",
            )
        else:
            result.add(
                label,
                None,
                f"DROPPED ({kind} {entry.get('width')}x{entry.get('height')}, "
                f"{entry['packets']} packets, payload sha256 {entry['payload_sha256'][:16]}…): "
                "left out of the output at the user's request (--drop-stream), not copied",
            )


def _stream_label(entry: JsonObject) -> str:
    return f"stream #{entry['index']} ({entry['type']}, {entry['codec']})"


def _same_packets(a: JsonObject, b: JsonObject) -> bool:
    return a["packets"] == b["packets"] and a["payload_sha256"] == b["payload_sha256"]


def _kept(got: JsonObject, source: JsonObject, pair: JsonObject) -> bool:
    """Output stream ``got`` holds input stream ``source``'s packets: the same bytes; or, where
    the manifest names the bitstream filter the container applied (``bitstream_filter``), the
    same count of the same AAC frames (``aac_frames_sha256``: payloads less their ADTS
    framing) and the payload hash after the filter that the manifest states."""
    if "bitstream_filter" not in pair:
        return _same_packets(got, source)
    frames = source.get("aac_frames_sha256")
    return (
        got["packets"] == source["packets"]
        and frames is not None
        and got.get("aac_frames_sha256") == frames
        and got["payload_sha256"] == pair.get("payload_sha256")
    )


def _load_manifest(path: Path, result: Verification) -> JsonObject | None:
    try:
        manifest = json.loads(Path(path).read_bytes().decode("utf-8"))
    except OSError as exc:
        result.add("manifest", False, f"{path}: cannot be read ({exc.strerror or exc})")
        return None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        result.add("manifest", False, f"{path}: not JSON any more ({exc})")
        return None
    try:
        validate(manifest, "manifest", str(path))
    except RecordError as exc:
        result.add("manifest", False, str(exc))
        return None
    return manifest  # type: ignore[no-any-return]


def _check_signature(
    manifest: JsonObject,
    public_key: Ed25519PublicKey | None,
    result: Verification,
    *,
    required: bool,
) -> None:
    block = manifest.get("signature")
    if block is None:
        if required or public_key is not None:
            result.add("signature", False, "the manifest is not signed (make it with --sign-key)")
        else:
            result.add(
                "signature",
                None,
                "the manifest is not signed: the files match it, but nothing proves who made "
                "it (sign with --sign-key; --require-signature makes this a failure)",
            )
        return
    try:
        embedded = Ed25519PublicKey.from_public_bytes(base64.b64decode(block["public_key"]))
        value = base64.b64decode(block["value"], validate=True)
    except ValueError as exc:
        result.add("signature", False, f"the signature block is damaged ({exc})")
        return
    key, source = embedded, "the key named in the manifest; pin it with --public-key"
    if public_key is not None:
        if raw_key(public_key) != raw_key(embedded):
            result.add(
                "signature",
                False,
                f"signed by key {key_id(embedded)}, not by the given public key "
                f"{key_id(public_key)}",
            )
            return
        key, source = public_key, "the given public key"
    try:
        key.verify(value, canonical(manifest))
    except InvalidSignature:
        result.add(
            "signature",
            False,
            f"does not match the manifest's contents: the manifest was changed after it was "
            f"signed (key {key_id(key)})",
        )
        return
    result.add("signature", True, f"Ed25519, key {key_id(key)} ({source})")


def _check_approval(manifest: JsonObject, record: Path | None, result: Verification) -> None:
    """The manifest's sign-off: in a signed manifest (sign-off always signs), for this output,
    and, with the record, the record's latest approval, made on the record as it was
    rendered (no edit since)."""
    approval = manifest["approval"]
    who = f"{approval['who']} at {approval['when']}: {approval['statement']}"
    problems = []
    if not result.signed:
        problems.append("the manifest carrying it is not signed, or its signature fails")
    if approval["output_sha256"] != manifest["output"]["sha256"]:
        problems.append("it names another output than this manifest's")
    if record is not None:
        try:
            approved = Record.load(record)
        except VeilError as exc:
            approved = None
            problems.append(f"the record cannot be read ({exc})")
        if approved is not None:
            if not approved.approvals or approved.approvals[-1] != approval:
                problems.append("the record's latest approval is not this one")
            elif approved.rendered_sha256() != approval["record_sha256"]:
                problems.append("the record was edited after it was approved")
    if problems:
        result.add("approval", False, f"{who} ({'; '.join(problems)})")
    else:
        checked = "record and output" if record is not None else "output"
        result.add("approval", True, f"approved by {who} ({checked} as approved)")


def verify(
    output: Path | str,
    manifest_path: Path | str,
    *,
    input: Path | str | None = None,
    public_key: Path | str | None = None,
    record: Path | str | None = None,
    require_signature: bool = False,
) -> Verification:
    """Check ``output`` against its manifest; every check is run and reported, pass or fail.

    An unsigned manifest is a note (integrity checked, origin not proven), and a failure
    when ``require_signature`` or a ``public_key`` is given.

    Checks: the signature; the output's size, sha256 and per-stream packet hashes; that each
    copied (non-video) stream is the input's packets unchanged (from the signed input
    digests, and from ``input`` itself when given), and that no copied stream is a picture;
    that the picture streams the user dropped are in no output stream; the input's sha256
    (when given); the record's sha256 (``record``, else ``OUT.veil.json`` when it exists).
    """
    output, manifest_path = Path(output), Path(manifest_path)
    result = Verification()
    pinned = load_public_key(public_key) if public_key is not None else None
    manifest = _load_manifest(manifest_path, result)
    if manifest is None:
        return result
    _check_signature(manifest, pinned, result, required=require_signature)

    want = manifest["output"]
    if not output.is_file():
        result.add("output", False, f"{output}: no such file")
        return result
    size, sha = output.stat().st_size, sha256_file(output)
    if sha == want["sha256"] and size == want["size"]:
        result.add("output", True, f"sha256 {sha[:16]}…, {size} bytes, as the manifest says")
    else:
        result.add(
            "output",
            False,
            f"{output.name}: sha256 {sha[:16]}… ({size} bytes), the manifest says "
            f"{want['sha256'][:16]}… ({want['size']} bytes)",
        )
    try:
        actual = {s["index"]: s for s in packet_digests(output)}
    except VerificationError as exc:
        result.add("output streams", False, str(exc))
        actual = {}
    for claimed in want["streams"]:
        got = actual.get(claimed["index"])
        label = f"output {_stream_label(claimed)}"
        if got is None:
            result.add(label, False, "missing from the file")
        elif _same_packets(got, claimed):
            result.add(
                label, True, f"{got['packets']} packets, payload hashes as the manifest says"
            )
        else:
            result.add(
                label,
                False,
                f"{got['packets']} packets, payload sha256 {got['payload_sha256'][:16]}…; the "
                f"manifest says {claimed['packets']} packets, {claimed['payload_sha256'][:16]}…",
            )

    inputs = {s["index"]: s for s in manifest.get("input_streams", [])}
    in_actual: dict[int, JsonObject] | None = None
    if input is not None:
        input = Path(input)
        in_sha = sha256_file(input) if input.is_file() else None
        if in_sha is not None and in_sha == manifest["input_sha256"]:
            result.add("input", True, f"{input.name}: sha256 {in_sha[:16]}…, as the manifest says")
            in_actual = {s["index"]: s for s in packet_digests(input)}
        else:
            result.add(
                "input",
                False,
                f"{input.name}: sha256 {(in_sha or 'missing')[:16]}…, the manifest names input "
                f"{manifest['input_sha256'][:16]}…",
            )
    copied = manifest.get("copied_streams")
    if copied is None:
        result.add("copied streams", False, "the manifest does not map input to output streams")
        copied = []
    for pair in copied:
        source, got = inputs.get(pair["input"]), actual.get(pair["output"])
        if source is None:
            result.add(f"input stream #{pair['input']}", False, "not described by the manifest")
            continue
        label = f"{source['type']} {_stream_label(source)} -> output #{pair['output']}"
        problems = []
        if source["type"] == "video":  # a picture copied as packets: its faces never masked
            problems.append("a picture stream copied as packets: its faces were never masked")
        if got is None or not _kept(got, source, pair):
            problems.append(
                "the output's packets are not the input's packets as the manifest records them"
                + ("" if got is None else f" ({got['packets']} vs {source['packets']} packets)")
            )
        if in_actual is not None:
            real = in_actual.get(pair["input"])
            if real is None or got is None or not _kept(got, real, pair):
                problems.append("the output's packets differ from the given input file's")
        if problems:
            result.add(label, False, "; ".join(problems))
        else:
            checked = "the given input and " if in_actual is not None else ""
            how = "copied unchanged"
            if "bitstream_filter" in pair:
                how = (
                    f"with the input's AAC frames unchanged, their ADTS framing changed by "
                    f"{pair['bitstream_filter']} as the output container requires"
                )
            result.add(
                label,
                True,
                f"{source['packets']} packets {how} (checked against {checked}the manifest's "
                "input digests)",
            )

    _check_dropped(manifest, actual, result)

    record_path = Path(record) if record is not None else default_record_path(output)
    if record is not None or record_path.is_file():
        rec_sha = sha256_file(record_path) if record_path.is_file() else None
        if rec_sha is not None and rec_sha == manifest["record_sha256"]:
            result.add(
                "record", True, f"{record_path.name}: sha256 {rec_sha[:16]}…, as the manifest says"
            )
        else:
            result.add(
                "record",
                False,
                f"{record_path.name}: sha256 {(rec_sha or 'missing')[:16]}…, the manifest says "
                f"{manifest['record_sha256'][:16]}…",
            )
    else:
        result.add("record", None, "not checked (pass --record REC)")
    if "approval" in manifest:
        _check_approval(manifest, record_path if record_path.is_file() else None, result)

    detector = manifest.get("detector") or {}
    if detector:
        result.add(
            "detector",
            None,
            f"{detector.get('model')} weights sha256 {str(detector.get('weights_sha256'))[:16]}…, "
            f"threshold {detector.get('score_threshold')}",
        )
    for edit in manifest.get("edits", []):
        name = "SUPPRESSED by reviewer" if edit["action"] == "suppress" else "reviewer edit"
        result.add(name, None, describe(edit))
    return result
