"""Signed provenance: Ed25519 signatures on render manifests, and checking an output against one.

A manifest binds an output to everything that made it (input and per-stream packet hashes,
record sha256, detector with weights sha256, tracker, style, encoder, edits, veil version)
and to its own bytes and per-stream packet hashes. The signature covers the manifest's
canonical JSON: every field but ``signature``, keys sorted, no spaces, UTF-8. So a verifier
needs no byte-exact copy of the file, only its content.

Keys are PEM files: PKCS#8 private keys (unencrypted; protect them as files, mode 0600) and
SubjectPublicKeyInfo public keys, as ``openssl genpkey -algorithm ed25519`` writes them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import av.error
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from veil.core import ConfigError, OutputError, RecordError, VeilError
from veil.media import packet_digests as read_digests
from veil.media import sha256_file

from ._edits import describe
from ._record import Record, validate

ALGORITHM = "ed25519"


class VerificationError(VeilError):
    """An output does not match its manifest (or the manifest its signature)."""

    exit_code = 7


def canonical(manifest: dict[str, Any]) -> bytes:
    """The bytes a signature covers: the manifest less ``signature``, canonical JSON."""
    body = {k: v for k, v in manifest.items() if k != "signature"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _raw(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public: Ed25519PublicKey) -> str:
    """A short name for a public key: the first 16 hex digits of the sha256 of its raw bytes."""
    return hashlib.sha256(_raw(public)).hexdigest()[:16]


def _read_key_file(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from exc


@dataclass(frozen=True)
class Signer:
    """Signs manifests with one Ed25519 private key."""

    key: Ed25519PrivateKey

    @classmethod
    def load(cls, path: Path | str) -> Signer:
        data = _read_key_file(Path(path), "signing key")
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise ConfigError(
                f"{path}: not an unencrypted PEM private key ({exc}); make one with veil keygen"
            ) from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError(f"{path}: a {type(key).__name__}, not an Ed25519 key")
        return cls(key)

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.key.public_key()

    def sign(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """``manifest`` with a ``signature`` block added (the input is not changed)."""
        public = self.public_key
        return {
            **{k: v for k, v in manifest.items() if k != "signature"},
            "signature": {
                "algorithm": ALGORITHM,
                "key_id": key_id(public),
                "public_key": base64.b64encode(_raw(public)).decode(),
                "signed": "canonical JSON of every other field: keys sorted, no spaces, UTF-8",
                "value": base64.b64encode(self.key.sign(canonical(manifest))).decode(),
            },
        }


def load_public_key(path: Path | str) -> Ed25519PublicKey:
    """A public key from a PEM file (or the public half of a PEM private key)."""
    data = _read_key_file(Path(path), "public key")
    try:
        key: Any = serialization.load_pem_public_key(data)
    except ValueError:
        try:
            key = serialization.load_pem_private_key(data, password=None).public_key()
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{path}: not a PEM public key ({exc})") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{path}: a {type(key).__name__}, not an Ed25519 public key")
    return key


def keygen(path: Path | str) -> tuple[Path, Path]:
    """Write a new Ed25519 key pair: ``path`` (private, mode 0600) and ``path.pub``."""
    private_path = Path(path)
    public_path = private_path.with_name(private_path.name + ".pub")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    for target in (private_path, public_path):
        if target.exists():
            raise OutputError(f"{target}: already exists; keygen never overwrites a key")
    try:
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(private_pem)
        public_path.write_bytes(public_pem)
    except OSError as exc:
        raise OutputError(f"{private_path}: cannot write the key ({exc.strerror or exc})") from exc
    return private_path, public_path


def packet_digests(path: Path) -> list[dict[str, Any]]:
    """Per-stream packet count and payload sha256 of a file, packets only (nothing decoded).

    The same digests ``Input.demux`` computes while a job runs (empty packets skipped).
    """
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            digests = read_digests(container)
    except av.error.FFmpegError as exc:
        raise VerificationError(f"{path}: cannot be demuxed ({exc})") from exc
    return [d.to_json() for d in digests.values()]


# -- verification ---------------------------------------------------------------------------


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
    manifest: dict[str, Any], actual: dict[int, dict[str, Any]], result: Verification
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


def _stream_label(entry: dict[str, Any]) -> str:
    return f"stream #{entry['index']} ({entry['type']}, {entry['codec']})"


def _same_packets(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a["packets"] == b["packets"] and a["payload_sha256"] == b["payload_sha256"]


def _kept(got: dict[str, Any], source: dict[str, Any], pair: dict[str, Any]) -> bool:
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


def _load_manifest(path: Path, result: Verification) -> dict[str, Any] | None:
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
    manifest: dict[str, Any],
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
        if _raw(public_key) != _raw(embedded):
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


def _check_approval(manifest: dict[str, Any], record: Path | None, result: Verification) -> None:
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
    in_actual: dict[int, dict[str, Any]] | None = None
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

    record_path = (
        Path(record) if record is not None else output.with_name(output.name + ".veil.json")
    )
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
