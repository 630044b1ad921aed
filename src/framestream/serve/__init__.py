"""Live streaming server: watch and steer a generation in the browser (``framestream serve``).

The model-facing parts (:class:`SteerableRollout`, :func:`resolve_recipe`) import without the
server's optional dependencies; the server itself (``ServerConfig(...).setup()``) needs the
``serve`` extra (aiohttp; aiortc for WebRTC; pillow).
"""

from framestream.serve.config import ServerConfig
from framestream.serve.recipes import ServedRecipe, prompt_context_builder, recipe_names, resolve_recipe
from framestream.serve.steering import KeptBlock, SteerableRollout

__all__ = [
    "KeptBlock",
    "ServedRecipe",
    "ServerConfig",
    "SteerableRollout",
    "prompt_context_builder",
    "recipe_names",
    "resolve_recipe",
]
