"""Signed provenance: the render manifest, built when a render commits its output, and the
Ed25519 signature on it.

A manifest binds an output to everything that made it (input and per-stream packet hashes,
record sha256, detector with weights sha256, tracker, style, encoder, edits, veil version)
and to its own bytes and per-stream packet hashes. The signature covers the manifest's
canonical JSON: every field but ``signature``, keys sorted, no spaces, UTF-8. So a verifier
needs no byte-exact copy of the file, only its content (``_verify`` checks one).

Keys are PEM files: PKCS#8 private keys (unencrypted; protect them as files, mode 0600) and
SubjectPublicKeyInfo public keys, as ``openssl genpkey -algorithm ed25519`` writes them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from veil import __version__
from veil.core import ConfigError, OutputError
from veil.mask import Style
from veil.media import Input, Output, sha256_file
from veil.track import TrackerConfig

from ._documents import JsonObject
from ._record import Record

MANIFEST_SCHEMA = "veil.manifest/1"
ALGORITHM = "ed25519"


def manifest_path(output: Path) -> Path:
    """Where an output's manifest goes unless told: beside it, ``OUT.manifest.json``."""
    return output.with_name(output.name + ".manifest.json")


def default_record_path(output: Path | str) -> Path:
    """Where an output's detection record goes unless told: beside it, ``OUT.veil.json``."""
    output = Path(output)
    return output.with_name(output.name + ".veil.json")


@dataclass(frozen=True, kw_only=True)
class OutputIdentity:
    """The manifest's ``output`` block: the file as committed (name, size, sha256), its
    streams' packet digests, and, when the muxer moved every stream's timestamps, by how
    many seconds and why (``timestamp_shift``)."""

    name: str
    size: int
    sha256: str
    streams: tuple[JsonObject, ...]
    timestamp_shift: dict[str, str] | None = None

    def to_json(self) -> JsonObject:
        block: JsonObject = {
            "name": self.name,
            "size": self.size,
            "sha256": self.sha256,
            "streams": list(self.streams),
        }
        if self.timestamp_shift is not None:
            block["timestamp_shift"] = self.timestamp_shift
        return block


@dataclass(frozen=True, kw_only=True)
class Manifest:
    """A render manifest, unsigned (:meth:`Signer.sign` adds the signature to its JSON).

    The record's blocks (``detector``, ``edits``) and the encoder settings are copied as the
    record and the output state them; the style's settings weaker than veil's definition of
    masked are named (``weak_style_settings``). ``copied_streams`` maps
    each input stream copied as packets to its output stream (with any framing change the
    output container required), as the output was read back before it was committed.
    """

    schema: str = MANIFEST_SCHEMA
    veil_version: str
    input_sha256: str
    input_streams: tuple[JsonObject, ...]
    copied_streams: tuple[JsonObject, ...]
    dropped_streams: tuple[JsonObject, ...] | None = None
    record_sha256: str
    detector: JsonObject
    tracker: TrackerConfig
    edits: list[JsonObject]
    style: Style
    encoder: JsonObject
    output: OutputIdentity

    @classmethod
    def of_render(
        cls,
        *,
        input_sha256: str,
        source: Input,
        record: Record,
        record_sha256: str,
        style: Style,
        out: Output,
    ) -> Manifest:
        """The manifest of the render ``out`` has just committed (its file read back: the
        copied streams and the digests are final), from ``source`` as demuxed to its end."""
        return cls(
            veil_version=__version__,
            input_sha256=input_sha256,
            input_streams=tuple(d.to_json() for d in source.digests.values()),
            copied_streams=tuple(out.copied_streams),
            dropped_streams=tuple(source.dropped_json()) if source.dropped else None,
            record_sha256=record_sha256,
            detector=record.detector,
            tracker=record.tracker,
            edits=record.edits,
            style=style,
            encoder=out.settings_json(),
            output=OutputIdentity(
                name=out.path.name,
                size=out.path.stat().st_size,
                sha256=sha256_file(out.path),
                streams=tuple(out.written_streams),
                timestamp_shift=out.timing_json().get("timestamp_shift"),
            ),
        )

    def to_json(self) -> JsonObject:
        document: JsonObject = {
            "schema": self.schema,
            "veil_version": self.veil_version,
            "input_sha256": self.input_sha256,
            "input_streams": list(self.input_streams),
            "copied_streams": list(self.copied_streams),
        }
        if self.dropped_streams is not None:
            document["dropped_streams"] = list(self.dropped_streams)
        return document | {
            "record_sha256": self.record_sha256,
            "detector": self.detector,
            "tracker": self.tracker.to_json(),
            "edits": self.edits,
            "style": self.style.to_json(),
            "weak_style_settings": self.style.weak_settings,
            "encoder": self.encoder,
            "output": self.output.to_json(),
        }


def canonical(manifest: JsonObject) -> bytes:
    """The bytes a signature covers: the manifest less ``signature``, canonical JSON."""
    body = {k: v for k, v in manifest.items() if k != "signature"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def raw_key(public: Ed25519PublicKey) -> bytes:
    """The 32 raw bytes of a public key (what ``key_id`` hashes and a signature block holds)."""
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public: Ed25519PublicKey) -> str:
    """A short name for a public key: the first 16 hex digits of the sha256 of its raw bytes."""
    return hashlib.sha256(raw_key(public)).hexdigest()[:16]


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

    def sign(self, manifest: JsonObject) -> JsonObject:
        """``manifest`` with a ``signature`` block added (the input is not changed)."""
        public = self.public_key
        return {
            **{k: v for k, v in manifest.items() if k != "signature"},
            "signature": {
                "algorithm": ALGORITHM,
                "key_id": key_id(public),
                "public_key": base64.b64encode(raw_key(public)).decode(),
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
