"""Loading TAEHV checkpoints in the public layout (``taew2_1.pth``, ``taew2_2.pth``).

The files are plain ``torch.save`` state dicts with the keys of two ``nn.Sequential``
stacks, ``encoder.<index>.…`` and ``decoder.<index>.…``. They are read with
``weights_only=True`` (no pickled code runs). Two quirks of the public files are handled:

- the first decoder TGrow (index 7) runs with stride 1 for the Wan models, but the file
  may hold the weight of a stride-2 TGrow; only its last-frame output channels are kept,
  as the public loader does;
- the architecture (latent channels, patch size, widths) is read off the weight shapes,
  so one loader serves both Wan 2.1 and Wan 2.2 files.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from framestream.models.taehv.config import TAEHVArchConfig
from framestream.models.taehv.layers import TGrow
from framestream.models.taehv.model import TAEHV

__all__ = ["TAEHVCheckpointError", "read_taehv_state_dict", "infer_taehv_arch", "load_taehv"]


class TAEHVCheckpointError(ValueError):
    """The file is not a TAEHV checkpoint of the expected layout (the message says what is off)."""


def read_taehv_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The raw state dict of a ``.pth`` (``weights_only``) or ``.safetensors`` TAEHV file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"TAEHV checkpoint {path} does not exist (public files: github.com/madebyollin/taehv)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - re-raised with the file named
            raise TAEHVCheckpointError(f"{path}: not a weights-only torch checkpoint ({exc})") from exc
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise TAEHVCheckpointError(f"{path}: expected a mapping of parameter names to tensors")
    return dict(state)


def _shape(state: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...]:
    if key not in state:
        raise TAEHVCheckpointError(f"TAEHV checkpoint lacks {key!r} (not the taehv nn.Sequential layout)")
    return tuple(state[key].shape)


def infer_taehv_arch(state: Mapping[str, torch.Tensor]) -> TAEHVArchConfig:
    """The architecture a public-layout state dict was trained with, from its weight shapes."""
    has_decoder = any(k.startswith("decoder.") for k in state)
    has_encoder = any(k.startswith("encoder.") for k in state)
    if not (has_decoder or has_encoder):
        raise TAEHVCheckpointError("TAEHV checkpoint has neither encoder.* nor decoder.* keys")
    fields: dict[str, object] = {}
    if has_decoder:
        width0, latent = _shape(state, "decoder.1.weight")[:2]
        widths = (width0, _shape(state, "decoder.8.weight")[0], _shape(state, "decoder.14.weight")[0])
        last = _shape(state, "decoder.20.weight")[0]
        out = _shape(state, "decoder.22.weight")[0]
        patch = round((out / 3) ** 0.5)
        if 3 * patch * patch != out:
            raise TAEHVCheckpointError(f"decoder.22.weight has {out} output channels, not 3 * patch^2")
        fields.update(latent_channels=latent, patch_size=patch, decoder_channels=(*widths, last))
    if has_encoder:
        enc_width, enc_in = _shape(state, "encoder.0.weight")[:2]
        patch = round((enc_in / 3) ** 0.5)
        fields.update(encoder_channels=enc_width, patch_size=patch, latent_channels=_shape(state, "encoder.17.weight")[0])
        strides = tuple(_shape(state, f"encoder.{i}.conv.weight")[1] // enc_width for i in (2, 7, 12))
        fields["encoder_time_downscale"] = tuple(s == 2 for s in strides)
    return TAEHVArchConfig(**fields)  # type: ignore[arg-type]


def _fit_tgrow_weights(model: TAEHV, state: dict[str, torch.Tensor]) -> None:
    """Keep the last-frame channels of TGrow weights stored for a larger stride than the model runs."""
    if model.decoder is None:
        return
    for index, layer in enumerate(model.decoder):
        key = f"decoder.{index}.conv.weight"
        if isinstance(layer, TGrow) and key in state:
            want = layer.conv.weight.shape[0]
            if state[key].shape[0] > want and state[key].shape[0] % want == 0:
                state[key] = state[key][-want:]


def load_taehv(
    path: str | Path,
    *,
    arch: TAEHVArchConfig | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    include_encoder: bool = True,
    include_decoder: bool = True,
) -> TAEHV:
    """A :class:`TAEHV` in eval mode with the weights of ``path``.

    ``arch`` defaults to the one read off the file's shapes; when given, it is checked
    against them. Only the halves asked for are built; a half the file lacks is an error.
    """
    state = read_taehv_state_dict(path)
    found = infer_taehv_arch(state)
    arch = found if arch is None else arch
    model = TAEHV(arch, include_encoder=include_encoder, include_decoder=include_decoder)
    _fit_tgrow_weights(model, state)
    wanted = model.state_dict()
    missing = sorted(k for k in wanted if k not in state)
    if missing:
        raise TAEHVCheckpointError(f"{path}: missing {len(missing)} keys for this TAEHV, e.g. {missing[:3]}")
    bad = [k for k in wanted if tuple(state[k].shape) != tuple(wanted[k].shape)]
    if bad:
        k = bad[0]
        raise TAEHVCheckpointError(
            f"{path}: {len(bad)} weights do not fit the architecture, e.g. {k} {tuple(state[k].shape)} "
            f"vs {tuple(wanted[k].shape)} (file looks like {found})"
        )
    model.load_state_dict({k: state[k] for k in wanted}, strict=True)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)
