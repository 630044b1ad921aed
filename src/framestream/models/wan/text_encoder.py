"""UMT5 text encoder of Wan 2.1, through ``transformers``' ``UMT5EncoderModel``.

Wan encodes a prompt with UMT5-XXL (4096 wide): the prompt is tokenized to at most
``text_len`` (512) tokens with EOS, encoded with the padding masked out, then trimmed to
its own length and zero-padded back to ``text_len``. :class:`UMT5TextEncoder` returns
exactly that ``[B, text_len, d_model]`` tensor (zero rows past each prompt's tokens).

Weights come from either

- a Hugging Face directory holding a ``UMT5EncoderModel`` (``config.json`` +
  safetensors): the ``text_encoder/`` folder of ``Wan-AI/Wan2.1-T2V-1.3B-Diffusers``; or
- the original Wan file ``models_t5_umt5-xxl-enc-bf16.pth`` (``Wan-AI/Wan2.1-T2V-1.3B``),
  whose keys are mapped onto the ``transformers`` names by :func:`wan_t5_to_hf_key`.

The tokenizer is read with ``AutoTokenizer`` from a local directory (``google/umt5-xxl/``
in the original repo, ``tokenizer/`` in the diffusers one). Token ids can also be passed
directly (a ``[B, L]`` tensor, or a dict with ``input_ids`` / ``attention_mask``), which
skips the tokenizer entirely.
"""

from __future__ import annotations

import json
import re
from dataclasses import field
from pathlib import Path
from typing import Any

import torch

from framestream.config import config_dataclass
from framestream.encoders.base import Encoder, EncoderConfig
from framestream.utils.state_dict import load_state_dict_strict, read_state_dict

__all__ = [
    "UMT5TextEncoderConfig",
    "UMT5TextEncoder",
    "WAN_NEGATIVE_PROMPT",
    "UMT5_XXL_CONFIG",
    "wan_t5_to_hf_key",
    "hf_to_wan_t5_key",
    "TEXT_ENCODER_FILES_HELP",
]

WAN_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，JPEG压缩残留，"
    "丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，"
    "静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)
"""The default negative prompt of Wan 2.1 (``sample_neg_prompt`` of its configs)."""

UMT5_XXL_CONFIG: dict[str, Any] = {
    "vocab_size": 256384,
    "d_model": 4096,
    "d_kv": 64,
    "d_ff": 10240,
    "num_layers": 24,
    "num_heads": 64,
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
    "feed_forward_proj": "gated-gelu",
    "dropout_rate": 0.0,
    "layer_norm_epsilon": 1e-6,
    "tie_word_embeddings": False,
    "is_encoder_decoder": False,
    "pad_token_id": 0,
    "eos_token_id": 1,
}
"""google/umt5-xxl encoder hyper-parameters (used for the original ``.pth`` file, which has no config)."""

TEXT_ENCODER_FILES_HELP = (
    "expected the UMT5-XXL text encoder: models_t5_umt5-xxl-enc-bf16.pth with the google/umt5-xxl/ tokenizer "
    "folder (Wan-AI/Wan2.1-T2V-1.3B), or text_encoder/ + tokenizer/ (Wan-AI/Wan2.1-T2V-1.3B-Diffusers)"
)

# ---------------------------------------------------------------------------- key map
_WAN_T5_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")
_HF_T5_BLOCK = re.compile(r"^encoder\.block\.(\d+)\.(.+)$")
# (Wan T5Encoder name inside blocks.N., transformers name inside encoder.block.N.)
_T5_IN_BLOCK = [
    ("norm1.weight", "layer.0.layer_norm.weight"),
    ("attn.q.weight", "layer.0.SelfAttention.q.weight"),
    ("attn.k.weight", "layer.0.SelfAttention.k.weight"),
    ("attn.v.weight", "layer.0.SelfAttention.v.weight"),
    ("attn.o.weight", "layer.0.SelfAttention.o.weight"),
    ("pos_embedding.embedding.weight", "layer.0.SelfAttention.relative_attention_bias.weight"),
    ("norm2.weight", "layer.1.layer_norm.weight"),
    ("ffn.gate.0.weight", "layer.1.DenseReluDense.wi_0.weight"),
    ("ffn.fc1.weight", "layer.1.DenseReluDense.wi_1.weight"),
    ("ffn.fc2.weight", "layer.1.DenseReluDense.wo.weight"),
]
_T5_TOP = [("token_embedding.weight", "shared.weight"), ("norm.weight", "encoder.final_layer_norm.weight")]


