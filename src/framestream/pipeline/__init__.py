"""Streaming inference pipeline: encoder -> diffusion model -> decoder, one AR chunk at a time."""

from framestream.pipeline.cache import StreamInferencePipelineCache
from framestream.pipeline.config import StreamInferencePipelineConfig
from framestream.pipeline.pipeline import StreamInferencePipeline
from framestream.pipeline.profiling import STAGES, EventProfiler, format_record, process_rss_bytes, profile_table

__all__ = [
    "STAGES",
    "EventProfiler",
    "StreamInferencePipeline",
    "StreamInferencePipelineCache",
    "StreamInferencePipelineConfig",
    "format_record",
    "process_rss_bytes",
    "profile_table",
]
