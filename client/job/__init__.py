"""TODO."""

from ._edits import (
    Applied,
    Keyframe,
    action_text,
    add_edits,
    describe,
    diff,
    final_frames,
    now,
    parse_box_spec,
    parse_grow_spec,
    ranges,
)
from ._pipeline import JobResult, manifest_path, run_job
from ._provenance import Signer, key_id, keygen, verify
from ._record import AGREE_IOU, Record, validate, write_json_atomic
from ._settings import PRESETS, DetectorSettings, Preset

__all__ = [
    "AGREE_IOU",
    "PRESETS",
    "Applied",
    "DetectorSettings",
    "JobResult",
    "Keyframe",
    "Preset",
    "Record",
    "Signer",
    "action_text",
    "add_edits",
    "describe",
    "diff",
    "final_frames",
    "key_id",
    "keygen",
    "manifest_path",
    "now",
    "parse_box_spec",
    "parse_grow_spec",
    "ranges",
    "run_job",
    "validate",
    "verify",
    "write_json_atomic",
]
