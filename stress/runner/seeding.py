"""Random streams: one per path, derived from ``(seed, path index)`` only.

A result therefore does not depend on how paths are split into shards,
workers or backends. The first spawn-key word separates the purposes, so
the book's stream never coincides with a path's.
"""

from __future__ import annotations

import numpy as np

_PATH = 0
_POPULATION = 1


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=key)))


def path_rng(seed: int, path_index: int) -> np.random.Generator:
    """Stream of the market path with index ``path_index``."""
    return _rng(seed, _PATH, path_index)


def population_rng(seed: int, path_index: int | None = None) -> np.random.Generator:
    """Stream of the synthetic book: one per run, or one per path when redrawn."""
    if path_index is None:
        return _rng(seed, _POPULATION)
    return _rng(seed, _POPULATION, path_index + 1)
