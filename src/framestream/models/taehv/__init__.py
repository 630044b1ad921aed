"""TAEHV: the tiny autoencoder for Wan video latents (public ``taew2_1.pth`` / ``taew2_2.pth``),
streaming over an explicit per-stream state."""

from framestream.models.taehv.checkpoint import (
    TAEHVCheckpointError,
    infer_taehv_arch,
    load_taehv,
    read_taehv_state_dict,
)
from framestream.models.taehv.config import (
    TAEHV_ARCH_PRESETS,
    TAEW2_1_ARCH,
    TAEW2_2_ARCH,
    TAEHVArchConfig,
    tiny_taehv_arch,
)
from framestream.models.taehv.model import (
    TAEHV,
    init_taehv_random,
    memblock_input_shapes,
    run_stack,
)
from framestream.models.taehv.state import TAEHVDecodeState, TAEHVEncodeState

__all__ = [
    "TAEHV",
    "TAEHVArchConfig",
    "TAEHVCheckpointError",
    "TAEHVDecodeState",
    "TAEHVEncodeState",
    "TAEHV_ARCH_PRESETS",
    "TAEW2_1_ARCH",
    "TAEW2_2_ARCH",
    "infer_taehv_arch",
    "init_taehv_random",
    "load_taehv",
    "memblock_input_shapes",
    "read_taehv_state_dict",
    "run_stack",
    "tiny_taehv_arch",
]