def wan_t5_to_hf_key(key: str) -> str:
    """Original Wan ``T5Encoder`` key -> ``transformers`` ``UMT5EncoderModel`` key (unknown keys unchanged)."""
    match = _WAN_T5_BLOCK.match(key)
    if match:
        for wan, hf in _T5_IN_BLOCK:
            if match.group(2) == wan:
                return f"encoder.block.{match.group(1)}.{hf}"
        return key
    return dict(_T5_TOP).get(key, key)


def hf_to_wan_t5_key(key: str) -> str:
    """Inverse of :func:`wan_t5_to_hf_key` (``encoder.embed_tokens.weight`` has no Wan name: it is tied)."""
    match = _HF_T5_BLOCK.match(key)
    if match:
        for wan, hf in _T5_IN_BLOCK:
            if match.group(2) == hf:
                return f"blocks.{match.group(1)}.{wan}"
        return key
    return {hf: wan for wan, hf in _T5_TOP}.get(key, key)


def _encoder_class() -> type:
    return UMT5TextEncoder


@config_dataclass
class UMT5TextEncoderConfig(EncoderConfig):
    """Config of :class:`UMT5TextEncoder`."""

    _target: type = field(default_factory=_encoder_class)
    checkpoint_path: str | None = None
    """A ``UMT5EncoderModel`` directory (diffusers ``text_encoder/``) or the Wan ``models_t5_umt5-xxl-enc-bf16.pth``."""
    tokenizer_path: str | None = None
    """Tokenizer directory (``google/umt5-xxl/`` or diffusers ``tokenizer/``). ``None``: ``checkpoint_path``
    when that is a directory holding a tokenizer, else token ids must be passed instead of text."""
    model_config_path: str | None = None
    """``config.json`` of the UMT5 encoder for a bare weights file; ``None`` uses :data:`UMT5_XXL_CONFIG`."""
    text_len: int = 512
    dtype: torch.dtype = torch.bfloat16
    negative_prompt: str = ""
    """Negative prompt used for classifier-free guidance when the caller gives none."""

    def __post_init__(self) -> None:
        if self.text_len < 1:
            raise ValueError(f"text_len must be >= 1, got {self.text_len}")


def _clean(text: str) -> str:
    """Collapse whitespace, as Wan's tokenizer wrapper does before tokenizing."""
    return " ".join(text.split())


