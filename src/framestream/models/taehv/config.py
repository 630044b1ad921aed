"""Architecture of TAEHV, the tiny autoencoder for Hunyuan / Wan video latents.

The public checkpoints ``taew2_1.pth`` (Wan 2.1 latents) and ``taew2_2.pth`` (Wan 2.2
TI2V-5B latents) share one layout and differ in latent channels and pixel patch size.
"""

from __future__ import annotations

from framestream.config import PrintableConfig, config_dataclass

__all__ = ["TAEHVArchConfig", "TAEW2_1_ARCH", "TAEW2_2_ARCH", "TAEHV_ARCH_PRESETS", "tiny_taehv_arch"]


@config_dataclass
class TAEHVArchConfig(PrintableConfig):
    """Widths and up/down-sampling flags of a TAEHV encoder/decoder pair."""

    latent_channels: int = 16
    """Channels of the latent (16 for Wan 2.1, 48 for Wan 2.2)."""
    patch_size: int = 1
    """Pixel-shuffle patch applied to the frames (1 for Wan 2.1, 2 for Wan 2.2)."""
    image_channels: int = 3
    decoder_channels: tuple[int, int, int, int] = (256, 128, 64, 64)
    """Widths of the three decoder stages and of the last conv."""
    encoder_channels: int = 64
    """Width of every encoder stage."""
    encoder_time_downscale: tuple[bool, bool, bool] = (True, True, False)
    """Which encoder stages pool two frames into one."""
    decoder_time_upscale: tuple[bool, bool, bool] = (False, True, True)
    """Which decoder stages grow one frame into two."""
    decoder_space_upscale: tuple[bool, bool, bool] = (True, True, True)
    """Which decoder stages upsample 2x in space."""

    def __post_init__(self) -> None:
        for name in ("latent_channels", "patch_size", "image_channels", "encoder_channels"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"TAEHVArchConfig.{name} must be a positive int, got {value!r}")
        if len(self.decoder_channels) != 4 or any(int(c) < 1 for c in self.decoder_channels):
            raise ValueError(f"TAEHVArchConfig.decoder_channels must be 4 positive ints, got {self.decoder_channels!r}")
        for name in ("encoder_time_downscale", "decoder_time_upscale", "decoder_space_upscale"):
            if len(getattr(self, name)) != 3:
                raise ValueError(f"TAEHVArchConfig.{name} must hold 3 flags, got {getattr(self, name)!r}")
        if sum(self.encoder_time_downscale) != sum(self.decoder_time_upscale):
            raise ValueError("TAEHVArchConfig: the encoder's time downscale must match the decoder's time upscale")

    @property
    def temporal_ratio(self) -> int:
        """Pixel frames per latent frame."""
        return 2 ** sum(bool(f) for f in self.decoder_time_upscale)

    @property
    def spatial_ratio(self) -> int:
        """Pixel side per latent side."""
        return 2 ** sum(bool(f) for f in self.decoder_space_upscale) * self.patch_size

    @property
    def frames_to_trim(self) -> int:
        """Leading decoded frames dropped at the start of a stream, so T latents give 1 + r(T-1) frames."""
        return self.temporal_ratio - 1


TAEW2_1_ARCH = TAEHVArchConfig()
"""``taew2_1.pth``: Wan 2.1 latents (16 channels), 8x space, 4x time."""

TAEW2_2_ARCH = TAEHVArchConfig(latent_channels=48, patch_size=2)
"""``taew2_2.pth``: Wan 2.2 TI2V-5B latents (48 channels), 16x space (patch 2), 4x time."""

TAEHV_ARCH_PRESETS: dict[str, TAEHVArchConfig] = {"taew2_1": TAEW2_1_ARCH, "taew2_2": TAEW2_2_ARCH}


def tiny_taehv_arch(latent_channels: int = 16, width: int = 8, patch_size: int = 1) -> TAEHVArchConfig:
    """The TAEHV layout with tiny widths (tests, CPU smoke runs)."""
    return TAEHVArchConfig(
        latent_channels=latent_channels,
        patch_size=patch_size,
        decoder_channels=(width, width, width, width),
        encoder_channels=width,
    )
