"""A job: one video through detection or a record to its masks, the record, the output and
its signed manifest. ``detect_job`` and ``render_job`` (``_pipeline``) run it over a mask
source (``_detecting``: detector and tracker; ``_replay``: a record and its edit log) and
sinks (``_sinks``); the record file, its frame log and residual risk, the edit log, diffs,
the manifest and its verification each have their own module. Presets live in ``_settings``.
"""

from ._diff import diff, ranges
from ._documents import validate, write_json_atomic
from ._edits import (
    Applied,
    Keyframe,
    action_text,
    add_edits,
    describe,
    now,
    parse_box_spec,
    parse_grow_spec,
)
from ._header import PresetChoice
from ._pipeline import JobResult, detect_job, render_job
from ._provenance import Signer, default_record_path, key_id, keygen, manifest_path
from ._record import Record
from ._replay import final_frames
from ._risk import AGREE_IOU
from ._settings import PRESETS, DetectionConfig, DetectorSettings, Preset
from ._sinks import VideoOptions
from ._verify import verify

__all__ = [
    "AGREE_IOU",
    "PRESETS",
    "Applied",
    "DetectionConfig",
    "DetectorSettings",
    "JobResult",
    "Keyframe",
    "Preset",
    "PresetChoice",
    "Record",
    "Signer",
    "VideoOptions",
    "action_text",
    "add_edits",
    "default_record_path",
    "describe",
    "detect_job",
    "diff",
    "final_frames",
    "key_id",
    "keygen",
    "manifest_path",
    "now",
    "parse_box_spec",
    "parse_grow_spec",
    "ranges",
    "render_job",
    "validate",
    "verify",
    "write_json_atomic",
]