class UMT5TextEncoder(Encoder):
    """Prompts (or token ids) -> ``[B, text_len, d_model]`` UMT5 features, zero past each prompt."""

    config: UMT5TextEncoderConfig

    def __init__(self, config: UMT5TextEncoderConfig) -> None:
        super().__init__(config)
        if config.checkpoint_path is None:
            raise ValueError(f"UMT5TextEncoderConfig.checkpoint_path is not set; {TEXT_ENCODER_FILES_HELP}")
        self.model = _load_umt5(config)
        self.tokenizer = _load_tokenizer(config)

    @property
    def d_model(self) -> int:
        return int(self.model.config.d_model)

    @property
    def pad_token_id(self) -> int:
        if self.tokenizer is not None and self.tokenizer.pad_token_id is not None:
            return int(self.tokenizer.pad_token_id)
        return int(getattr(self.model.config, "pad_token_id", 0) or 0)

    def tokenize(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(input_ids, attention_mask)``, each ``[B, text_len]``: truncated, EOS added, padded."""
        if self.tokenizer is None:
            raise ValueError(
                "no tokenizer configured (UMT5TextEncoderConfig.tokenizer_path): pass token ids instead of text, "
                f"or {TEXT_ENCODER_FILES_HELP}"
            )
        tokens = self.tokenizer(
            [_clean(p) for p in prompts],
            padding="max_length",
            max_length=self.config.text_len,
            truncation=True,
            add_special_tokens=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        return tokens["input_ids"], tokens["attention_mask"]

    def _ids_and_mask(self, input: Any) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: A002
        if isinstance(input, str):
            return self.tokenize([input])
        if isinstance(input, (list, tuple)) and all(isinstance(p, str) for p in input):
            if not input:
                raise ValueError("empty prompt list")
            return self.tokenize(list(input))
        if isinstance(input, dict):
            ids = torch.as_tensor(input["input_ids"])
            mask = torch.as_tensor(input.get("attention_mask", ids != self.pad_token_id))
        elif isinstance(input, torch.Tensor):
            ids = input
            mask = ids != self.pad_token_id
        else:
            raise TypeError(f"expected a prompt, a list of prompts or token ids, got {type(input).__name__}")
        if ids.ndim == 1:
            ids, mask = ids[None], mask[None]
        ids, mask = ids[:, : self.config.text_len], mask[:, : self.config.text_len].long()
        pad = self.config.text_len - ids.shape[1]
        if pad > 0:
            ids = torch.nn.functional.pad(ids, (0, pad), value=self.pad_token_id)
            mask = torch.nn.functional.pad(mask, (0, pad), value=0)
        return ids.long(), mask

    @torch.no_grad()
    def forward(self, input: Any) -> torch.Tensor:  # noqa: A002
        """Encode prompts or token ids; rows past each sequence's length are zero (Wan's trim + zero-pad)."""
        ids, mask = self._ids_and_mask(input)
        device = next(self.model.parameters()).device
        ids, mask = ids.to(device), mask.to(device)
        hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
        return hidden * mask[..., None].to(hidden.dtype)


# ------------------------------------------------------------------------------ loading
def _load_umt5(config: UMT5TextEncoderConfig) -> torch.nn.Module:
    from transformers import UMT5Config, UMT5EncoderModel

    path = Path(config.checkpoint_path)  # type: ignore[arg-type]
    if not path.exists():
        raise FileNotFoundError(f"text encoder not found: {path}; {TEXT_ENCODER_FILES_HELP}")
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} has no config.json of a UMT5EncoderModel; {TEXT_ENCODER_FILES_HELP}")
        model = UMT5EncoderModel.from_pretrained(str(path), dtype=config.dtype)
        return model.eval()
    if config.model_config_path is not None:
        hf_config = UMT5Config(**json.loads(Path(config.model_config_path).read_text()))
    else:
        hf_config = UMT5Config(**UMT5_XXL_CONFIG)
    state_dict = read_state_dict(path)
    if any(k.startswith("blocks.") or k == "token_embedding.weight" for k in state_dict):
        state_dict = {wan_t5_to_hf_key(k): v for k, v in state_dict.items()}
    if "shared.weight" in state_dict and "encoder.embed_tokens.weight" not in state_dict:
        state_dict["encoder.embed_tokens.weight"] = state_dict["shared.weight"]
    with torch.device("meta"):
        model = UMT5EncoderModel(hf_config)
    load_state_dict_strict(model, state_dict, str(path), dtype=config.dtype)
    model.encoder.embed_tokens = model.shared
    return model.eval()


def _has_tokenizer(folder: Path) -> bool:
    return any((folder / name).is_file() for name in ("tokenizer.json", "spiece.model", "tokenizer_config.json"))


def _load_tokenizer(config: UMT5TextEncoderConfig) -> Any:
    from transformers import AutoTokenizer

    if config.tokenizer_path is not None:
        folder = Path(config.tokenizer_path)
        if not folder.is_dir() or not _has_tokenizer(folder):
            raise FileNotFoundError(f"no tokenizer in {folder}; {TEXT_ENCODER_FILES_HELP}")
        return AutoTokenizer.from_pretrained(str(folder))
    ckpt = Path(config.checkpoint_path)  # type: ignore[arg-type]
    if ckpt.is_dir() and _has_tokenizer(ckpt):
        return AutoTokenizer.from_pretrained(str(ckpt))
    return None
