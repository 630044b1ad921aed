"""Flow-matching denoising schedulers: each owns its whole loop (``sample``) and ``add_noise``."""

from framestream.diffusion.schedulers.base import FlowPredictor, Scheduler, SchedulerConfig, shift_sigmas
from framestream.diffusion.schedulers.euler import FlowMatchEulerScheduler, FlowMatchEulerSchedulerConfig
from framestream.diffusion.schedulers.flow_match import FlowMatchScheduler, FlowMatchSchedulerConfig
from framestream.diffusion.schedulers.unipc import FlowMatchUniPCScheduler, FlowMatchUniPCSchedulerConfig

__all__ = [
    "FlowMatchEulerScheduler",
    "FlowMatchEulerSchedulerConfig",
    "FlowMatchScheduler",
    "FlowMatchSchedulerConfig",
    "FlowMatchUniPCScheduler",
    "FlowMatchUniPCSchedulerConfig",
    "FlowPredictor",
    "Scheduler",
    "SchedulerConfig",
    "shift_sigmas",
]
