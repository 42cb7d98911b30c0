"""How veil's JSON documents (records, manifests) are encoded, checked and written.

One encoding for all of them (compact JSON, UTF-8, a newline), so a document's sha256 is a
function of its content; one schema check (the schemas ship in ``veil.v1``); and one atomic
write (a temp name, fsync, rename), so a reader never sees half a file.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema

from veil.core import RecordError
from veil.media import write_atomic

#: A JSON object as a record or manifest holds it: a block kept as read (so it is written
#: back byte for byte) or about to be written. Typed classes build the blocks veil makes
#: (``InputIdentity``, ``DetectorBlock``, ``Edit``, ``Manifest``).
JsonObject = dict[str, Any]


@cache
def load_schema(name: str) -> JsonObject:
    """A JSON Schema shipped in ``veil.v1`` (``record`` or ``manifest``)."""
    text = resources.files("veil.v1").joinpath(f"{name}.schema.json").read_text()
    schema: JsonObject = json.loads(text)
    return schema


def validate(document: Any, name: str, source: str) -> None:
    """Check ``document`` against a shipped schema; the error names the first bad place."""
    validator = jsonschema.Draft202012Validator(load_schema(name))
    error = jsonschema.exceptions.best_match(validator.iter_errors(document))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        raise RecordError(f"{source}: not a valid {name} at {where}: {error.message}")


def dumps(document: Any) -> bytes:
    """Compact JSON, UTF-8: the encoding of every record and manifest."""
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def write_json_atomic(path: Path, document: JsonObject) -> bytes:
    """Write ``document`` as compact JSON under a temp name, then rename; returns the bytes."""
    data = dumps(document) + b"\n"
    write_atomic(path, [data])
    return data
