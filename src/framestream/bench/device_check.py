"""``python -m framestream.bench.device_check``: the one-command GPU check (``bench/device_check.sh``).

Random weights at full size, nothing downloaded. Measures, on one device:

- Wan 2.1 VAE decode of 81 frames (21 latents) at 832x480 and 1280x720: untiled, exact
  tiled (frame-major, 256 px tiles), diffusers ``enable_tiling`` (256 px tiles, 64 px
  blend; skipped when diffusers is not installed) and compiled (``torch.compile`` chunks);
- TAEHV (``taew2_1`` layout) decode of the same latents, eager and compiled;
- Self-Forcing Wan 2.1 1.3B per AR block (3 latent frames, 4 steps, 480x832) with random
  weights: full VAE vs TAEHV decode, eager vs compiled DiT blocks + decoder.

Every section is timed after a warm-up (compiled sections: the warm-up compiles), on
CUDA with synchronisation and ``max_memory_allocated``. Results go to a JSON file
written atomically after every section, so a run cut short still leaves what it
measured. Sections that fail record their error and the run goes on; ``--budget-s``
skips what would start after the budget is spent. ``--smoke`` runs every section at
tiny sizes (CPU, seconds) to prove the script works before a GPU is lent.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

__all__ = ["main", "SIZES"]

SIZES = {"832x480": (60, 104), "1280x720": (90, 160)}
"""Output size -> latent (h, w) of the full check."""
FULL_LATENT_FRAMES = 21  # 81 frames
SMOKE = {"sizes": {"smoke": (4, 6)}, "latent_frames": 2, "tile_px": 32, "blocks": 2}


@dataclasses.dataclass
class _Check:
    """What every section needs: device, dtype, sizes, deadline, results."""

    smoke: bool
    device: torch.device
    dtype: torch.dtype
    deadline: float
    out: Path
    compile_backend: str
    results: dict[str, Any] = dataclasses.field(default_factory=dict)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def measure(self, fn: Callable[[], Any], repeats: int = 1) -> dict[str, Any]:
        """Warm-up call, then ``repeats`` timed calls: median seconds and peak memory (CUDA)."""
        fn()
        self.sync()
        times = []
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            base = torch.cuda.memory_allocated(self.device)
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            self.sync()
            times.append(time.perf_counter() - start)
        record: dict[str, Any] = {"seconds": sorted(times)[len(times) // 2], "runs": times}
        if self.device.type == "cuda":
            record["peak_bytes"] = torch.cuda.max_memory_allocated(self.device) - base
        return record

    def section(self, name: str, fn: Callable[[], dict[str, Any]]) -> None:
        """Run one section; record its result or error; write the JSON so far."""
        if time.monotonic() > self.deadline:
            self.results[name] = {"skipped": "time budget spent"}
        else:
            print(f"[device_check] {name} ...", flush=True)
            start = time.perf_counter()
            try:
                self.results[name] = fn()
            except Exception as err:  # noqa: BLE001 - one failing section must not hide the others
                self.results[name] = {"error": f"{type(err).__name__}: {err}", "trace": traceback.format_exc()[-2000:]}
            self.results[name]["section_seconds"] = round(time.perf_counter() - start, 3)
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        self.write()

    def write(self) -> None:
        data = {
            "mode": "smoke" if self.smoke else "full",
            "device": str(self.device),
            "device_name": torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu",
            "torch": torch.__version__,
            "dtype": str(self.dtype).removeprefix("torch."),
            "results": self.results,
        }
        self.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.out.with_name(self.out.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=2, default=str))
        os.replace(tmp, self.out)


# ---------------------------------------------------------------------------- builders
def _wan_arch(smoke: bool):
    from framestream.models.wan.vae import WAN21_VAE_ARCH, tiny_wan21_arch

    return dataclasses.replace(tiny_wan21_arch(4), num_res_blocks=1) if smoke else WAN21_VAE_ARCH


def _wan_vae(check: _Check):
    from framestream.models.wan.vae import WanVAE, init_random_weights

    vae = init_random_weights(WanVAE(_wan_arch(check.smoke), include_encoder=False), 0)
    return vae.to(check.device, check.dtype).eval().requires_grad_(False)


def _taehv(check: _Check):
    from framestream.models.taehv import TAEW2_1_ARCH, TAEHV, init_taehv_random, tiny_taehv_arch

    arch = tiny_taehv_arch(16, 8) if check.smoke else TAEW2_1_ARCH
    model = init_taehv_random(TAEHV(arch, include_encoder=False), 0)
    return model.to(check.device, check.dtype).eval().requires_grad_(False)


def _latents(check: _Check, hw: tuple[int, int]) -> torch.Tensor:
    frames = SMOKE["latent_frames"] if check.smoke else FULL_LATENT_FRAMES
    g = torch.Generator().manual_seed(0)
    return torch.randn(1, 16, frames, *hw, generator=g).to(check.device, check.dtype)


def _tile_px(check: _Check) -> int:
    return SMOKE["tile_px"] if check.smoke else 256


# ---------------------------------------------------------------------------- VAE sections
def _vae_decode(check: _Check, hw: tuple[int, int]) -> dict[str, Any]:
    from framestream.models.wan.vae import WanCausalCache
    from framestream.tiling import TilingConfig, decode_tiled

    vae = _wan_vae(check)
    z = _latents(check, hw)
    tiling = TilingConfig(tile_size_px=_tile_px(check), tile_overlap_px=0)
    out: dict[str, Any] = {"latent_shape": list(z.shape), "frames": 1 + 4 * (z.shape[2] - 1), "tile_px": _tile_px(check)}
    with torch.inference_mode():
        out["untiled"] = check.measure(lambda: vae.decode(z, chunk_size=1))
        out["exact_tiled"] = check.measure(lambda: decode_tiled(vae, z, tiling))
        out["exact_tiled_tile_major"] = check.measure(lambda: decode_tiled(vae, z, tiling, order="tile"))
        out["exact_tiled_offloaded_caches"] = check.measure(lambda: decode_tiled(vae, z, tiling, offload_caches=True))
        vae.compile_chunks(backend=check.compile_backend)
        out["compiled_untiled"] = check.measure(lambda: vae.decode(z, chunk_size=1, cache=WanCausalCache()))
    return out


def _vae_decode_diffusers(check: _Check, hw: tuple[int, int]) -> dict[str, Any]:
    try:
        from diffusers import AutoencoderKLWan
    except ImportError:
        return {"skipped": "diffusers is not installed (put its wheel in bench/wheels to include it)"}
    from framestream.models.wan.vae import WanVAE, init_random_weights

    arch = _wan_arch(check.smoke)
    ours = init_random_weights(WanVAE(arch), 0)
    ref = AutoencoderKLWan(**arch.to_diffusers_kwargs())
    ref.load_state_dict(ours.state_dict(), strict=True)
    del ours
    tile = _tile_px(check)
    ref.enable_tiling(tile_sample_min_height=tile, tile_sample_min_width=tile,
                      tile_sample_stride_height=tile * 3 // 4, tile_sample_stride_width=tile * 3 // 4)  # fmt: skip
    ref = ref.to(check.device, check.dtype).eval().requires_grad_(False)
    z = _latents(check, hw)
    with torch.inference_mode():
        return {"diffusers_tiled": check.measure(lambda: ref.decode(z).sample)}


def _taehv_decode(check: _Check, hw: tuple[int, int]) -> dict[str, Any]:
    from framestream.models.taehv import TAEHVDecodeState

    model = _taehv(check)
    z = _latents(check, hw).transpose(1, 2)  # TAEHV is frames-first

    def stream() -> torch.Tensor:
        state = TAEHVDecodeState()
        return torch.cat([model.decode(z[:, i : i + 3], state) for i in range(0, z.shape[1], 3)], 1)

    with torch.inference_mode():
        out = {"eager_chunks_of_3": check.measure(stream)}
        model.compile_chunks(backend=check.compile_backend)
        out["compiled_chunks_of_3"] = check.measure(stream)
    return out


# ---------------------------------------------------------------------------- self-forcing
def _self_forcing(check: _Check, decoder: str, compiled: bool) -> dict[str, Any]:
    from framestream.config import derive_config
    from framestream.recipes import RECIPES, prepare_recipe
    from framestream.recipes.decoders import select_decoder
    from framestream.recipes.wan import iter_video_blocks

    name = "wan2.1-self-forcing-1.3b-tiny" if check.smoke else "wan2.1-self-forcing-1.3b"
    config = RECIPES[name]()
    changes: dict[str, Any] = {"diffusion_model.transformer.allow_random_init": True}
    if check.smoke:
        changes["decoder.arch"] = _wan_arch(True)
    else:
        changes["decoder.compute_dtype"] = check.dtype
        changes["decoder.weights_dtype"] = check.dtype
    config = derive_config(config, **changes)
    if decoder == "taehv":
        config = select_decoder(config, "taehv", tiny=True)
        if not check.smoke:  # full-size random TAEHV
            from framestream.models.taehv import TAEW2_1_ARCH

            config = derive_config(config, **{"decoder.arch": TAEW2_1_ARCH, "decoder.dtype": check.dtype})
    if compiled:
        config = derive_config(config, **{"diffusion_model.transformer.compile": True, "decoder.compile": True})
    blocks = SMOKE["blocks"] if check.smoke else 3
    config, blocks = prepare_recipe(config, blocks)
    pipeline = config.setup().to(check.device).eval()
    if compiled and check.compile_backend != "inductor":
        _recompile_with_backend(pipeline, check.compile_backend)
    times = []
    start = time.perf_counter()
    with torch.inference_mode():
        for _ in iter_video_blocks(pipeline, "a red fox runs in fresh snow", blocks):
            check.sync()
            now = time.perf_counter()
            times.append(now - start)
            start = now
    record: dict[str, Any] = {"block_seconds": times, "blocks": blocks}
    # Block 0 includes start-up (and compilation); the steady state is the median of the others.
    steady = sorted(times[1:])
    record["per_block_seconds"] = steady[len(steady) // 2] if steady else times[0]
    if check.device.type == "cuda":
        record["peak_bytes"] = torch.cuda.max_memory_allocated(check.device)
    return record


def _recompile_with_backend(pipeline: Any, backend: str) -> None:
    """Smoke runs: swap inductor for a cheap backend (same dynamo capture, no C++ codegen)."""
    from framestream.utils.compile import compile_module_forward

    for block in pipeline.diffusion_model.transformer.dit.blocks:
        compile_module_forward(block, backend=backend)
    inner = getattr(pipeline.decoder, "vae", None) or getattr(pipeline.decoder, "taehv", None)
    if inner is not None:
        inner.compile_chunks(backend=backend)


# ---------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="device_check", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on any device (CPU: seconds); proves the script runs")
    parser.add_argument("--out", type=Path, default=None, help="JSON output (default: bench/results/device_check.json; smoke: .../device_check_smoke.json)")
    parser.add_argument("--device", default="auto", help="cuda, cpu or auto (default: auto)")
    parser.add_argument("--dtype", default=None, help="bf16 (default on CUDA) or fp32 (default on CPU)")
    parser.add_argument("--budget-s", type=float, default=420.0, help="skip sections that would start after this many seconds (default: 420)")
    parser.add_argument("--compile-backend", default=None, help="torch.compile backend (default: inductor; smoke: eager)")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("device_check: --device cuda but no CUDA device is visible")
    if not args.smoke and device.type != "cuda":
        raise SystemExit("device_check: the full check needs a CUDA device (use --smoke on CPU)")
    from framestream.utils.dtypes import parse_dtype

    dtype = parse_dtype(args.dtype) if args.dtype else (torch.bfloat16 if device.type == "cuda" else torch.float32)
    default_out = Path("bench/results") / ("device_check_smoke.json" if args.smoke else "device_check.json")
    check = _Check(
        smoke=args.smoke,
        device=device,
        dtype=dtype,
        deadline=time.monotonic() + args.budget_s,
        out=args.out or default_out,
        compile_backend=args.compile_backend or ("eager" if args.smoke else "inductor"),
    )
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    sizes = SMOKE["sizes"] if args.smoke else SIZES
    for label, hw in sizes.items():
        check.section(f"wan21_vae_decode_{label}", lambda hw=hw: _vae_decode(check, hw))
        check.section(f"taehv_decode_{label}", lambda hw=hw: _taehv_decode(check, hw))
        check.section(f"diffusers_tiled_decode_{label}", lambda hw=hw: _vae_decode_diffusers(check, hw))
    for decoder in ("wan-vae", "taehv"):
        for compiled in (False, True):
            label = f"self_forcing_1.3b_{decoder}_{'compiled' if compiled else 'eager'}"
            check.section(label, lambda d=decoder, c=compiled: _self_forcing(check, d, c))
    failed = [k for k, v in check.results.items() if "error" in v]
    print(f"[device_check] wrote {check.out}; {len(check.results)} sections, {len(failed)} failed: {failed}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
