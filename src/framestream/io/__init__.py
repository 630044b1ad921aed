"""File I/O: streaming video writing/reading and atomic file writes."""

from framestream.io.atomic import atomic_path, check_writable
from framestream.io.video import StreamingVideoWriter, iter_video_frames, read_video, to_uint8, video_fps

__all__ = [
    "StreamingVideoWriter",
    "atomic_path",
    "check_writable",
    "iter_video_frames",
    "read_video",
    "to_uint8",
    "video_fps",
]
