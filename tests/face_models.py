"""The face models under test (tests/test_models_*.py): one of each, and their names, the
tests' ids."""

from __future__ import annotations

from veil.server.engine._models import SCRFD, CenterFace, FaceModel, RetinaFace, YuNet

MODELS: list[FaceModel] = [CenterFace(), RetinaFace(), YuNet(), SCRFD()]
MODEL_IDS = [m.name for m in MODELS]
