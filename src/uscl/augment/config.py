"""Augmentation settings (the defaults are the original USCL pretraining transform)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from uscl.errors import ConfigError


@dataclass
class AugmentSettings:
    """The augmentation a user chooses (the ``augment`` section of a pretraining config);
    validated here and nowhere else."""

    scale: tuple[float, float] = (0.8, 1.0)  # random resized crop area fraction
    ratio: tuple[float, float] = (0.8, 1.25)  # aspect ratio range (width / height)
    flip_p: float = 0.5  # horizontal flip probability
    # colour-jitter strength s: brightness, contrast, saturation 0.8*s, hue 0.2*s (0 disables)
    jitter_s: float = 1.0  # the original config's dataset.s
    jitter_p: float = 1.0  # probability jitter is applied to an image (the original: always)
    mean: float = 0.5
    std: float = 0.25

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError naming the first bad setting (also after changes made in Python)."""
        self.scale = tuple(float(v) for v in self.scale)
        self.ratio = tuple(float(v) for v in self.ratio)
        if len(self.scale) != 2 or not 0 < self.scale[0] <= self.scale[1] <= 1:
            raise ConfigError(f"augment.scale must be (lo, hi) with 0 < lo <= hi <= 1, got {self.scale}")
        if len(self.ratio) != 2 or not 0 < self.ratio[0] <= self.ratio[1]:
            raise ConfigError(f"augment.ratio must be (lo, hi) with 0 < lo <= hi, got {self.ratio}")
        for name in ("flip_p", "jitter_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"augment.{name} must lie in [0, 1], got {getattr(self, name)}")
        if self.jitter_s < 0:
            raise ConfigError(f"augment.jitter_s must be >= 0, got {self.jitter_s}")
        if self.std <= 0:
            raise ConfigError(f"augment.std must be > 0, got {self.std}")


@dataclass
class AugmentConfig(AugmentSettings):
    """What :class:`~uscl.augment.BatchAugment` runs with: the settings plus the output
    ``size`` and ``out_channels``, which the caller fills in from the data (the training
    size, the store's channels)."""

    size: int = 224
    out_channels: int = 3  # grey input repeated to 3 channels at the end

    def validate(self) -> None:
        super().validate()
        if int(self.size) < 1:
            raise ConfigError(f"augment.size must be a positive integer, got {self.size}")
        if self.out_channels not in (1, 3):
            raise ConfigError(f"augment.out_channels must be 1 or 3, got {self.out_channels}")

    @classmethod
    def of(cls, settings: AugmentSettings, size: int, out_channels: int) -> "AugmentConfig":
        return cls(**dataclasses.asdict(settings), size=size, out_channels=out_channels)

    @property
    def jitters(self) -> bool:
        """Whether colour jitter runs at all."""
        return self.jitter_s > 0 and self.jitter_p > 0

    @property
    def brightness(self) -> float:
        return 0.8 * self.jitter_s

    @property
    def contrast(self) -> float:
        return 0.8 * self.jitter_s

    @property
    def saturation(self) -> float:
        return 0.8 * self.jitter_s

    @property
    def hue(self) -> float:
        return min(0.5, 0.2 * self.jitter_s)


def finetune_augment_config(size: int) -> AugmentConfig:
    """The original fine-tuning train transform: resize, random resized crop
    (area 0.8-1, torchvision's default aspect range 3/4-4/3), flip, no jitter."""
    return AugmentConfig(size=size, scale=(0.8, 1.0), ratio=(3 / 4, 4 / 3), flip_p=0.5, jitter_s=0.0, jitter_p=0.0)
