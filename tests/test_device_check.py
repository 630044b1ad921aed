"""bench/device_check.sh runs end to end on CPU with --smoke and writes its JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_device_check_smoke_runs_every_section(tmp_path):
    script = ROOT / "bench" / "device_check.sh"
    assert os.access(script, os.X_OK)
    out = tmp_path / "check.json"
    env = {**os.environ, "PYTHON": sys.executable, "FRAMESTREAM_WHEELS": str(tmp_path / "no-wheels")}
    proc = subprocess.run([str(script), "--smoke", "--out", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["mode"] == "smoke"
    results = data["results"]
    assert {"wan21_vae_decode_smoke", "taehv_decode_smoke", "diffusers_tiled_decode_smoke"} <= results.keys()
    for decoder in ("wan-vae", "taehv"):
        for mode in ("eager", "compiled"):
            assert results[f"self_forcing_1.3b_{decoder}_{mode}"]["per_block_seconds"] > 0
    vae = results["wan21_vae_decode_smoke"]
    for case in ("untiled", "exact_tiled", "exact_tiled_tile_major", "compiled_untiled"):
        assert vae[case]["seconds"] > 0
    assert results["taehv_decode_smoke"]["compiled_chunks_of_3"]["seconds"] > 0
    assert not any("error" in v for v in results.values())
