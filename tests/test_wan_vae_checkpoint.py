"""Wan VAE checkpoints: key maps, detection and strict loading, against diffusers' AutoencoderKLWan."""

from __future__ import annotations

import dataclasses
import json
import pickle
from pathlib import Path

import pytest
import torch
import torch.nn as nn

diffusers = pytest.importorskip("diffusers")
from diffusers import AutoencoderKLWan  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from framestream.models.wan.vae import checkpoint as ckpt  # noqa: E402
from framestream.models.wan.vae.checkpoint import (  # noqa: E402
    WanVAECheckpointError,
    detect_checkpoint,
    diffusers_to_original_key,
    diffusers_to_original_state_dict,
    load_wan_vae,
    original_to_diffusers_key,
    resolve_checkpoint,
)
from framestream.models.wan.vae.config import (  # noqa: E402
    WAN21_VAE_ARCH,
    WAN22_VAE_ARCH,
    tiny_wan21_arch,
    tiny_wan22_arch,
)
from framestream.utils.state_dict import CheckpointMismatchError  # noqa: E402

VERSIONS = ("2.1", "2.2")
TINY = {"2.1": tiny_wan21_arch, "2.2": tiny_wan22_arch}
FULL = {"2.1": WAN21_VAE_ARCH, "2.2": WAN22_VAE_ARCH}
ORIGINAL_NAME = {"2.1": "Wan2.1_VAE.pth", "2.2": "Wan2.2_VAE.pth"}


# ----------------------------------------------------------------------------- helpers
def diffusers_vae(arch, device="cpu") -> AutoencoderKLWan:
    with torch.device(device):
        return AutoencoderKLWan(**arch.to_diffusers_kwargs())


