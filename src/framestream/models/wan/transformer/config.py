"""Configs of the Wan 2.1 DiT: the architecture (diffusers field names) and the pipeline adapter.

:class:`WanTransformerArchConfig` describes the network only. Its field names and
defaults are those of diffusers' ``WanTransformer3DModel`` config, so a diffusers
``transformer/config.json`` maps onto it field by field
(:meth:`WanTransformerArchConfig.from_diffusers_config`), and the original Wan
``config.json`` (``dim``, ``num_heads``, ``in_dim`` ...) through
:meth:`WanTransformerArchConfig.from_original_config`.

:class:`WanTransformerConfig` is the :class:`~framestream.diffusion.transformer.TransformerConfig`
the pipeline builds: which weights to load, the latent shape of one AR step, causal
(block-wise KV cache) or bidirectional mode, and classifier-free guidance.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import field
from typing import Any, Literal

import torch

from framestream.config import PrintableConfig, config_dataclass
from framestream.diffusion.transformer import TransformerConfig

__all__ = [
    "WanTransformerArchConfig",
    "WanTransformerConfig",
    "WAN21_T2V_1_3B",
    "WAN21_T2V_14B",
    "WAN_TINY",
    "WAN22_TI2V_5B",
    "WAN22_A14B",
    "WAN22_TINY",
    "WAN22_I2V_A14B",
    "WAN22_I2V_TINY",
    "WAN_ARCH_PRESETS",
]

# Keys a diffusers config.json carries that are not architecture fields.
_DIFFUSERS_META_KEYS = {"_class_name", "_diffusers_version", "_name_or_path", "_use_default_values"}


@config_dataclass
class WanTransformerArchConfig(PrintableConfig):
    """Architecture of a Wan 2.1 DiT, with diffusers' ``WanTransformer3DModel`` field names.

    Only the T2V variant is implemented: ``image_dim`` / ``added_kv_proj_dim`` (the I2V
    CLIP-image cross-attention branch) and ``pos_embed_seq_len`` (FLF2V) must stay ``None``.
    """

    patch_size: tuple[int, int, int] = (1, 2, 2)
    """Conv3d patch (t, h, w); the latent is split into non-overlapping patches."""
    num_attention_heads: int = 12
    attention_head_dim: int = 128
    """Head dim; RoPE splits it into t / h / w parts as ``d - 4*(d//6)``, ``2*(d//6)``, ``2*(d//6)``."""
    in_channels: int = 16
    out_channels: int = 16
    text_dim: int = 4096
    """Width of the text-encoder features (UMT5-XXL: 4096)."""
    freq_dim: int = 256
    """Width of the sinusoidal timestep embedding."""
    ffn_dim: int = 8960
    num_layers: int = 30
    cross_attn_norm: bool = True
    """LayerNorm (with affine) before the text cross-attention."""
    qk_norm: str | None = "rms_norm_across_heads"
    """RMS norm of q and k over the full inner dim (all heads); the only supported value."""
    eps: float = 1e-6
    image_dim: int | None = None
    added_kv_proj_dim: int | None = None
    rope_max_seq_len: int = 1024
    """Largest RoPE position per axis (frames, patch rows, patch columns)."""
    pos_embed_seq_len: int | None = None

    def __post_init__(self) -> None:
        if len(self.patch_size) != 3 or any(p < 1 for p in self.patch_size):
            raise ValueError(f"patch_size must be three positive ints, got {self.patch_size}")
        if self.attention_head_dim % 2 or self.attention_head_dim < 6:
            raise ValueError(f"attention_head_dim must be even and >= 6 (RoPE t/h/w split), got {self.attention_head_dim}")
        if self.image_dim is not None or self.added_kv_proj_dim is not None or self.pos_embed_seq_len is not None:
            raise ValueError(
                "Wan I2V / FLF2V (image_dim, added_kv_proj_dim, pos_embed_seq_len) is not implemented; "
                "only the text-to-video DiT is supported"
            )
        if self.qk_norm != "rms_norm_across_heads":
            raise ValueError(f"qk_norm must be 'rms_norm_across_heads' (as every Wan 2.1 checkpoint), got {self.qk_norm!r}")
        for name in ("num_attention_heads", "in_channels", "out_channels", "text_dim", "freq_dim", "ffn_dim", "num_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.freq_dim % 2:
            raise ValueError(f"freq_dim must be even, got {self.freq_dim}")

    @property
    def inner_dim(self) -> int:
        """Model width ``num_attention_heads * attention_head_dim`` (1536 for 1.3B, 5120 for 14B)."""
        return self.num_attention_heads * self.attention_head_dim

    @property
    def rope_split(self) -> tuple[int, int, int]:
        """Head-dim channels given to the (t, h, w) rotary axes, as Wan splits them."""
        d = self.attention_head_dim
        hw = 2 * (d // 6)
        return d - 2 * hw, hw, hw

    def num_parameters(self) -> int:
        """Parameter count of the network this config builds (no need to build it)."""
        d, f, t = self.inner_dim, self.ffn_dim, self.text_dim
        patch = self.in_channels * math.prod(self.patch_size) * d + d
        text = t * d + d + d * d + d
        time = self.freq_dim * d + d + d * d + d + d * 6 * d + 6 * d
        attn = 4 * (d * d + d) + 2 * d
        block = 2 * attn + (d * f + f + f * d + d) + 6 * d + (2 * d if self.cross_attn_norm else 0)
        head = d * self.out_channels * math.prod(self.patch_size) + self.out_channels * math.prod(self.patch_size) + 2 * d
        return patch + text + time + self.num_layers * block + head

    # ----------------------------------------------------------------- conversions
    @classmethod
    def from_diffusers_config(cls, config: dict[str, Any]) -> "WanTransformerArchConfig":
        """Build from a diffusers ``WanTransformer3DModel`` config dict (``transformer/config.json``)."""
        names = {f.name for f in dataclasses.fields(cls)}
        data = {k: v for k, v in config.items() if k not in _DIFFUSERS_META_KEYS}
        # Older diffusers configs carry these; they have no effect on the T2V network.
        for ignored in ("window_size", "add_img_emb"):
            data.pop(ignored, None)
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"diffusers Wan transformer config has unknown field(s) {unknown}")
        if "patch_size" in data:
            data["patch_size"] = tuple(int(p) for p in data["patch_size"])
        return cls(**data)

    def to_diffusers_config(self) -> dict[str, Any]:
        """Dict accepted by ``diffusers.WanTransformer3DModel(**config)``."""
        out = dataclasses.asdict(self)
        out["patch_size"] = list(self.patch_size)
        return out

    @classmethod
    def from_original_config(cls, config: dict[str, Any]) -> "WanTransformerArchConfig":
        """Build from the original Wan ``config.json`` (``WanModel``: dim, num_heads, in_dim, ...)."""
        model_type = config.get("model_type", "t2v")
        supported = "only Wan t2v, ti2v and Wan 2.2 i2v (noise + mask + condition channels) DiTs are supported"
        if model_type not in ("t2v", "ti2v", "i2v"):  # Wan 2.1 i2v (CLIP branch) is also refused by its keys
            raise ValueError(f"{supported}; this one is model_type={model_type!r}")
        if model_type == "i2v" and int(config.get("in_dim", 16)) != 2 * int(config.get("out_dim", 16)) + 4:
            raise ValueError(f"{supported}; this model_type='i2v' config has in_dim {config.get('in_dim', 16)}")
        dim = int(config["dim"])
        heads = int(config["num_heads"])
        if dim % heads:
            raise ValueError(f"original Wan config: dim {dim} is not divisible by num_heads {heads}")
        return cls(
            patch_size=tuple(int(p) for p in config.get("patch_size", (1, 2, 2))),
            num_attention_heads=heads,
            attention_head_dim=dim // heads,
            in_channels=int(config.get("in_dim", 16)),
            out_channels=int(config.get("out_dim", 16)),
            text_dim=int(config.get("text_dim", 4096)),
            freq_dim=int(config.get("freq_dim", 256)),
            ffn_dim=int(config["ffn_dim"]),
            num_layers=int(config["num_layers"]),
            cross_attn_norm=bool(config.get("cross_attn_norm", True)),
            eps=float(config.get("eps", 1e-6)),
        )

    def to_original_config(self) -> dict[str, Any]:
        """The original Wan ``config.json`` for this architecture."""
        return {
            "_class_name": "WanModel",
            # TI2V-5B is the only published DiT on the 48-channel latent; I2V takes noise + mask + condition.
            "model_type": "ti2v" if self.in_channels == 48 else "i2v" if self.in_channels == 2 * self.out_channels + 4 else "t2v",
            "patch_size": list(self.patch_size),
            "dim": self.inner_dim,
            "num_heads": self.num_attention_heads,
            "in_dim": self.in_channels,
            "out_dim": self.out_channels,
            "text_dim": self.text_dim,
            "freq_dim": self.freq_dim,
            "ffn_dim": self.ffn_dim,
            "num_layers": self.num_layers,
            "cross_attn_norm": self.cross_attn_norm,
            "qk_norm": True,
            "eps": self.eps,
            "text_len": 512,
        }


WAN21_T2V_1_3B = WanTransformerArchConfig(
    num_attention_heads=12, attention_head_dim=128, ffn_dim=8960, num_layers=30
)
"""Wan 2.1 T2V 1.3B (also the Self-Forcing / CausVid backbone): width 1536, 30 layers."""

WAN21_T2V_14B = WanTransformerArchConfig(
    num_attention_heads=40, attention_head_dim=128, ffn_dim=13824, num_layers=40
)
"""Wan 2.1 T2V 14B: width 5120, 40 layers."""

WAN_TINY = WanTransformerArchConfig(
    num_attention_heads=2, attention_head_dim=12, text_dim=32, freq_dim=16, ffn_dim=48, num_layers=2
)
"""A few-thousand-parameter Wan DiT with the real 16-channel latent, for tests."""

WAN22_TI2V_5B = WanTransformerArchConfig(
    num_attention_heads=24, attention_head_dim=128, in_channels=48, out_channels=48, ffn_dim=14336, num_layers=30
)
"""Wan 2.2 TI2V 5B (Wan-AI/Wan2.2-TI2V-5B config: dim 3072, ffn 14336, 24 heads, 30 layers, 48-channel latent)."""

WAN22_A14B = WAN21_T2V_14B
"""Each of the two Wan 2.2 A14B T2V experts (high- and low-noise) has the Wan 2.1 14B architecture."""

WAN22_TINY = dataclasses.replace(WAN_TINY, in_channels=48, out_channels=48)
"""A tiny random Wan DiT on the 48-channel Wan 2.2 latent, for tests."""

WAN22_I2V_A14B = dataclasses.replace(WAN21_T2V_14B, in_channels=36)
"""Each Wan 2.2 I2V-A14B expert: the 14B DiT taking noise (16) + first-frame mask (4) + condition latents (16)."""

WAN22_I2V_TINY = dataclasses.replace(WAN_TINY, in_channels=36)
"""A tiny random I2V-A14B-style DiT (36 input channels, 16 output), for tests."""

WAN_ARCH_PRESETS: dict[str, WanTransformerArchConfig] = {
    "wan2.1-t2v-1.3b": WAN21_T2V_1_3B,
    "wan2.1-t2v-14b": WAN21_T2V_14B,
    "wan2.2-ti2v-5b": WAN22_TI2V_5B,
    "wan2.2-t2v-a14b": WAN22_A14B,
    "wan2.2-i2v-a14b": WAN22_I2V_A14B,
    "tiny": WAN_TINY,
    "tiny-wan2.2": WAN22_TINY,
    "tiny-i2v": WAN22_I2V_TINY,
}


def _wan_transformer_class() -> type:
    from framestream.models.wan.transformer.model import WanTransformer

    return WanTransformer


@config_dataclass
class WanTransformerConfig(TransformerConfig):
    """Pipeline adapter of the Wan DiT (:class:`~framestream.models.wan.transformer.model.WanTransformer`).

    Shapes are in latent units: ``num_frames`` latent frames per AR step (the causal
    block size, or the whole clip in bidirectional mode) of ``height`` x ``width`` latent
    pixels (480x832 video -> 60x104).
    """

    _target: type = field(default_factory=_wan_transformer_class)
    arch: WanTransformerArchConfig = WAN21_T2V_1_3B
    checkpoint_path: str | None = None
    """DiT weights: a file (``.safetensors``, ``.pth``/``.pt``, a shard index) or a directory
    (diffusers ``transformer/`` or the original Wan repo). ``None`` means random weights and
    requires ``allow_random_init``."""
    checkpoint_layout: Literal["auto", "diffusers", "original"] = "auto"
    """State-dict key layout; ``auto`` detects it from the keys."""
    use_ema: bool = True
    """For Self-Forcing training checkpoints holding ``generator`` and ``generator_ema``: take the EMA weights."""
    allow_random_init: bool = False
    """Build random weights when ``checkpoint_path`` is None (tests, benchmarks)."""
    init_seed: int = 0
    """Seed of the random weights when ``allow_random_init``."""
    dtype: torch.dtype = torch.bfloat16
    """Weight dtype; the time embedding, modulation tables and norms stay fp32 (as diffusers does)."""
    batch_size: int = 1
    num_frames: int = 21
    """Latent frames per AR step: the causal block size, or the whole clip when bidirectional."""
    height: int = 60
    width: int = 104
    causal: bool = False
    """Block-causal AR mode with a KV cache of earlier blocks (Self-Forcing / CausVid)."""
    kv_cache_frames: int = 21
    """Capacity of the preallocated self-attention KV cache, in latent frames of finalized blocks."""
    rolling_kv_cache: bool = False
    """When a finalized block does not fit, evict the oldest non-sink frames instead of raising.
    Equivalent to Self-Forcing's ``local_attn_size = kv_cache_frames + num_frames``."""
    sink_frames: int = 0
    """Leading frames never evicted from a rolling cache (attention sink; 3 keeps the first block)."""
    guidance_scale: float = 1.0
    """Classifier-free guidance; > 1 batches cond and uncond (negative prompt) through the DiT."""
    time_embedding_fp64: bool = True
    """Sinusoidal timestep features in float64 as the original Wan code; False uses float32 as diffusers."""
    compile: bool = False
    """Run every transformer block's forward under ``torch.compile`` (static shapes: one graph per
    block shape; a causal rollout's denoising steps of one AR block share it)."""

    def __post_init__(self) -> None:
        for name in ("batch_size", "num_frames", "height", "width", "kv_cache_frames"):
            if getattr(self, name) < 1:
                raise ValueError(f"WanTransformerConfig.{name} must be >= 1, got {getattr(self, name)}")
        pt, ph, pw = self.arch.patch_size
        if self.num_frames % pt or self.height % ph or self.width % pw:
            raise ValueError(
                f"latent (frames, height, width) = ({self.num_frames}, {self.height}, {self.width}) "
                f"is not divisible by patch_size {self.arch.patch_size}"
            )
        if not 0 <= self.sink_frames < self.kv_cache_frames:
            raise ValueError(f"sink_frames must be in [0, kv_cache_frames), got {self.sink_frames}")
        if self.rolling_kv_cache and self.kv_cache_frames - self.sink_frames < self.num_frames:
            raise ValueError(
                f"a rolling KV cache needs room for one block after the sink: kv_cache_frames ({self.kv_cache_frames}) "
                f"- sink_frames ({self.sink_frames}) < num_frames ({self.num_frames})"
            )
        if self.guidance_scale <= 0:
            raise ValueError(f"guidance_scale must be > 0, got {self.guidance_scale}")
