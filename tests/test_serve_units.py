"""Server building blocks: frame queue, admission, metrics text, frame-id strip, message checks, CLI input."""

from __future__ import annotations

import asyncio
import socket

import numpy as np
import pytest

from framestream.cli.main import main
from framestream.serve.frames import add_frame_id_strip, encode_jpeg, read_frame_id_strip
from framestream.serve.metrics import Counter, Histogram, MetricsRegistry
from framestream.serve.protocol import FRAME_HEADER, ProtocolError, pack_frame, parse_message, unpack_frame_header
from framestream.serve.sessions import AdmissionError, Frame, FrameQueue, Session, SessionManager


def frame(i: int) -> Frame:
    return Frame(frame_id=i, block_index=0, first_in_block=i == 0, done_at_ms=1.0, pixels=np.zeros((2, 2, 3), np.uint8))


def test_frame_queue_drops_the_oldest_and_counts() -> None:
    async def scenario() -> None:
        queue = FrameQueue(4)
        dropped = sum(queue.push(frame(i)) for i in range(10))  # a viewer that never reads
        assert dropped == queue.dropped == 6 and len(queue) == 4
        assert [(await queue.get()).frame_id for _ in range(4)] == [6, 7, 8, 9]
        waiter = asyncio.ensure_future(queue.get())
        await asyncio.sleep(0)
        queue.close()
        assert await waiter is None
        assert queue.push(frame(11)) == 0 and len(queue) == 0

    asyncio.run(scenario())


def session(manager: SessionManager) -> Session:
    return Session(session_id=manager.new_id(), prompt="p", seed=0, max_blocks=3, queue=FrameQueue(8),
                   on_block=lambda *a: None, on_error=lambda *a: None, fps=16.0)


def test_admission_queue_positions_promotion_and_round_robin() -> None:
    async def scenario() -> None:
        manager = SessionManager(max_sessions=2, max_waiting=1)
        a, b, c, d = (session(manager) for _ in range(4))
        assert manager.admit(a) == 0 and manager.admit(b) == 0
        assert manager.admit(c) == 1
        with pytest.raises(AdmissionError, match="server full"):
            manager.admit(d)
        picks = []
        for _ in range(4):  # round robin between the two active sessions
            s, _prompt = manager.next_due(timeout=1)
            picks.append(s.session_id)
            manager.block_finished(s, 0, 0.01)
        assert picks == [a.session_id, b.session_id, a.session_id, b.session_id]
        manager.set_prompt(b, "new")
        assert manager.next_due(timeout=1) == (a, None)  # a's turn; b's prompt waits for b's turn
        manager.block_finished(a, 0, 0.01)
        assert manager.next_due(timeout=1) == (b, "new")
        manager.block_finished(b, 0, 0.01)
        assert manager.close(a) == [c] and c.state == "active" and a.state == "closed"
        assert manager.positions() == []

    asyncio.run(scenario())


def test_metrics_text_format() -> None:
    registry = MetricsRegistry()
    counter = registry.add(Counter("framestream_things_total", "Things."))
    hist = registry.add(Histogram("framestream_wait_seconds", "Waits.", (0.1, 1.0)))
    counter.inc(3)
    for value in (0.05, 0.5, 5.0):
        hist.observe(value)
    text = registry.render()
    assert "# TYPE framestream_things_total counter\nframestream_things_total 3\n" in text
    assert 'framestream_wait_seconds_bucket{le="0.1"} 1' in text
    assert 'framestream_wait_seconds_bucket{le="1"} 2' in text
    assert 'framestream_wait_seconds_bucket{le="+Inf"} 3' in text
    assert "framestream_wait_seconds_count 3" in text and "framestream_wait_seconds_sum 5.55" in text
    with pytest.raises(ValueError, match="framestream_"):
        Counter("other_total", "x")


def test_frame_id_strip_survives_lossy_coding() -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    for frame_id in (0, 1, 12345, 65535, 70000):
        striped = add_frame_id_strip(pixels, frame_id)
        assert striped.shape == (112, 128, 3)
        import io

        from PIL import Image

        decoded = np.asarray(Image.open(io.BytesIO(encode_jpeg(striped, 40))))
        assert read_frame_id_strip(decoded) == frame_id % 65536
    small = add_frame_id_strip(np.full((7, 40, 3), 200, np.uint8), 321)  # padded to 8x64, then the strip
    assert small.shape == (8 + 16, 64, 3) and (small[:7, :40] == 200).all() and (small[:8, 40:] == 0).all()
    assert read_frame_id_strip(small) == 321


def test_frame_packets_and_message_checks() -> None:
    packet = pack_frame(7, 2, True, 1234.5, b"JPEG")
    assert unpack_frame_header(packet) == (7, 2, True, 1234.5) and packet[FRAME_HEADER.size :] == b"JPEG"
    parsed = parse_message('{"type": "start", "prompt": "fox"}', max_bytes=100, max_prompt_chars=10)
    assert parsed.fields == {"prompt": "fox", "seed": 0, "transport": "websocket"}
    for raw, code in [('{"type": "start", "prompt": "  "}', "bad_prompt"), ('{"type": "ping"}', "malformed"),
                      ('{"type": "start", "prompt": "a", "transport": "carrier pigeon"}', "malformed"),
                      ('{"type": "start", "prompt": "a", "seed": true}', "malformed"), ("x" * 101, "too_large")]:
        with pytest.raises(ProtocolError) as err:
            parse_message(raw, max_bytes=100, max_prompt_chars=10)
        assert err.value.code == code


def test_serve_cli_rejects_bad_input_before_loading(capsys) -> None:
    assert main(["serve", "nope"]) == 2
    assert "unknown recipe" in capsys.readouterr().err
    assert main(["serve", "demo", "--max-sessions", "0"]) == 2
    assert "--max-sessions must be >= 1" in capsys.readouterr().err
    assert main(["serve", "wan2.1-self-forcing-1.3b"]) == 2
    assert "--checkpoint-dir" in capsys.readouterr().err
    assert main(["serve", "demo", "--print-config", "--diffusion-model.scheduler.shift", "3"]) == 0
    out = capsys.readouterr().out
    assert "host='127.0.0.1'" in out and "shift=3.0" in out


def test_serve_cli_reports_a_busy_port_in_one_line(capsys) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "demo", "--port", str(port), "--no-webrtc"]) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


def test_serve_knows_every_generate_recipe() -> None:
    from framestream.recipes import RECIPES
    from framestream.serve.recipes import recipe_names, resolve_recipe

    assert recipe_names() == ["demo", *RECIPES]
    served = resolve_recipe("wan2.2-ti2v-5b-tiny")  # a Wan 2.2 recipe, text-to-video without --image
    assert served.random_weights and served.config.encoder is None
    with pytest.raises(ValueError, match="two-expert A14B recipes run with framestream generate"):
        resolve_recipe("wan2.2-t2v-a14b-tiny")