def randomise(model: nn.Module, seed: int) -> nn.Module:
    """Every parameter non-zero and distinct (gammas around 1, so activations stay sane)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            p.copy_(1 + 0.1 * noise if name.endswith("gamma") else 0.05 * noise)
    return model.eval()


# A parameter-only copy of the ORIGINAL Wan module trees (wan/modules/vae.py and
# vae2_2.py): same attribute names, nesting and tensor shapes, no forward. It is the
# independent oracle for the key maps: its state dict is what Wan2.x_VAE.pth holds.
class _RMS(nn.Module):
    def __init__(self, dim: int, images: bool = True) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones((dim, 1, 1) if images else (dim, 1, 1, 1)))


class _Res(nn.Module):
    def __init__(self, i: int, o: int) -> None:
        super().__init__()
        self.residual = nn.Sequential(
            _RMS(i, images=False), nn.SiLU(), nn.Conv3d(i, o, 3),
            _RMS(o, images=False), nn.SiLU(), nn.Dropout(), nn.Conv3d(o, o, 3),
        )  # fmt: skip
        self.shortcut = nn.Conv3d(i, o, 1) if i != o else nn.Identity()


class _Attn(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm, self.to_qkv, self.proj = _RMS(dim), nn.Conv2d(dim, dim * 3, 1), nn.Conv2d(dim, dim, 1)


class _Resample(nn.Module):
    def __init__(self, dim: int, mode: str, v22: bool) -> None:
        super().__init__()
        if mode.startswith("up"):
            self.resample = nn.Sequential(nn.Upsample(), nn.Conv2d(dim, dim if v22 else dim // 2, 3))
            if mode == "upsample3d":
                self.time_conv = nn.Conv3d(dim, dim * 2, (3, 1, 1))
        else:
            self.resample = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(dim, dim, 3))
            if mode == "downsample3d":
                self.time_conv = nn.Conv3d(dim, dim, (3, 1, 1))


class _Stage(nn.Module):  # Wan 2.2 Down_ResidualBlock / Up_ResidualBlock (AvgDown/DupUp hold nothing)
    def __init__(self, attr: str, layers: list[nn.Module]) -> None:
        super().__init__()
        setattr(self, attr, nn.Sequential(*layers))


def _middle(dim: int) -> nn.Sequential:
    return nn.Sequential(_Res(dim, dim), _Attn(dim), _Res(dim, dim))


class _Encoder(nn.Module):
    def __init__(self, a, v22: bool) -> None:
        super().__init__()
        dims = [a.base_dim * u for u in (1, *a.dim_mult)]
        self.conv1 = nn.Conv3d(a.in_channels, dims[0], 3)
        layers, last = [], len(a.dim_mult) - 1
        for i, (i_dim, o_dim) in enumerate(zip(dims[:-1], dims[1:])):
            stage = []
            for _ in range(a.num_res_blocks):
                stage.append(_Res(i_dim, o_dim))
                i_dim = o_dim
            if i != last:
                stage.append(_Resample(o_dim, "downsample3d" if a.temperal_downsample[i] else "downsample2d", v22))
            layers += [_Stage("downsamples", stage)] if v22 else stage
        self.downsamples = nn.Sequential(*layers)
        self.middle = _middle(dims[-1])
        self.head = nn.Sequential(_RMS(dims[-1], images=False), nn.SiLU(), nn.Conv3d(dims[-1], a.z_dim * 2, 3))


class _Decoder(nn.Module):
    def __init__(self, a, v22: bool) -> None:
        super().__init__()
        mult = a.dim_mult
        dims = [a.decoder_dim * u for u in (mult[-1], *mult[::-1])]
        up_t = a.temperal_downsample[::-1]
        self.conv1 = nn.Conv3d(a.z_dim, dims[0], 3)
        self.middle = _middle(dims[0])
        layers, last = [], len(mult) - 1
        for i, (i_dim, o_dim) in enumerate(zip(dims[:-1], dims[1:])):
            if i > 0 and not v22:
                i_dim //= 2  # the 2.1 upsample conv halves the channels
            stage = []
            for _ in range(a.num_res_blocks + 1):
                stage.append(_Res(i_dim, o_dim))
                i_dim = o_dim
            if i != last:
                stage.append(_Resample(o_dim, "upsample3d" if up_t[i] else "upsample2d", v22))
            layers += [_Stage("upsamples", stage)] if v22 else stage
        self.upsamples = nn.Sequential(*layers)
        self.head = nn.Sequential(_RMS(dims[-1], images=False), nn.SiLU(), nn.Conv3d(dims[-1], a.out_channels, 3))


class _OriginalWanVAE(nn.Module):
    def __init__(self, a) -> None:
        super().__init__()
        v22 = a.is_residual
        self.encoder = _Encoder(a, v22)
        self.conv1 = nn.Conv3d(a.z_dim * 2, a.z_dim * 2, 1)
        self.conv2 = nn.Conv3d(a.z_dim, a.z_dim, 1)
        self.decoder = _Decoder(a, v22)


def shapes_of(module: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


# ----------------------------------------------------------------------------- key maps
@pytest.mark.parametrize("size", ["tiny", "full"])
@pytest.mark.parametrize("version", VERSIONS)
def test_key_maps_match_the_original_module_tree(version, size):
    arch = TINY[version]() if size == "tiny" else FULL[version]
    d_shapes = shapes_of(diffusers_vae(arch, "meta"))
    with torch.device("meta"):
        o_shapes = shapes_of(_OriginalWanVAE(arch))
    if size == "full":  # the published key counts
        assert len(d_shapes) == len(o_shapes) == {"2.1": 194, "2.2": 196}[version]

    # diffusers -> original gives exactly the original tree, shape for shape (no reshapes needed) ...
    mapped = {diffusers_to_original_key(k, version): s for k, s in d_shapes.items()}
    assert mapped == o_shapes
    # ... and the two maps are exact inverses over the full key set.
    assert {original_to_diffusers_key(k, version): s for k, s in o_shapes.items()} == d_shapes
    assert all(original_to_diffusers_key(diffusers_to_original_key(k, version), version) == k for k in d_shapes)
    assert all(diffusers_to_original_key(original_to_diffusers_key(k, version), version) == k for k in o_shapes)


def test_key_maps_spot_checks_and_cross_check_with_diffusers_single_file():
    o21 = {
        "encoder.downsamples.0.residual.0.gamma": "encoder.down_blocks.0.norm1.gamma",
        "encoder.downsamples.3.shortcut.weight": "encoder.down_blocks.3.conv_shortcut.weight",
        "encoder.downsamples.5.time_conv.bias": "encoder.down_blocks.5.time_conv.bias",
        "encoder.middle.1.norm.gamma": "encoder.mid_block.attentions.0.norm.gamma",
        "encoder.middle.2.residual.6.weight": "encoder.mid_block.resnets.1.conv2.weight",
        "decoder.upsamples.3.resample.1.weight": "decoder.up_blocks.0.upsamplers.0.resample.1.weight",
        "decoder.upsamples.14.residual.3.gamma": "decoder.up_blocks.3.resnets.2.norm2.gamma",
        "decoder.head.2.weight": "decoder.conv_out.weight",
        "decoder.head.0.gamma": "decoder.norm_out.gamma",
        "conv1.weight": "quant_conv.weight",
        "conv2.bias": "post_quant_conv.bias",
    }
    o22 = {
        "encoder.downsamples.0.downsamples.1.residual.2.weight": "encoder.down_blocks.0.resnets.1.conv1.weight",
        "encoder.downsamples.1.downsamples.2.time_conv.weight": "encoder.down_blocks.1.downsampler.time_conv.weight",
        "decoder.upsamples.0.upsamples.3.resample.1.bias": "decoder.up_blocks.0.upsampler.resample.1.bias",
        "decoder.upsamples.3.upsamples.0.shortcut.weight": "decoder.up_blocks.3.resnets.0.conv_shortcut.weight",
        "decoder.middle.1.to_qkv.weight": "decoder.mid_block.attentions.0.to_qkv.weight",
    }
    for version, table in (("2.1", o21), ("2.2", o22)):
        for original, diff in table.items():
            assert original_to_diffusers_key(original, version) == diff
            assert diffusers_to_original_key(diff, version) == original
    with pytest.raises(ValueError, match="version"):
        original_to_diffusers_key("conv1.weight", "2.3")
    # diffusers' own Wan 2.1 single-file converter agrees on the full-size key set.
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    d_keys = diffusers_vae(WAN21_VAE_ARCH, "meta").state_dict()
    original = diffusers_to_original_state_dict(d_keys, "2.1")
    assert set(convert_wan_vae_to_diffusers(original)) == set(d_keys)


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """Per version: the diffusers reference model and its weights in every layout on disk."""
    out = {}
    for seed, version in enumerate(VERSIONS):
        root = tmp_path_factory.mktemp(f"wan{version}")
        arch = TINY[version]()
        ref = randomise(diffusers_vae(arch), seed)
        sd = {k: v.detach().clone() for k, v in ref.state_dict().items()}
        original = diffusers_to_original_state_dict(sd, version)
        ref.save_pretrained(root / "diffusers", safe_serialization=True)
        (root / "release").mkdir()
        torch.save(original, root / "release" / ORIGINAL_NAME[version])
        save_file({k: v.contiguous() for k, v in original.items()}, root / "original.safetensors")
        out[version] = {
            "arch": arch,
            "ref": ref,
            "sd": sd,
            "original": original,
            "diffusers": root / "diffusers",
            "pth": root / "release" / ORIGINAL_NAME[version],
            "safetensors": root / "original.safetensors",
            "root": root,
        }
    return out


# ----------------------------------------------------------------------------- detection
@pytest.mark.parametrize("version", VERSIONS)
def test_detect_every_layout(written, version):
    w = written[version]
    z, patch = w["arch"].z_dim, w["arch"].patch

    info = detect_checkpoint(w["diffusers"])
    assert (info.layout, info.version, info.z_dim, info.patch_size) == ("diffusers", version, z, patch)
    assert info.files == (w["diffusers"] / "diffusion_pytorch_model.safetensors",)
    assert info.config_file == w["diffusers"] / "config.json"
    assert info.arch == w["arch"]

    for path, files in (
        (w["pth"], (w["pth"],)),
        (w["pth"].parent, (w["pth"],)),  # a release folder: found by its file name
        (w["safetensors"], (w["safetensors"],)),  # uninformative name: the tensors decide
    ):
        info = detect_checkpoint(path)
        assert (info.layout, info.version, info.z_dim, info.patch_size) == ("original", version, z, patch)
        assert info.files == files and info.arch is None and info.has_encoder and info.has_decoder


def test_detect_sharded_pipeline_folder_and_misnamed_file(written, tmp_path):
    w = written["2.1"]
    w["ref"].save_pretrained(tmp_path / "pipe" / "vae", safe_serialization=True, max_shard_size="200KB")
    info = detect_checkpoint(tmp_path / "pipe")  # a pipeline root: its vae/ folder
    assert info.layout == "diffusers" and info.version == "2.1" and len(info.files) > 1
    assert all(f.parent == tmp_path / "pipe" / "vae" for f in info.files)
    model = load_wan_vae(tmp_path / "pipe")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in w["sd"].items())

    # Wan 2.2 tensors under the Wan 2.1 release name: the content wins, with a warning.
    torch.save(written["2.2"]["original"], tmp_path / "Wan2.1_VAE.pth")
    with pytest.warns(UserWarning, match="named like a Wan 2.1 VAE but its tensors are Wan 2.2"):
        assert detect_checkpoint(tmp_path / "Wan2.1_VAE.pth").version == "2.2"


def test_detect_rejects_foreign_and_mixed_checkpoints(tmp_path):
    save_file({"model.layers.0.weight": torch.ones(2)}, tmp_path / "foreign.safetensors")
    with pytest.raises(ValueError, match="not a Wan VAE checkpoint"):
        detect_checkpoint(tmp_path / "foreign.safetensors")
    save_file({"conv1.weight": torch.ones(2), "quant_conv.weight": torch.ones(2)}, tmp_path / "mixed.safetensors")
    with pytest.raises(ValueError, match="mixes original Wan key names"):
        detect_checkpoint(tmp_path / "mixed.safetensors")


# ----------------------------------------------------------------------------- loading
def assert_same_weights(model, sd):
    got = model.state_dict()
    assert set(got) == set(sd)
    for k, v in sd.items():
        assert torch.equal(got[k], v), k


@pytest.mark.parametrize("fmt", ["diffusers", "pth", "safetensors"])
@pytest.mark.parametrize("version", VERSIONS)
def test_load_every_layout_gives_diffusers_weights(written, version, fmt):
    w = written[version]
    model = load_wan_vae(w[fmt])  # arch from config.json, or the preset with the file's widths
    assert_same_weights(model, w["sd"])
    assert not model.training
    tensors = [*model.parameters(), *model.buffers()]
    assert all(not t.is_meta and t.device.type == "cpu" for t in tensors)
    assert all(p.dtype == torch.float32 and not p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("version", VERSIONS)
def test_loaded_model_decodes_like_diffusers(written, version):
    w = written[version]
    model = load_wan_vae(w["pth"], arch=w["arch"])
    g = torch.Generator().manual_seed(7)
    z = torch.randn(1, w["arch"].z_dim, 3, 4, 4, generator=g)
    with torch.no_grad():
        want = w["ref"].decode(z).sample
        got = decode_full(model, z)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def decode_full(model, z):
    """Plain (un-normalised, un-tiled) decode of a whole latent video with framestream's WanVAE."""
    return model.decode(z)


