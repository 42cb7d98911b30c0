"""Fuzzing the record parser: mutations of a real record are parsed or refused with a
RecordError, never anything else. `make fuzz` runs it longer (FUZZ_EXAMPLES)."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import veil
from veil import DetectionConfig, Record, RecordError

pytestmark = pytest.mark.weights  # the fetched detector weights (make models)

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=8,
)


@pytest.fixture(scope="module")
def real_record(tmp_path_factory: pytest.TempPathFactory, sample_clip: Path) -> dict[str, Any]:
    path = tmp_path_factory.mktemp("fuzz") / "rec.json"
    veil.detect(sample_clip, path, config=DetectionConfig.from_preset("fast"))
    document: dict[str, Any] = json.loads(path.read_text())
    document["frames"] = document["frames"][:12]  # keep examples fast
    return document


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    paths = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            paths += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node[:3]):
            paths += _paths(value, (*prefix, i))
    return paths


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_mutated_records_are_parsed_or_refused(real_record: dict[str, Any], data: Any) -> None:
    document = copy.deepcopy(real_record)
    for _ in range(data.draw(st.integers(1, 3))):
        paths = _paths(document)
        path = data.draw(st.sampled_from(paths[1:]))
        parent = document
        for key in path[:-1]:
            parent = parent[key]
        action = data.draw(st.sampled_from(["replace", "delete", "duplicate"]))
        if action == "replace":
            parent[path[-1]] = data.draw(JSON)
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent, list):
            parent.insert(path[-1], copy.deepcopy(parent[path[-1]]))
        else:
            parent[path[-1]] = [parent[path[-1]]]
    try:
        record = Record.from_json(document, "fuzzed")
    except RecordError as exc:
        assert "fuzzed" in str(exc)
        return
    # What parses must be usable: it serialises and parses again to the same thing.
    assert Record.from_json(record.to_json(), "again").to_json() == record.to_json()
