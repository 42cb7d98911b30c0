"""The Python API accepts what its types promise, and every README example runs as written.

Regression (issue 13): ``DetectionConfig(preset="fast")`` raised AttributeError, and
``DetectionConfig(preset=Preset.FAST)`` ran balanced's CenterFace while the record said
``preset: "fast"`` (a wrong audit record).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT
from mediagen import cut

import veil
from veil import PRESETS, ConfigError, DetectionConfig, Preset
from veil.cli import main

README = (ROOT / "README.md").read_text()


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, re.S)


@pytest.mark.parametrize("preset", [*Preset, *(p.value for p in Preset)])
def test_a_preset_by_enum_or_name_brings_its_own_detector_and_tracker(
    preset: Preset | str,
) -> None:
    config = DetectionConfig(preset=preset)
    detector, tracker = PRESETS[Preset(preset)]
    assert config.preset is Preset(preset)
    assert (config.detector, config.tracker) == (detector, tracker)
    assert config.to_record() == {"preset": Preset(preset).value}


def test_settings_that_differ_from_the_preset_are_named_in_the_record() -> None:
    config = DetectionConfig.from_preset("fast", detector={"score_threshold": 0.6})
    assert config.detector.model == PRESETS[Preset.FAST][0].model
    overrides = ["detector.score_threshold"]
    assert config.to_record() == {"preset": "fast", "preset_overrides": overrides}


@pytest.mark.parametrize("preset", ["quick", "", "BALANCED "])
def test_an_unknown_preset_name_is_a_config_error_naming_it(preset: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(repr(preset))):
        DetectionConfig(preset=preset)


@pytest.fixture(scope="module")
def clip(sample_clip: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 20 frames of the bundled sample (a real face, with audio)."""
    return cut(sample_clip, tmp_path_factory.mktemp("clip") / "in.mp4", 20)


@pytest.mark.weights
def test_the_fast_preset_records_the_detector_it_ran(clip: Path, tmp_path: Path) -> None:
    record = veil.detect(clip, config=DetectionConfig(preset="fast"))
    fast, balanced = PRESETS[Preset.FAST][0], PRESETS[Preset.BALANCED][0]
    ran = (
        record.detector["model"],
        record.detector["max_side"],
        record.detector["score_threshold"],
    )
    assert ran == (fast.model, fast.max_side, fast.model_threshold)
    assert ran != (balanced.model, balanced.max_side, balanced.model_threshold)
    assert record.detector["preset"] == "fast"


@pytest.mark.weights
def test_readme_python_example_runs_as_written(clip: Path, tmp_path: Path) -> None:
    [example] = _blocks("python")
    (tmp_path / "in.mp4").write_bytes(clip.read_bytes())
    subprocess.run([sys.executable, "-c", example], cwd=tmp_path, check=True)
    names = ["out.mp4", "out.mp4.veil.json", "out.mp4.manifest.json", "in.veil.json"]
    for name in [*names, "reviewed.mp4", "reviewed.mp4.manifest.json"]:
        assert (tmp_path / name).stat().st_size > 0, name
    manifest = json.loads((tmp_path / "reviewed.mp4.manifest.json").read_text())
    assert manifest["style"]["effect"] == "pixelate"  # the render() line ran


@pytest.mark.weights
def test_readme_config_file_example_runs_as_written(clip: Path, tmp_path: Path) -> None:
    [toml] = _blocks("toml")
    config = tmp_path / "veil.toml"
    config.write_text(toml)
    out = tmp_path / "out.mp4"
    assert main(["-q", "anonymize", str(clip), "-o", str(out), "--config", str(config)]) == 0
    record = json.loads(out.with_name("out.mp4.veil.json").read_text())
    manifest = json.loads(out.with_name("out.mp4.manifest.json").read_text())
    assert record["detector"]["preset"] == "thorough"
    assert manifest["style"]["effect"] == "pixelate" and manifest["style"]["shape"] == "ellipse"
    assert (
        manifest["encoder"]["options"] | {"crf": "20", "preset": "medium"}
        == (manifest["encoder"]["options"])
    )
