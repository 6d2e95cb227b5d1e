"""``stress._jit.borrowed``: the same array, without reference counting in compiled code."""

from __future__ import annotations

import sys

import numpy as np

from stress._jit import NUMBA_DISABLED, borrowed, njit


@njit
def _fill_borrowed(a, b, k):
    """Writes through borrowed views (2-D rows and a 1-D slice), calls a helper with
    them in a loop, allocates and returns a new array: what the kernels do."""
    a = borrowed(a)
    b = borrowed(b)
    row = a[1]
    for j in range(k):
        _bump(row, b[:3], j)
    return a.sum() + b.sum(), b[:3].copy()


@njit
def _bump(row, head, j):
    if j % 2 == 0:
        row[j % row.shape[0]] += 1.0
    else:
        head[j % 3] -= 0.5


def test_borrowed_is_the_array_in_python():
    a = np.arange(3.0)
    assert borrowed(a) is a


def test_borrowed_views_write_to_the_caller_array_and_leave_refcounts_alone():
    a = np.zeros((3, 4))
    b = np.arange(6.0)
    refs = (sys.getrefcount(a), sys.getrefcount(b))
    total, head = _fill_borrowed(a, b, 10)
    # j = 0, 2, 4, 6, 8 add 1 to a[1, j % 4] (columns 0, 2, 0, 2, 0);
    # j = 1, 3, 5, 7, 9 take 0.5 from b[j % 3] (items 1, 0, 2, 1, 0)
    np.testing.assert_array_equal(a[1], [3.0, 0.0, 2.0, 0.0])
    np.testing.assert_array_equal(b, [-1.0, 0.0, 1.5, 3.0, 4.0, 5.0])
    assert total == 5.0 + 12.5
    np.testing.assert_array_equal(head, b[:3])
    head[0] = 99.0  # a copy, owned: not a view of b
    assert b[0] == -1.0
    for _ in range(1000):  # a leak or a double free would show in the counts
        _fill_borrowed(a, b, 3)
    assert (sys.getrefcount(a), sys.getrefcount(b)) == refs
    assert NUMBA_DISABLED or hasattr(_fill_borrowed, "signatures")


def test_on_first_compile_calls_back_once_on_a_cache_miss():
    from stress._jit import on_first_compile

    calls = []
    on_first_compile(lambda: calls.append("compiling"))

    @njit
    def plus_one(x):
        return x + 1

    assert calls == []  # nothing compiled yet (numba compiles on the first call)
    assert plus_one(1) == 2
    assert plus_one(1.5) == 2.5  # a second signature: a second compile, no second call
    assert calls == ([] if NUMBA_DISABLED else ["compiling"])


def test_leaf_helpers_compile_without_reference_counting():
    from stress._jit import leaf

    @leaf
    def ends(a):
        return a[0] + a[-1]

    a = np.arange(4.0)
    refs = sys.getrefcount(a)
    for _ in range(100):
        assert ends(a) == 3.0
    assert sys.getrefcount(a) == refs
    if not NUMBA_DISABLED:
        from numba.core.cpu import CPUTargetOptions
        # numba's private option, where this numba version has it
        expected = False if hasattr(CPUTargetOptions, "_nrt") else None
        assert ends.targetoptions.get("_nrt") is expected


def test_skip_blas_probe_loads_numba_without_scipy_linalg():
    # In a fresh process: numba's array functions load without importing scipy.linalg
    # (the 0.3 s BLAS probe), the kernels still compile and run, and scipy.linalg
    # imports as usual afterwards.
    import subprocess
    import textwrap
    code = textwrap.dedent("""
        import sys
        from stress._jit import NUMBA_DISABLED, skip_blas_probe
        skip_blas_probe()
        if not NUMBA_DISABLED:
            assert "numba.np.arraymath" in sys.modules
        assert "scipy.linalg" not in sys.modules
        import numpy as np
        from stress.exchange.kernels import argsort_stable
        x = np.random.default_rng(1).random(1000)
        assert np.array_equal(argsort_stable(x), np.argsort(x, kind="stable"))
        import scipy.linalg
        assert abs(scipy.linalg.norm(np.array([3.0, 4.0])) - 5.0) < 1e-12
        skip_blas_probe()  # a second call does nothing
        print("ok")
        """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "ok"
