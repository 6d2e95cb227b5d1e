"""numba's ``njit``, or the identity when ``STRESS_DISABLE_NUMBA=1``.

Every kernel is written as plain Python and compiled under a second name, so
the pure-Python path runs the very same source.
"""

from __future__ import annotations

import os

NUMBA_DISABLED = os.environ.get("STRESS_DISABLE_NUMBA", "").strip() not in ("", "0")

if NUMBA_DISABLED:
    def njit(*args, **kwargs):
        if len(args) == 1 and callable(args[0]) and not kwargs:
            return args[0]
        return lambda f: f
else:
    from numba import njit  # noqa: F401