def test_load_builds_on_meta_and_keeps_the_checkpoint_tensors(written, monkeypatch):
    w = written["2.1"]
    import framestream.models.wan.vae.model as model_mod

    built_on = []
    real = model_mod.WanVAE

    class Spy(real):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built_on.append({p.device.type for p in self.parameters()})

    read = []
    real_read = ckpt.read_state_dict

    def spy_read(path):
        sd = real_read(path)
        read.append(list(sd.values()))  # held, so no copy can reuse their memory
        return sd

    monkeypatch.setattr(model_mod, "WanVAE", Spy)
    monkeypatch.setattr(ckpt, "read_state_dict", spy_read)
    model = load_wan_vae(w["pth"])
    assert built_on == [{"meta"}]  # one build, on the meta device: no second allocation
    assert {p.data_ptr() for p in model.parameters()} <= {t.data_ptr() for t in read[0]}  # the file's own tensors

    half = load_wan_vae(w["diffusers"], dtype="bf16")
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}
    assert not any(t.is_meta for t in [*half.parameters(), *half.buffers()])


@pytest.mark.parametrize("half", ["encoder", "decoder"])
def test_load_one_half_drops_the_other(written, tmp_path, half):
    w = written["2.2"]
    keep = ("encoder.", "quant_conv.") if half == "encoder" else ("decoder.", "post_quant_conv.")
    other = "decoder.upsamples.0.upsamples.0.residual.2.weight" if half == "encoder" else "encoder.conv1.weight"
    corrupted = dict(w["original"])
    corrupted[other] = torch.zeros(1)  # a wrong shape in the half we do not load: ignored
    torch.save(corrupted, tmp_path / "Wan2.2_VAE.pth")

    model = load_wan_vae(
        tmp_path / "Wan2.2_VAE.pth", include_encoder=half == "encoder", include_decoder=half == "decoder"
    )
    keys = set(model.state_dict())
    assert keys and all(k.startswith(keep) for k in keys)
    assert keys == {k for k in w["sd"] if k.startswith(keep)}  # the whole half, nothing of the other
    assert_same_weights(model, {k: v for k, v in w["sd"].items() if k in keys})
    with pytest.raises(ValueError, match="cannot both be False"):
        load_wan_vae(tmp_path / "Wan2.2_VAE.pth", include_encoder=False, include_decoder=False)


