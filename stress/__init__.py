"""stress: Monte Carlo stress tests of perpetual-futures loss-absorbing machinery.

Public API: :func:`run`, :func:`sweep`, :func:`open_results`, :func:`open_sweep`,
:func:`load_config`.
Heavy modules (numba, xarray) load on first use, so ``stress --help`` is instant.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["run", "sweep", "open_results", "open_sweep", "load_config", "__version__"]


def __getattr__(name):
    if name == "run":
        from stress.runner.run import run
        return run
    if name == "sweep":
        from stress.runner.sweep import sweep
        return sweep
    if name == "open_sweep":
        from stress.runner.sweep import open_sweep
        return open_sweep
    if name == "open_results":
        from stress.runner.store import open_results
        return open_results
    if name == "load_config":
        from stress.config import load_config
        return load_config
    raise AttributeError(f"module 'stress' has no attribute {name!r}")
