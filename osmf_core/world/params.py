"""How a simulated world varies, beyond its seed and its sizes: the world's presets.

v2 (the default): each seed draws which attribute splits each category (some categories split on two
attributes jointly), the bins and the number of segments (2-4); every user deviates from their segment's
taste (`taste_noise`); product popularity is heavy-tailed (Zipf exponent `popularity`); `style_scale`
multiplies every segment's taste. Its default values are calibrated on the development seed only
(docs/world.md: `make calibrate-world`).

v1: the world of the first release (one fixed attribute per category, no individual taste, uniform
popularity, style effect worth about 25x CTR): a strong signal, for the small test worlds that need one.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

DEV_SEED = 7  # the development world: every choice (sizes, epochs, beta, calibration) is made on it alone

_PRESETS = {
    "v2": {"splits": "drawn", "style_scale": 0.3, "taste_noise": 0.15, "popularity": 1.0, "base_logit": -4.3},
    "v1": {"splits": "fixed", "style_scale": 1.0, "taste_noise": 0.0, "popularity": 0.0, "base_logit": -4.8},
}


@dataclass(frozen=True)
class WorldParams:
    preset: str = field(default="v2", metadata={"choices": tuple(_PRESETS)})  # v2: drawn splits, individual taste, heavy-tailed popularity; v1: the first release's world
    style_scale: float | None = None  # multiplies every segment's style taste (None: the preset's)
    taste_noise: float | None = None  # std of a user's own taste per style term, logits (None: the preset's)
    popularity: float | None = None  # Zipf exponent of product popularity, 0 = uniform (None: the preset's)

    def __post_init__(self):
        if self.preset not in _PRESETS:
            raise ValueError(f"unknown world preset {self.preset!r}: one of {', '.join(_PRESETS)}")
        for name in ("style_scale", "taste_noise", "popularity"):
            value = getattr(self, name)
            if value is None:
                object.__setattr__(self, name, float(_PRESETS[self.preset][name]))
            elif value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")

    @property
    def base_logit(self) -> float:
        """The overall click propensity: the preset's, set for an overall CTR of about 1.5%."""
        return _PRESETS[self.preset]["base_logit"]

    @property
    def splits(self) -> str:
        """'drawn' (per seed) or 'fixed' (the first release's map)."""
        return _PRESETS[self.preset]["splits"]

    def to_json(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_json(data: dict | None) -> "WorldParams":
        """The params of a manifest; a manifest without them was written by the first release: v1."""
        if not data:
            return WorldParams(preset="v1")
        known = {f.name for f in fields(WorldParams)}
        return WorldParams(**{k: v for k, v in data.items() if k in known})


V1 = WorldParams(preset="v1")

