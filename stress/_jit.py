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

import os
from typing import Callable

NUMBA_DISABLED = os.environ.get("STRESS_DISABLE_NUMBA", "").strip() not in ("", "0")


def borrowed(a):
    """``a`` itself; in compiled code, a view of ``a`` that is not reference counted
    (valid while the caller holds ``a``)."""
    return a


# What the command line prints when numba compiles instead of loading its cache.
COMPILE_NOTICE = ("Compiling the kernels with numba: once after installing or upgrading, "
                  "1-3 minutes on 2 cores; later runs load them from the cache.")


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
