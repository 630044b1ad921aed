"""Architecture description of the LTX-2 video VAE.

:class:`LTX2VAEArchConfig` uses the field names of diffusers' ``AutoencoderKLLTX2Video``
config, so a diffusers ``config.json`` converts losslessly in both directions. The
original LTX-2 single-file checkpoints carry their own config (the ``vae`` entry of
the JSON in the safetensors metadata key ``config``, with ``encoder_blocks`` /
``decoder_blocks`` lists); :meth:`LTX2VAEArchConfig.from_original_config` and
:meth:`LTX2VAEArchConfig.to_original_config` translate that form for the block layouts
diffusers can express.

Only what can be run exactly is accepted: the ``"conv"`` (strided conv) downsampler
and decoder noise injection (random per call, so no two decodes agree) raise
``ValueError`` here, before any module is built.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from framestream.config import PrintableConfig, config_dataclass

__all__ = [
    "LTX2VAEArchConfig",
    "LTX2_VAE_ARCH",
    "DIFFUSERS_IGNORED_KEYS",
    "tiny_ltx2_arch",
    "shallow_ltx2_arch",
    "reduced_width",
    "BlockPlan",
]

DIFFUSERS_IGNORED_KEYS: frozenset[str] = frozenset(
    {"_class_name", "_diffusers_version", "_name_or_path", "_commit_hash", "_use_default_values", "down_block_types"}
)
"""Keys of a diffusers config.json that describe no architecture (``down_block_types`` has one legal value)."""

_STRIDES = {"spatial": (1, 2, 2), "temporal": (2, 1, 1), "spatiotemporal": (2, 2, 2)}
# Original LTX-2 block names of each resampling kind (encoder / decoder).
_ORIGINAL_DOWN = {"spatial": "compress_space_res", "temporal": "compress_time_res", "spatiotemporal": "compress_all_res"}
_ORIGINAL_UP = {"spatial": "compress_space", "temporal": "compress_time", "spatiotemporal": "compress_all"}


def _tuple(value: Any, n: int, name: str) -> tuple:
    """A per-block setting as a tuple of ``n`` entries (a bare bool/int is repeated, as diffusers does)."""
    if isinstance(value, (bool, int, str)):
        return (value,) * n
    value = tuple(value)
    if len(value) != n:
        raise ValueError(f"{name} needs {n} entries, got {len(value)}")
    return value


@config_dataclass
class LTX2VAEArchConfig(PrintableConfig):
    """Shape of an LTX-2 video VAE; field names follow diffusers' ``AutoencoderKLLTX2Video``."""

    in_channels: int = 3
    """Pixel channels read by the encoder."""
    out_channels: int = 3
    """Pixel channels written by the decoder."""
    latent_channels: int = 128
    """Latent channels (the encoder emits the mean and one shared log-variance channel)."""
    block_out_channels: tuple[int, ...] = (256, 512, 1024, 2048)
    """Encoder width after each down block; its stem width is ``latent_channels``."""
    decoder_block_out_channels: tuple[int, ...] = (256, 512, 1024)
    """Decoder widths, listed from the output side (diffusers' order)."""
    layers_per_block: tuple[int, ...] = (4, 6, 6, 2, 2)
    """Residual blocks per encoder down block, then in the encoder mid block."""
    decoder_layers_per_block: tuple[int, ...] = (5, 5, 5, 5)
    """Residual blocks in the decoder mid block, then per up block (output side last, diffusers' order reversed)."""
    spatio_temporal_scaling: tuple[bool, ...] = (True, True, True, True)
    """Whether each encoder down block resamples."""
    decoder_spatio_temporal_scaling: tuple[bool, ...] = (True, True, True)
    """Whether each decoder up block resamples."""
    decoder_inject_noise: tuple[bool, ...] = (False, False, False, False)
    """Noise injection per decoder block; must be all False (random noise is not reproducible)."""
    downsample_type: tuple[str, ...] = ("spatial", "temporal", "spatiotemporal", "spatiotemporal")
    """Resampling of each encoder down block: ``spatial``, ``temporal`` or ``spatiotemporal``."""
    upsample_type: tuple[str, ...] = ("spatiotemporal", "spatiotemporal", "spatiotemporal")
    """Resampling of each decoder up block."""
    upsample_residual: tuple[bool, ...] = (True, True, True)
    """Whether each decoder upsampler adds its depth-to-space shortcut."""
    upsample_factor: tuple[int, ...] = (2, 2, 2)
    """Channel reduction of each decoder upsampler."""
    timestep_conditioning: bool = False
    """Decoder conditioned on a timestep (per-resnet scale/shift tables, time embedders)."""
    patch_size: int = 4
    """Spatial patchify factor before the encoder (and after the decoder)."""
    patch_size_t: int = 1
    """Temporal patch size; only 1 exists."""
    resnet_norm_eps: float = 1e-6
    """Epsilon of the shortcut LayerNorm in channel-changing residual blocks."""
    scaling_factor: float = 1.0
    """Latent scaling applied by :meth:`LTX2VAE.normalize_latents`."""
    encoder_causal: bool = True
    """Encoder convolutions pad time with copies of the first frame only."""
    decoder_causal: bool = False
    """Decoder convolutions causal (True) or padded on both sides in time (False, LTX-2)."""
    encoder_spatial_padding_mode: str = "zeros"
    """Spatial padding of encoder convolutions."""
    decoder_spatial_padding_mode: str = "reflect"
    """Spatial padding of decoder convolutions."""
    spatial_compression_ratio: int | None = None
    """Pixels per latent side: checked against the layout when given, then stored as None (see :attr:`spatial_ratio`)."""
    temporal_compression_ratio: int | None = None
    """Frames per latent frame: checked against the layout when given, then stored as None (see :attr:`temporal_ratio`)."""

    def __post_init__(self) -> None:
        n_enc = len(tuple(self.layers_per_block)) - 1
        n_dec = len(tuple(self.decoder_layers_per_block)) - 1
        fix = {
            "block_out_channels": tuple(self.block_out_channels),
            "decoder_block_out_channels": tuple(self.decoder_block_out_channels),
            "layers_per_block": tuple(self.layers_per_block),
            "decoder_layers_per_block": tuple(self.decoder_layers_per_block),
            "spatio_temporal_scaling": _tuple(self.spatio_temporal_scaling, n_enc, "spatio_temporal_scaling"),
            "decoder_spatio_temporal_scaling": _tuple(
                self.decoder_spatio_temporal_scaling, n_dec, "decoder_spatio_temporal_scaling"
            ),
            "decoder_inject_noise": _tuple(self.decoder_inject_noise, n_dec + 1, "decoder_inject_noise"),
            "downsample_type": tuple(self.downsample_type),
            "upsample_type": tuple(self.upsample_type),
            "upsample_residual": _tuple(self.upsample_residual, n_dec, "upsample_residual"),
            "upsample_factor": _tuple(self.upsample_factor, n_dec, "upsample_factor"),
        }
        for name, value in fix.items():
            object.__setattr__(self, name, value)
        problems = []
        if len(self.block_out_channels) != n_enc or len(self.downsample_type) != n_enc:
            problems.append(f"block_out_channels and downsample_type need {n_enc} entries (len(layers_per_block) - 1)")
        if len(self.decoder_block_out_channels) != n_dec or len(self.upsample_type) != n_dec:
            problems.append(
                f"decoder_block_out_channels and upsample_type need {n_dec} entries (len(decoder_layers_per_block) - 1)"
            )
        for kind in (*self.downsample_type, *self.upsample_type):
            if kind not in _STRIDES:
                problems.append(f"resampling type {kind!r} is not supported (expected one of {sorted(_STRIDES)})")
        if any(self.decoder_inject_noise):
            problems.append("decoder_inject_noise adds fresh random noise on every call; only all-False is supported")
        if self.patch_size_t != 1:
            problems.append(f"patch_size_t must be 1, got {self.patch_size_t}")
        for name in ("encoder_spatial_padding_mode", "decoder_spatial_padding_mode"):
            if getattr(self, name) not in ("zeros", "reflect", "replicate", "circular"):
                problems.append(f"{name}={getattr(self, name)!r} is not a Conv3d padding mode")
        if min(self.latent_channels, self.in_channels, self.out_channels, self.patch_size) < 1:
            problems.append("latent_channels, in/out_channels and patch_size must be positive")
        if not problems:
            s, t = self._layout_ratios(encoder=True)
            ds, dt = self._layout_ratios(encoder=False)
            if (s, t) != (ds, dt):
                problems.append(f"the encoder compresses {s}x/{t}x (space/time) but the decoder expands {ds}x/{dt}x")
            if self.spatial_compression_ratio not in (None, s):
                problems.append(f"spatial_compression_ratio={self.spatial_compression_ratio} but the layout gives {s}")
            if self.temporal_compression_ratio not in (None, t):
                problems.append(f"temporal_compression_ratio={self.temporal_compression_ratio} but the layout gives {t}")
            # Agreeing ratios carry no information: drop them so equal layouts compare equal.
            object.__setattr__(self, "spatial_compression_ratio", None)
            object.__setattr__(self, "temporal_compression_ratio", None)
        if problems:
            raise ValueError("invalid LTX2VAEArchConfig: " + "; ".join(problems))

    def _layout_ratios(self, encoder: bool) -> tuple[int, int]:
        s, t = self.patch_size, 1
        for block in self.encoder_blocks() if encoder else self.decoder_blocks():
            if block.resample is not None:
                st, sh, _ = _STRIDES[block.resample]
                s, t = s * sh, t * st
        return s, t

    def encoder_blocks(self) -> tuple["BlockPlan", ...]:
        """The encoder's down blocks in execution order."""
        width, out = self.latent_channels, []
        for i, kind in enumerate(self.downsample_type):
            on = self.spatio_temporal_scaling[i]
            out.append(BlockPlan(width, self.block_out_channels[i], self.layers_per_block[i], kind if on else None, False, 1))
            width = self.block_out_channels[i]
        return tuple(out)

    def decoder_blocks(self) -> tuple["BlockPlan", ...]:
        """The decoder's up blocks in execution order, as diffusers builds them.

        diffusers lists widths, depths, scalings, residual flags and factors from the output
        side and reverses them, but takes ``upsample_type`` in execution order.
        """
        n = len(self.decoder_block_out_channels)
        outs = self.decoder_block_out_channels[::-1]
        layers = self.decoder_layers_per_block[::-1]
        on = self.decoder_spatio_temporal_scaling[::-1]
        residual, factor = self.upsample_residual[::-1], self.upsample_factor[::-1]
        width, blocks = outs[0], []
        for i in range(n):
            block_in, block_out = width // factor[i], outs[i] // factor[i]
            kind = self.upsample_type[i] if on[i] else None
            blocks.append(BlockPlan(block_in, block_out, layers[i + 1], kind, residual[i], factor[i]))
            width = block_out
        return tuple(blocks)

    @property
    def decoder_width(self) -> int:
        """Width of the decoder's conv_in / mid block."""
        return self.decoder_block_out_channels[-1]

    @property
    def decoder_mid_layers(self) -> int:
        return self.decoder_layers_per_block[-1]

    # ------------------------------------------------------------------ derived
    @property
    def spatial_ratio(self) -> int:
        """Pixels per latent side (patch size times the spatial downsamplings)."""
        return self._layout_ratios(encoder=True)[0]

    @property
    def temporal_ratio(self) -> int:
        """Frames per latent frame after the first (``1 + ratio*k`` frames make ``1 + k`` latents)."""
        return self._layout_ratios(encoder=True)[1]

    @staticmethod
    def resample_stride(kind: str) -> tuple[int, int, int]:
        """(time, height, width) stride of a resampling kind."""
        return _STRIDES[kind]

    # ------------------------------------------------------------------ diffusers
    def to_diffusers_kwargs(self) -> dict[str, Any]:
        """Keyword arguments building the equivalent ``diffusers.AutoencoderKLLTX2Video``."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        out["spatial_compression_ratio"] = self.spatial_ratio
        out["temporal_compression_ratio"] = self.temporal_ratio
        return out

    @classmethod
    def from_diffusers_config(cls, config: dict[str, Any]) -> "LTX2VAEArchConfig":
        """Build from a diffusers ``AutoencoderKLLTX2Video`` config; unknown keys raise ``ValueError``."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(k for k in config if k not in names and k not in DIFFUSERS_IGNORED_KEYS)
        if unknown:
            raise ValueError(f"unknown AutoencoderKLLTX2Video architecture key(s): {unknown}")
        blocks = config.get("down_block_types")
        if blocks is not None and any(b != "LTX2VideoDownBlock3D" for b in blocks):
            raise ValueError(f"unsupported down_block_types {blocks!r} (only LTX2VideoDownBlock3D exists)")
        return cls(**{k: v for k, v in config.items() if k in names})

    # ------------------------------------------------------------------ original LTX-2
    def to_original_config(self) -> dict[str, Any]:
        """The ``vae`` entry of an original LTX-2 checkpoint's metadata config for this architecture."""
        enc: list[list[Any]] = []
        width = self.latent_channels
        for i, kind in enumerate(self.downsample_type):
            enc.append(["res_x", {"num_layers": self.layers_per_block[i]}])
            if self.spatio_temporal_scaling[i]:
                out = self.block_out_channels[i]
                if out % width:
                    raise ValueError("the original config format needs each encoder width to be a multiple of the previous")
                enc.append([_ORIGINAL_DOWN[kind], {"multiplier": out // width}])
                width = out
        enc.append(["res_x", {"num_layers": self.layers_per_block[-1]}])
        dec: list[list[Any]] = [["res_x", {"num_layers": self.decoder_mid_layers}]]
        for block in self.decoder_blocks():
            if block.resample is None or block.in_channels != block.out_channels:
                raise ValueError("the original config format needs every decoder up block to resample, without conv_in")
            dec.append([_ORIGINAL_UP[block.resample], {"residual": block.residual, "multiplier": block.factor}])
            dec.append(["res_x", {"num_layers": block.layers}])
        return {
            "_class_name": "CausalVideoAutoencoder",
            "dims": 3,
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "latent_channels": self.latent_channels,
            "encoder_blocks": enc,
            "decoder_blocks": dec,
            "encoder_base_channels": self.latent_channels,
            "decoder_base_channels": self.decoder_blocks()[-1].out_channels,
            "patch_size": self.patch_size,
            "norm_layer": "pixel_norm",
            "latent_log_var": "uniform",
            "use_quant_conv": False,
            "causal_decoder": self.decoder_causal,
            "timestep_conditioning": self.timestep_conditioning,
            "encoder_spatial_padding_mode": self.encoder_spatial_padding_mode,
            "decoder_spatial_padding_mode": self.decoder_spatial_padding_mode,
            "scaling_factor": self.scaling_factor,
        }

    @classmethod
    def from_original_config(cls, vae: dict[str, Any], widths: dict[str, int] | None = None) -> "LTX2VAEArchConfig":
        """Build from the ``vae`` entry of an original LTX-2 metadata config.

        ``encoder_blocks`` must alternate ``res_x`` and ``compress_*_res`` blocks (ending in a
        ``res_x``: the mid block), ``decoder_blocks`` likewise with ``compress_*`` blocks.
        The config does not state the decoder widths: they follow from ``widths["decoder_in"]``,
        the width after the decoder's ``conv_in`` (read off the tensors), and the multipliers.
        Anything else raises ``ValueError`` naming the block.
        """
        if vae.get("norm_layer", "pixel_norm") != "pixel_norm" or vae.get("latent_log_var", "uniform") != "uniform":
            raise ValueError("only norm_layer='pixel_norm' and latent_log_var='uniform' LTX-2 VAEs are supported")
        if vae.get("use_quant_conv", False):
            raise ValueError("LTX-2 VAEs with quant convs (use_quant_conv=True) are not supported")
        latent = int(vae.get("latent_channels", 128))
        down_of = {v: k for k, v in _ORIGINAL_DOWN.items()}
        up_of = {v: k for k, v in _ORIGINAL_UP.items()}

        def pairs(blocks: list, resample: dict[str, str], where: str) -> tuple[list[int], list[tuple[str, dict]]]:
            layers, samples = [], []
            for i, block in enumerate(blocks):
                name, args = block[0], (block[1] if len(block) > 1 else {})
                expect_res = i % 2 == 0
                if expect_res and name == "res_x":
                    if args.get("inject_noise", False):
                        raise ValueError(f"{where} block {i}: noise injection is not supported")
                    layers.append(int(args.get("num_layers", 1)))
                elif not expect_res and name in resample:
                    samples.append((resample[name], args))
                else:
                    raise ValueError(
                        f"{where} block {i} is {name!r}: expected alternating 'res_x' and resampling blocks "
                        f"({sorted(resample)}) ending in 'res_x'"
                    )
            if not blocks or len(blocks) % 2 == 0:
                raise ValueError(f"{where} must end with a 'res_x' block")
            return layers, samples

        enc_layers, downs = pairs(list(vae.get("encoder_blocks", [])), down_of, "encoder_blocks")
        dec_layers, ups = pairs(list(vae.get("decoder_blocks", [])), up_of, "decoder_blocks")
        width, outs = int(vae.get("encoder_base_channels", latent)), []
        if width != latent:
            raise ValueError(f"encoder_base_channels={width} differs from latent_channels={latent}: not expressible")
        for _, args in downs:
            width *= int(args.get("multiplier", 2))
            outs.append(width)
        top = (widths or {}).get("decoder_in")
        if top is None:
            raise ValueError("the decoder widths are not in the config and no decoder conv_in tensor shows them")
        chans = []
        for _, args in ups:
            chans.append(top)
            top //= int(args.get("multiplier", 1))
        n = len(ups)
        return cls(
            in_channels=int(vae.get("in_channels", 3)),
            out_channels=int(vae.get("out_channels", 3)),
            latent_channels=latent,
            block_out_channels=tuple(outs),
            layers_per_block=tuple(enc_layers),
            downsample_type=tuple(kind for kind, _ in downs),
            spatio_temporal_scaling=(True,) * len(downs),
            decoder_block_out_channels=tuple(reversed(chans)),
            decoder_layers_per_block=tuple(reversed(dec_layers)),
            decoder_spatio_temporal_scaling=(True,) * n,
            decoder_inject_noise=(False,) * (n + 1),
            upsample_type=tuple(kind for kind, _ in ups),
            upsample_residual=tuple(bool(a.get("residual", False)) for _, a in reversed(ups)),
            upsample_factor=tuple(int(a.get("multiplier", 1)) for _, a in reversed(ups)),
            timestep_conditioning=bool(vae.get("timestep_conditioning", False)),
            patch_size=int(vae.get("patch_size", 4)),
            scaling_factor=float(vae.get("scaling_factor", 1.0)),
            decoder_causal=bool(vae.get("causal_decoder", False)),
            encoder_spatial_padding_mode=str(vae.get("encoder_spatial_padding_mode", vae.get("spatial_padding_mode", "zeros"))),
            decoder_spatial_padding_mode=str(vae.get("decoder_spatial_padding_mode", "reflect")),
        )


@dataclasses.dataclass(frozen=True)
class BlockPlan:
    """One encoder down block or decoder up block, in execution order (see :meth:`LTX2VAEArchConfig.decoder_blocks`)."""

    in_channels: int
    out_channels: int
    layers: int
    resample: str | None
    residual: bool
    factor: int


LTX2_VAE_ARCH = LTX2VAEArchConfig()
"""The published LTX-2 video VAE (as diffusers' conversion script configures it): 32x/8x, 128 channels."""


def reduced_width(arch: LTX2VAEArchConfig, divisor: int) -> LTX2VAEArchConfig:
    """Same depth and layout with every width divided by ``divisor`` (latent channels too)."""
    if divisor < 1:
        raise ValueError(f"divisor must be >= 1, got {divisor}")

    def cut(v: int) -> int:
        if v % divisor:
            raise ValueError(f"width {v} is not divisible by {divisor}")
        return v // divisor

    return dataclasses.replace(
        arch,
        latent_channels=cut(arch.latent_channels),
        block_out_channels=tuple(cut(v) for v in arch.block_out_channels),
        decoder_block_out_channels=tuple(cut(v) for v in arch.decoder_block_out_channels),
    )


def tiny_ltx2_arch(
    *, decoder_causal: bool = False, timestep_conditioning: bool = False, depth: int = 1
) -> LTX2VAEArchConfig:
    """The LTX-2 resampling layout (32x space, 8x time) with tiny widths and ``depth`` resnets per block."""
    return LTX2VAEArchConfig(
        latent_channels=8,
        block_out_channels=(16, 16, 32, 32),
        decoder_block_out_channels=(8, 16, 32),
        layers_per_block=(depth,) * 5,
        decoder_layers_per_block=(depth,) * 4,
        decoder_causal=decoder_causal,
        timestep_conditioning=timestep_conditioning,
    )


def shallow_ltx2_arch(**overrides: Any) -> LTX2VAEArchConfig:
    """Tiny LTX-2 layout with resnets only at the two finest encoder levels and the finest decoder level:
    a reach of ~3 latents, so exact tiles can be small (tests, examples). ``overrides``: any field."""
    fields: dict[str, Any] = dict(
        latent_channels=8,
        block_out_channels=(16, 16, 32, 32),
        decoder_block_out_channels=(8, 16, 32),
        layers_per_block=(1, 1, 0, 0, 0),
        decoder_layers_per_block=(1, 0, 0, 0),
    )
    return LTX2VAEArchConfig(**{**fields, **overrides})
