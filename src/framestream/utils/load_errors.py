"""Why a file could not be loaded, in a few plain words (for one-line errors)."""

from __future__ import annotations

import pickle

__all__ = ["load_error_reason"]


def load_error_reason(err: BaseException, limit: int = 200) -> str:
    """The reason a damaged, cut or foreign file failed to load, on one line.

    A refused pickle (``weights_only=True`` met an object other than tensors) is said
    as such: the code in it was not run.
    """
    if isinstance(err, pickle.UnpicklingError):
        return "it holds pickled objects other than tensors, which are never loaded (weights_only)"
    return " ".join(str(err).split())[:limit] or type(err).__name__
