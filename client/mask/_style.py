"""How a face is masked: one style config, the same in every mode (CLI flags or a TOML file)."""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, fields, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from veil.core import ConfigError

#: The blur strength under which a face keeps structure (DESIGN: sigma >= ~1/8 of face size).
MIN_SAFE_BLUR = 1 / 8
#: The pixel block count above which a face keeps structure (DESIGN: <= ~5 blocks across).
MAX_SAFE_BLOCKS = 5


class Effect(StrEnum):
    BLUR = "blur"
    PIXELATE = "pixelate"
    SOLID = "solid"


class Shape(StrEnum):
    BOX = "box"
    ELLIPSE = "ellipse"


@dataclass(frozen=True, kw_only=True)
class Style:
    """A mask style. Sizes are fractions of the face box's longer side.

    ``margin`` grows the face box on every side before masking; an ellipse is the one
    circumscribing the grown box, so it never leaves the box's corners. ``feather`` fades the
    mask out *beyond* the covered area, never into it.
    """

    effect: Effect = Effect.BLUR
    shape: Shape = Shape.BOX
    margin: float = 0.2
    feather: float = 0.1
    blur_strength: float = 1 / 6
    pixel_blocks: int = 5
    color: tuple[int, int, int] = (0, 0, 0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "effect", Effect(self.effect))
        object.__setattr__(self, "shape", Shape(self.shape))
        object.__setattr__(self, "color", tuple(int(c) for c in self.color))
        if not 0 <= self.margin <= 2:
            raise ConfigError(f"margin {self.margin} must be between 0 and 2")
        if not 0 <= self.feather <= 1:
            raise ConfigError(f"feather {self.feather} must be between 0 and 1")
        if not 0 < self.blur_strength <= 2:
            raise ConfigError(f"blur_strength {self.blur_strength} must be in (0, 2]")
        if not 1 <= self.pixel_blocks <= 64:
            raise ConfigError(f"pixel_blocks {self.pixel_blocks} must be between 1 and 64")
        if len(self.color) != 3 or not all(0 <= c <= 255 for c in self.color):
            raise ConfigError(f"color {self.color} must be three values 0..255 (R, G, B)")

    @property
    def weak_settings(self) -> list[str]:
        """Settings weaker than DESIGN's definition of "masked"; the record names them."""
        weak = []
        if self.effect is Effect.BLUR and self.blur_strength < MIN_SAFE_BLUR:
            weak.append(f"blur_strength {self.blur_strength:g} < {MIN_SAFE_BLUR:g}")
        if self.effect is Effect.PIXELATE and self.pixel_blocks > MAX_SAFE_BLOCKS:
            weak.append(f"pixel_blocks {self.pixel_blocks} > {MAX_SAFE_BLOCKS}")
        return weak

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["effect"] = self.effect.value
        data["shape"] = self.shape.value
        data["color"] = list(self.color)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Style:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown style keys: {', '.join(sorted(unknown))}")
        try:
            return cls(**data)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"invalid style: {exc}") from exc

    def updated(self, **changes: Any) -> Style:
        """This style with the given non-None fields replaced (CLI flags over a TOML file)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def load_config(path: Path) -> dict[str, Any]:
    """Read a veil TOML config file: tables ``[style]``, ``[detector]``, ``[encoder]``,
    ``[tracker]``, and ``[serve]`` for ``veil serve`` (docs/service.md)."""
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {path} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    unknown = set(data) - {"style", "detector", "encoder", "tracker", "serve"}
    if unknown:
        raise ConfigError(f"config file {path}: unknown tables {', '.join(sorted(unknown))}")
    return data