# ----------------------------------------------------------------------------- errors
def write_original(tmp_path, sd, name="Wan2.1_VAE.pth") -> Path:
    torch.save(sd, tmp_path / name)
    return tmp_path / name


def test_dropped_extra_and_misshaped_keys_are_all_listed(written, tmp_path):
    w = written["2.1"]
    bad = dict(w["original"])
    del bad["decoder.upsamples.3.resample.1.weight"]
    bad["encoder.downsamples.0.extra.weight"] = torch.ones(3)
    bad["decoder.head.2.weight"] = torch.ones(2, 2, 3, 3, 3)
    with pytest.raises(CheckpointMismatchError) as err:
        load_wan_vae(write_original(tmp_path, bad))
    e = err.value
    assert e.missing == ["decoder.upsamples.3.resample.1.weight"]  # named as in the file
    assert e.unexpected == ["encoder.downsamples.0.extra.weight"]
    assert [m[0] for m in e.mismatched] == ["decoder.head.2.weight"]
    assert e.mismatched[0][1] == (2, 2, 3, 3, 3)
    msg = str(e)
    for key in ("decoder.upsamples.3.resample.1.weight", "encoder.downsamples.0.extra.weight", "decoder.head.2.weight"):
        assert key in msg
    assert "1 missing" in msg and "1 unexpected" in msg and "1 shape mismatch" in msg

    # The same faults in the diffusers layout are named with diffusers keys.
    bad_d = dict(w["sd"])
    del bad_d["decoder.up_blocks.0.upsamplers.0.resample.1.weight"]
    (tmp_path / "d").mkdir()
    save_file(bad_d, tmp_path / "d" / "diffusion_pytorch_model.safetensors")
    (tmp_path / "d" / "config.json").write_text((w["diffusers"] / "config.json").read_text())
    with pytest.raises(CheckpointMismatchError, match=r"decoder\.up_blocks\.0\.upsamplers\.0\.resample\.1\.weight"):
        load_wan_vae(tmp_path / "d")


