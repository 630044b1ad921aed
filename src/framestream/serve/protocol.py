"""The WebSocket protocol between the viewer page and the server: message checks and frame packets.

Client -> server (JSON text): ``hello {token}``, ``start {prompt, seed, transport}``,
``prompt {prompt}``, ``stop``, ``offer {sdp}`` (WebRTC), ``ping {t}``.

Server -> client (JSON text): ``welcome``, ``queued {position}``, ``started``, ``block``,
``answer``, ``pong``, ``ended``, ``error {code, message}``; and with the WebSocket
transport, binary frame packets: a 20-byte little-endian header (frame id uint32, block
index uint32, flags uint32 — bit 0 marks a block's first frame, block-finished time
float64 ms on the server's wall clock) followed by one JPEG image.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

__all__ = ["ProtocolError", "ClientMessage", "parse_message", "pack_frame", "unpack_frame_header", "FRAME_HEADER"]

FRAME_HEADER = struct.Struct("<IIId")
TRANSPORTS = ("websocket", "webrtc")
_FIELDS: dict[str, frozenset[str]] = {
    "hello": frozenset({"token"}),
    "start": frozenset({"prompt", "seed", "transport", "token"}),
    "prompt": frozenset({"prompt"}),
    "stop": frozenset(),
    "offer": frozenset({"sdp"}),
    "ping": frozenset({"t"}),
}


class ProtocolError(ValueError):
    """A client message the server refuses; ``code`` is machine-readable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code

    def as_message(self) -> dict[str, Any]:
        return {"type": "error", "code": self.code, "message": str(self)}


@dataclass(frozen=True)
class ClientMessage:
    type: str
    fields: dict[str, Any]


def _prompt(value: Any, max_chars: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ProtocolError("bad_prompt", "prompt must be a non-empty string")
    if len(value) > max_chars:
        raise ProtocolError("prompt_too_long", f"prompt has {len(value)} characters, the limit is {max_chars}")
    return value


def parse_message(raw: str | bytes, *, max_bytes: int, max_prompt_chars: int) -> ClientMessage:
    """Check one client message; raise :class:`ProtocolError` for anything malformed or too big."""
    size = len(raw.encode("utf-8")) if isinstance(raw, str) else len(raw)
    if size > max_bytes:
        raise ProtocolError("too_large", f"message of {size} bytes exceeds the limit of {max_bytes}")
    if isinstance(raw, bytes):
        raise ProtocolError("malformed", "binary messages are not accepted; send JSON text")
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ProtocolError("malformed", f"not JSON: {err.msg}") from None
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise ProtocolError("malformed", 'a message is a JSON object with a string "type"')
    kind = data.pop("type")
    if kind not in _FIELDS:
        raise ProtocolError("unknown_type", f"unknown message type {kind!r}; expected one of {', '.join(_FIELDS)}")
    extra = set(data) - _FIELDS[kind]
    if extra:
        raise ProtocolError("malformed", f"{kind}: unexpected field(s) {', '.join(sorted(extra))}")
    if kind == "start":
        data["prompt"] = _prompt(data.get("prompt"), max_prompt_chars)
        seed = data.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
            raise ProtocolError("malformed", "seed must be an integer in [0, 2**63)")
        data["seed"] = seed
        transport = data.get("transport", "websocket")
        if transport not in TRANSPORTS:
            raise ProtocolError("malformed", f"transport must be one of {', '.join(TRANSPORTS)}")
        data["transport"] = transport
    elif kind == "prompt":
        data["prompt"] = _prompt(data.get("prompt"), max_prompt_chars)
    elif kind == "offer":
        if not isinstance(data.get("sdp"), str):
            raise ProtocolError("malformed", "offer needs an sdp string")
    elif kind == "ping":
        if not isinstance(data.get("t"), (int, float)) or isinstance(data.get("t"), bool):
            raise ProtocolError("malformed", "ping needs a number t")
    elif kind == "hello" and not isinstance(data.get("token", ""), str):
        raise ProtocolError("malformed", "token must be a string")
    return ClientMessage(kind, data)


def pack_frame(frame_id: int, block_index: int, first_in_block: bool, done_at_ms: float, jpeg: bytes) -> bytes:
    """A binary frame packet (see the module doc)."""
    return FRAME_HEADER.pack(frame_id, block_index, int(first_in_block), done_at_ms) + jpeg


def unpack_frame_header(packet: bytes) -> tuple[int, int, bool, float]:
    frame_id, block_index, flags, done_at_ms = FRAME_HEADER.unpack_from(packet)
    return frame_id, block_index, bool(flags & 1), done_at_ms
