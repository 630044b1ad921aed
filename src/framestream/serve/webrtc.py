"""WebRTC transport (aiortc): a video track fed from a session's frame queue, signalled over the WebSocket."""

from __future__ import annotations

import asyncio
import fractions
import ipaddress
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from framestream.serve.frames import add_frame_id_strip
from framestream.serve.sessions import Session

if TYPE_CHECKING:
    from framestream.serve.app import StreamServer

__all__ = ["answer_offer", "webrtc_available", "restrict_ice_to_host"]

VIDEO_CLOCK = 90_000


def webrtc_available() -> bool:
    try:
        import aiortc  # noqa: F401
    except ImportError:
        return False
    return True


def restrict_ice_to_host(host: str) -> None:
    """Make ICE offer only ``host`` as a candidate when the server binds one specific address.

    aioice gathers every interface address except loopback, so media would flow over
    addresses the server was never told to use. aioice has no option for this; replacing
    its address lookup is the one hook (process-wide, and only the server process uses it).
    """
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return  # a host name: leave ICE alone
    if address.is_unspecified:
        return
    import aioice.ice

    def only_host(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [host] if (address.version == 4 and use_ipv4) or (address.version == 6 and use_ipv6) else []

    aioice.ice.get_host_addresses = only_host


def _track_class() -> type:
    import av
    from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

    class SessionVideoTrack(MediaStreamTrack):
        """Frames of one session, at most ``fps`` per second, each with its frame-id strip."""

        kind = "video"

        def __init__(self, session: Session, on_sent: Callable[[Session], Awaitable[None]]) -> None:
            super().__init__()
            self.session = session
            self.on_sent = on_sent
            self._start = time.perf_counter()
            self._next_at = 0.0

        async def recv(self) -> av.VideoFrame:
            frame = await self.session.queue.get()
            if frame is None:
                self.stop()
                raise MediaStreamError
            now = time.perf_counter()
            if self._next_at > now:
                await asyncio.sleep(self._next_at - now)
            sent_at = max(self._next_at, now)
            self._next_at = sent_at + 1.0 / self.session.fps
            video_frame = av.VideoFrame.from_ndarray(add_frame_id_strip(frame.pixels, frame.frame_id), format="rgb24")
            video_frame.pts = int((sent_at - self._start) * VIDEO_CLOCK)
            video_frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
            asyncio.ensure_future(self.on_sent(self.session))
            return video_frame

    return SessionVideoTrack


async def answer_offer(
    sdp: str, session: Session, server: StreamServer, *, on_sent: Callable[[Session], Awaitable[None]]
) -> tuple[Any, str]:
    """Create the peer connection for ``session`` from the browser's offer; returns ``(peer, answer_sdp)``."""
    from aiortc import RTCPeerConnection, RTCSessionDescription

    peer = RTCPeerConnection()
    try:
        await peer.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        peer.addTrack(_track_class()(session, on_sent))  # after the offer, so it takes the offered m-line
        await peer.setLocalDescription(await peer.createAnswer())
    except Exception as err:
        await peer.close()
        raise ValueError(str(err) or type(err).__name__) from None
    return peer, peer.localDescription.sdp