def test_wrong_version_for_the_arch_says_so(written):
    w22 = written["2.2"]
    with pytest.raises(WanVAECheckpointError, match=r"holds Wan 2\.2 VAE weights.*Wan 2\.1") as err:
        load_wan_vae(w22["pth"], arch=tiny_wan21_arch())
    assert err.value.missing and err.value.unexpected  # and still lists the keys
    with pytest.raises(WanVAECheckpointError, match=r"holds Wan 2\.1 VAE weights.*Wan 2\.2"):
        load_wan_vae(written["2.1"]["diffusers"], arch=tiny_wan22_arch())
    z16 = dataclasses.replace(tiny_wan22_arch(), z_dim=16, latents_mean=(0.0,) * 16, latents_std=(1.0,) * 16)
    with pytest.raises(WanVAECheckpointError, match="has z_dim=48 but the architecture from the arch argument"):
        load_wan_vae(w22["pth"], arch=z16)


class _Payload:
    """Unpickling this with weights_only=False would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_non_tensor_pickles_are_refused_without_running_code(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "Wan2.1_VAE.pth"
    torch.save({"conv1.weight": torch.ones(1), "evil": _Payload(marker)}, path)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        load_wan_vae(path)
    assert not marker.exists()

    torch.save({"conv1.weight": torch.ones(1), "step": 12}, path)
    with pytest.raises(ValueError, match="flat state dict of tensors"):
        load_wan_vae(path)


def test_resolve_checkpoint(tmp_path, monkeypatch):
    assert resolve_checkpoint(tmp_path) == tmp_path
    with pytest.raises(FileNotFoundError):
        resolve_checkpoint(tmp_path / "missing" / "Wan2.1_VAE.pth")
    with pytest.raises(FileNotFoundError):
        resolve_checkpoint("models/Wan2.1_VAE.pth")  # looks like a path, not a repo id
    try:
        import huggingface_hub
    except ImportError:
        with pytest.raises(RuntimeError, match="huggingface_hub"):
            resolve_checkpoint("Wan-AI/Wan2.1-T2V-1.3B")
    else:  # never touch the network in tests

        def offline(*args, **kwargs):
            raise OSError("offline")

        monkeypatch.setattr(huggingface_hub, "list_repo_files", offline)
        with pytest.raises(RuntimeError, match="could not fetch"):
            resolve_checkpoint("Wan-AI/Wan2.1-T2V-1.3B")


def test_config_json_is_used_when_present(written, tmp_path):
    w = written["2.2"]
    cfg = json.loads((w["diffusers"] / "config.json").read_text())
    assert cfg["_class_name"] == "AutoencoderKLWan"
    model = load_wan_vae(w["diffusers"])
    assert model.arch == w["arch"]
