"""stress: Monte Carlo stress tests of perpetual-futures loss-absorbing machinery.

Public API: :func:`run`, :func:`open_results`, :func:`load_config`.
Heavy modules (numba, xarray) load on first use, so ``stress --help`` is instant.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["run", "open_results", "load_config", "__version__"]


def __getattr__(name):
    if name == "run":
        from stress.runner.run import run
        return run
    if name == "open_results":
        from stress.runner.store import open_results
        return open_results
    if name == "load_config":
        from stress.config import load_config
        return load_config
    raise AttributeError(f"module 'stress' has no attribute {name!r}")
