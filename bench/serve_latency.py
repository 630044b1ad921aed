"""Live-server latency: time to first frame and glass-to-glass, WebRTC vs WebSocket, 1 and 4 sessions.

Runs ``framestream serve demo`` (random-weight demo model, CPU) and drives the real viewer page
in headless Chromium (Playwright + Debian's ``chromium``). Every figure comes from timestamps the
page itself records (``window.fsStats``):

- time to first frame: Start pressed -> first frame painted, per session;
- glass-to-glass: block finished on the server (server wall clock, sent with the frame) ->
  frame painted in the page (page clock mapped to the server's by ping/pong offset, fastest
  round trip). "first of block" is the latency of each block's first frame (transport +
  decode + paint + the wait for the previous block's frames to play out); "all frames" also
  includes the deliberate playback pacing at ``--fps`` inside a block.

Configurations alternate (A B C D, then D C B A, ...) so drift in machine load hits all alike.

    python bench/serve_latency.py                      # 2 repeats x 4 configs, ~2 min on 2 cores
    python bench/serve_latency.py --repeats 3 --frames 120 --out bench/results/serve_latency.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

from framestream.serve.launch import CHROMIUM_ARGS, find_chromium, launched_server

CONFIGS = [("webrtc", 1), ("websocket", 1), ("webrtc", 4), ("websocket", 4)]


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_config(browser, base_url: str, transport: str, sessions: int, frames: int, timeout_s: float) -> list[dict]:
    """Start ``sessions`` viewers at once, wait for ``frames`` painted each, return each page's stats."""
    # One context (a window of its own) per viewer, so every page is a foreground page.
    contexts = [browser.new_context(viewport={"width": 800, "height": 700}) for _ in range(sessions)]
    pages = [context.new_page() for context in contexts]
    try:
        for index, page in enumerate(pages):
            page.set_default_timeout(timeout_s * 1000)
            page.goto(f"{base_url}/")
            page.wait_for_function("() => window.fsStats && window.fsStats.state === 'ready'")
            page.select_option("#transport", transport)
            page.fill("#seed", str(index))
            page.fill("#prompt", f"benchmark stream {index}")
        for page in pages:  # press Start on every page back to back
            page.click("#start")
        deadline = time.monotonic() + timeout_s
        for page in pages:
            remaining = max(1.0, deadline - time.monotonic())
            page.wait_for_function(f"() => window.fsStats.painted >= {frames}", timeout=remaining * 1000)
        results = [page.evaluate("() => JSON.parse(JSON.stringify(window.fsStats))") for page in pages]
        for page in pages:
            page.click("#stop")
        for page in pages:
            page.wait_for_function("() => window.fsStats.state === 'ended'")
        return results
    finally:
        for context in contexts:
            context.close()


def summarise(runs: list[dict]) -> dict:
    ttff = [r["ttffMs"] for r in runs if r["ttffMs"] is not None]
    first = [x for r in runs for x in r["firstFrameLatencies"]]
    every = [x for r in runs for x in r["allLatencies"]]
    return {
        "sessions_measured": len(runs),
        "transports_used": sorted({r["transport"] for r in runs}),
        "ttff_ms": {"p50": percentile(ttff, 0.5), "p99": percentile(ttff, 0.99), "n": len(ttff)},
        "glass_to_glass_first_of_block_ms": {"p50": percentile(first, 0.5), "p99": percentile(first, 0.99), "n": len(first)},
        "glass_to_glass_all_frames_ms": {"p50": percentile(every, 0.5), "p99": percentile(every, 0.99), "n": len(every)},
        "dropped_frames": sum(r["serverDropped"] + r["pageSkipped"] for r in runs),
        "dropped_by_server_queue": sum(r["serverDropped"] for r in runs),
        "skipped_by_page": sum(r["pageSkipped"] for r in runs),
        "frames_painted": sum(r["painted"] for r in runs),
        "errors": sorted({e for r in runs for e in r["errors"]}),
    }


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2, help="rounds over the four configurations (default: 2)")
    parser.add_argument("--frames", type=int, default=96, help="frames each session must paint per run (default: 96)")
    parser.add_argument("--fps", type=float, default=16.0, help="server playback rate (default: 16)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the server's worker (default: 1)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds allowed per run (default: 120)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/serve_latency.json"), help="JSON output")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.frames < 24:
        parser.error("--repeats must be >= 1 and --frames >= 24")

    from playwright.sync_api import sync_playwright

    server_args = ["--max-sessions", "4", "--fps", str(args.fps), "--threads", str(args.threads), "--max-blocks", "1000"]
    per_config: dict[str, list[dict]] = {f"{t}-{n}": [] for t, n in CONFIGS}
    load_before = os.getloadavg()
    started = time.perf_counter()
    with launched_server("demo", *server_args) as server, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=find_chromium(), headless=True, args=list(CHROMIUM_ARGS))
        try:
            for repeat in range(args.repeats):
                order = CONFIGS if repeat % 2 == 0 else CONFIGS[::-1]
                for transport, sessions in order:
                    runs = run_config(browser, server.base_url, transport, sessions, args.frames, args.timeout)
                    per_config[f"{transport}-{sessions}"].extend(runs)
                    print(f"repeat {repeat + 1}/{args.repeats} {transport:9s} x{sessions}: done", flush=True)
        finally:
            browser.close()
    elapsed = time.perf_counter() - started

    summary = {name: summarise(runs) for name, runs in per_config.items()}
    report = {
        "command": "python bench/serve_latency.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "recipe": "demo (random weights, 96x128 px, 12 frames per AR block, 4 denoising steps)",
        "server_args": server_args,
        "frames_per_session": args.frames,
        "repeats": args.repeats,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_avg_before": load_before, "load_avg_after": os.getloadavg()},
        "seconds": elapsed,
        "results": summary,
    }
    lines = [
        "| transport | sessions | TTFF p50 / p99 (ms) | glass-to-glass, block's first frame p50 / p99 (ms) | all frames p50 / p99 (ms) | dropped |",
        "|---|---|---|---|---|---|",
    ]
    for transport, sessions in CONFIGS:
        s = summary[f"{transport}-{sessions}"]
        lines.append(
            f"| {transport} | {sessions} | {fmt(s['ttff_ms']['p50'])} / {fmt(s['ttff_ms']['p99'])} | "
            f"{fmt(s['glass_to_glass_first_of_block_ms']['p50'])} / {fmt(s['glass_to_glass_first_of_block_ms']['p99'])} | "
            f"{fmt(s['glass_to_glass_all_frames_ms']['p50'])} / {fmt(s['glass_to_glass_all_frames_ms']['p99'])} | {s['dropped_frames']} |"
        )
    print("\n".join(lines))
    print(f"load average before {load_before[0]:.1f}, after {os.getloadavg()[0]:.1f}; {elapsed:.0f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(args.out)  # no partial result file on interrupt
    print(f"saved {args.out}")
    used = {t for s in summary.values() for t in s["transports_used"]}
    if used != {"webrtc", "websocket"}:
        print(f"warning: transports actually used: {sorted(used)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
