"""Sign-off: a reviewer approves a rendered video (``veil review --serve``). The approval
is appended to the record and carried, signed, by the output's manifest; ``veil verify``
checks it (``veil.job._verify``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from veil.core import RecordError
from veil.job import Record, Signer, key_id, now, validate, verify, write_json_atomic


def sign_off(
    input: Path,
    record_path: Path,
    output: Path,
    manifest_path: Path,
    signer: Signer,
    *,
    who: str,
    statement: str,
) -> dict[str, Any]:
    """A reviewer approves ``output`` as rendered from the record at ``record_path``: the
    approval (who, when, the statement, the record's and the output's sha256) is appended to
    the record, and the output's manifest carries it, with the approved record's sha256,
    signed again. Refused (``RecordError``) unless the output, the manifest (signed by this
    very key), the input and the record verify (``verify``), and the output was rendered
    from the record as it is now: what is signed is what was checked."""
    if not who.strip() or not statement.strip():
        raise RecordError("a sign-off needs who approves and what they state")
    if not (output.is_file() and manifest_path.is_file()):
        raise RecordError(f"{output.name} is not rendered (or has no manifest): render it first")
    record = Record.load(record_path)
    manifest = json.loads(manifest_path.read_text())
    validate(manifest, "manifest", str(manifest_path))
    checked = verify(output, manifest_path, input=input, record=record_path)
    if not checked.ok:
        failed = "; ".join(f"{c.name}: {c.detail}" for c in checked.failed)
        raise RecordError(f"{output.name} does not verify ({failed}): render again")
    key = manifest.get("signature", {}).get("key_id")
    if key != key_id(signer.public_key):
        raise RecordError(
            f"{manifest_path.name} is not signed with the sign-off key: render again with it"
        )
    rendered = record.rendered_sha256()
    if manifest["record_sha256"] != record.sha256():
        raise RecordError(
            f"{output.name} was not rendered from {record_path.name} as it is now (edited "
            "since?): render again, then sign off"
        )
    approval = {
        "who": who.strip(),
        "when": now(),
        "statement": statement.strip(),
        "record_sha256": rendered,
        "output": output.name,
        "output_sha256": manifest["output"]["sha256"],
    }
    record.approvals.append(approval)
    record_sha256 = record.write(record_path)
    manifest = {k: v for k, v in manifest.items() if k != "signature"}
    manifest |= {"record_sha256": record_sha256, "approval": approval}
    manifest = signer.sign(manifest)
    validate(manifest, "manifest", str(manifest_path))
    write_json_atomic(manifest_path, manifest)
    return approval
