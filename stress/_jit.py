"""numba's ``njit``, or the identity when ``STRESS_DISABLE_NUMBA=1``.

Every kernel is written as plain Python and compiled under a second name, so
the pure-Python path runs the very same source.

:func:`borrowed` is the identity in Python. Compiled, it returns the same array
without its reference count: numba counts references to every array held
across a branch or passed to a call with an atomic increment and decrement
(≈ 10 ns each), and a crash path makes millions of such calls. A kernel borrows
the arrays its caller owns for the length of the call, never one it allocates
or returns.
"""

from __future__ import annotations

import importlib.abc
import os
import sys
from typing import Callable

NUMBA_DISABLED = os.environ.get("STRESS_DISABLE_NUMBA", "").strip() not in ("", "0")


def borrowed(a):
    """``a`` itself; in compiled code, a view of ``a`` that is not reference counted
    (valid while the caller holds ``a``)."""
    return a


# What the command line prints when numba compiles instead of loading its cache.
COMPILE_NOTICE = ("Compiling the kernels with numba: once after installing or upgrading, "
                  "1-3 minutes on 2 cores; later runs load them from the cache.")


class _NoLinalg(importlib.abc.MetaPathFinder):
    """An import finder that refuses ``scipy.linalg`` (see :func:`skip_blas_probe`)."""

    def find_spec(self, name, path=None, target=None):
        if name == "scipy.linalg":
            raise ImportError("scipy.linalg: not imported while numba looks for a BLAS")
        return None


def skip_blas_probe() -> None:
    """For a command's own process: load numba's array functions without their
    probe for a BLAS. ``numba.np.arraymath`` imports ``scipy.linalg`` on import
    (≈ 0.3 s, a sixth of a small run's start) only to learn whether ``np.dot``
    and friends can compile; the kernels use no BLAS. Afterwards numba compiles
    no BLAS function in this process; ``scipy.linalg`` itself imports as usual.
    Nothing is done if either module is already loaded."""
    if NUMBA_DISABLED or "numba.np.arraymath" in sys.modules or "scipy.linalg" in sys.modules:
        return
    finder = _NoLinalg()
    sys.meta_path.insert(0, finder)
    try:
        import numba.np.arraymath  # noqa: F401
    finally:
        sys.meta_path.remove(finder)


def on_first_compile(notify: Callable[[], None]) -> None:
    """Call ``notify()`` the first time numba compiles something in this process from
    now on (a cache miss: loading the cache does not count). For command-line
    commands, whose process ends with them."""
    if NUMBA_DISABLED:
        return
    from numba.core import event

    class Once(event.Listener):
        fired = False

        def on_start(self, ev):
            if not self.fired:
                self.fired = True
                notify()

        def on_end(self, ev):
            pass

    event.register("numba:compile", Once())


if NUMBA_DISABLED:
    def njit(*args, **kwargs):
        if len(args) == 1 and callable(args[0]) and not kwargs:
            return args[0]
        return lambda f: f

    def leaf(f):
        return f
else:
    # numba keys its cache on a function's source and bytecode, not on the options it
    # was compiled with: after changing an option here, clear the cache (`make clean`,
    # or delete stress/**/*.nbi and *.nbc), or the kernels compiled before load.
    from numba import njit  # noqa: F401
    from numba.core import cgutils, types
    from numba.core.cpu import CPUTargetOptions
    from numba.extending import intrinsic, overload

    # numba's (private) option that compiles a function without its runtime: no
    # reference counting at all, so a call costs what its arithmetic costs (a
    # helper holding eight arrays paid ≈ 200 ns of counting per call even with
    # borrowed arrays). Such a function cannot allocate, nor call one that does:
    # numba refuses to compile it. Left out if a numba version lacks the option.
    _LEAF = {"_nrt": False} if hasattr(CPUTargetOptions, "_nrt") else {}

    def leaf(f):
        """``njit(cache=True)`` for a kernel helper that allocates nothing (directly or
        in what it calls): compiled without reference counting."""
        return njit(cache=True, **_LEAF)(f)

    @intrinsic
    def _uncounted(typingctx, arr):
        """The array ``arr`` with a null meminfo and parent: reference counting
        skips it, and it is never handed back to Python."""
        if not isinstance(arr, types.Array):
            return None

        def codegen(context, builder, sig, args):
            ary = context.make_array(sig.args[0])(context, builder, value=args[0])
            ary.meminfo = cgutils.get_null_value(ary.meminfo.type)
            ary.parent = cgutils.get_null_value(ary.parent.type)
            return ary._getvalue()

        return arr(arr), codegen

    @overload(borrowed)
    def _borrowed_compiled(a):
        return lambda a: _uncounted(a)
