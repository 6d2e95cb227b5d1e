#!/usr/bin/env python
"""Throughput of the numba liquidation kernel against the numpy per-step baseline.

One run measures, on the same machine and under the same load:

* ``stress.exchange.kernels.simulate`` (numba) with the book already prepared,
  ``prepare_book`` (thresholds + the O(n log n) sort, done once per book) and
  their sum;
* ``stress.exchange.reference.VectorisedEngine``: the same rules, every step
  computing every account's equity and maintenance margin in numpy (the
  baseline every ratio is taken against);
* ``stress.exchange.reference.ReferenceEngine`` (pure Python) on a small book,
  extrapolated to account-steps per second.

The workload is one deterministic one-day crash path (1,440 one-minute steps by
default) on a synthetic book of 100,000 accounts, under the loss policy
``[insurance_fund, adl]`` with a fund small enough to run dry, so that the
fund, the ADL queue and the re-sort of the kernel are all exercised. About a
third of the accounts are liquidated. The engines must agree on every metric
(relative 1e-9): the benchmark also checks that they compute the same thing,
and exits with status 1 if they do not.

Usage::

    python benchmarks/bench_kernel.py [--accounts N] [--steps N] [--repeat N]

Throughput is ``accounts × steps / seconds per path``. The kernel does not
visit every account at every step (it walks the sorted book only while the
mark crosses liquidation thresholds), so its figure is the equivalent
throughput of doing the same job.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

# Run from a checkout without installing: make the package importable.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from stress._jit import NUMBA_DISABLED  # noqa: E402
from stress.config import SyntheticPopulation  # noqa: E402
from stress.exchange.kernels import (book_accounts, make_params, prepare_book,  # noqa: E402
                                     simulate, tier_array)
from stress.exchange.reference import ReferenceEngine, VectorisedEngine  # noqa: E402
from stress.exchange.tiers import builtin_tiers  # noqa: E402
from stress.population import Book, synthetic_book  # noqa: E402
from stress.runner.variables import (ADL_BASIS_CODES, INDEX, LAYER_CODES,  # noqa: E402
                                     PATH_METRICS)

SEED = 20260312
S0 = 100_000.0
TIERS = "binance_btcusdt_2021"
LAYERS = ["insurance_fund", "adl"]
ADL_BASIS = "collateral"
FUND_PER_ACCOUNT = 1.0  # quote: 100,000 at 100,000 accounts; runs dry in the crash
FEE_RATE = 0.005
FEE_SHARE = 1.0
SLIPPAGE = 0.002
STEP_MINUTES = 1.0
SIGMA = 0.2  # per √year: small background noise (more would liquidate many shorts early)
CRASH_DEPTH = 0.15  # the crash takes log(1 − 0.15) off the price
CRASH_MINUTES = 20
REBOUND = 0.4  # fraction of the crash (in log terms) won back
REBOUND_MINUTES = 180
RTOL = 1e-9
TARGET = 10.0  # kernel ≥ 10× numpy


def rng_for(*key: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(list(key))))


def crash_path(steps: int, seed: int = SEED) -> np.ndarray:
    """Deterministic path of ``steps + 1`` prices from ``S0``: GBM noise, a crash of
    ≈ −15% over 20 minutes (sin² profile) at 5/12 of the path, then a partial
    rebound (40% of the fall, in log terms) over the next 3 hours."""
    return wick_path(steps, CRASH_DEPTH, seed, CRASH_MINUTES, REBOUND, REBOUND_MINUTES)


def wick_path(steps: int, depth: float, seed: int, minutes: int, rebound: float,
              rebound_minutes: int) -> np.ndarray:
    """Deterministic path of ``steps + 1`` prices from ``S0``: GBM noise (``SIGMA``), a
    fall of ``depth`` (sin² profile over ``minutes``) at 5/12 of the path, then
    ``rebound`` of the fall (in log terms) won back linearly over ``rebound_minutes``."""
    dt = STEP_MINUTES / (365.0 * 24.0 * 60.0)
    lr = SIGMA * math.sqrt(dt) * rng_for(seed, 1).standard_normal(steps) - 0.5 * SIGMA**2 * dt
    if depth > 0:
        start = (steps * 5) // 12
        length = max(1, min(minutes, steps - start))
        fall = math.log(1.0 - depth)
        w = np.sin(np.linspace(0.0, math.pi, length + 2)[1:-1]) ** 2
        lr[start:start + length] += fall * w / w.sum()
        r0 = start + length
        rl = max(0, min(rebound_minutes, steps - r0))
        if rl:
            lr[r0:r0 + rl] -= fall * rebound / rl
    return S0 * np.exp(np.concatenate(([0.0], np.cumsum(lr))))


def report_agreement(engine: str, bad: list[str], accounts: int) -> bool:
    """Print whether the kernel agreed with ``engine`` (``bad``: the metrics that
    differ, from :func:`disagreements`); returns whether it did."""
    if bad:
        print(f"DISAGREEMENT kernel vs {engine} ({accounts:,} accounts): " + "; ".join(bad))
        return False
    print(f"kernel and {engine} agree on all {len(PATH_METRICS)} metrics at {accounts:,} "
          f"accounts (rtol {RTOL:g})")
    return True


def make_book(accounts: int, tiers, seed: int = SEED) -> Book:
    cfg = SyntheticPopulation(kind="synthetic", accounts=accounts)
    return synthetic_book(cfg, tiers, S0, rng_for(seed))


def prepare(book: Book, tiers):
    """The book's account array with its thresholds, and its sorted orders."""
    acct = book_accounts(book)
    return acct, prepare_book(acct, tier_array(tiers), make_params())


def run_kernel(prices, book, tiers, fund, prepared=None, layers=LAYERS):
    codes = [LAYER_CODES[name] for name in layers]
    acct, orders = prepared if prepared is not None else (None, None)
    return simulate(prices, book, tiers, codes, fund, fee_rate=FEE_RATE, fee_share=FEE_SHARE,
                    slippage=SLIPPAGE, step_minutes=STEP_MINUTES,
                    adl_basis=ADL_BASIS_CODES[ADL_BASIS], prepared=orders, acct=acct)


def run_reference(cls, prices, book, tiers, fund):
    engine = cls(prices, book.qty, book.entry, book.collateral, tiers, LAYERS, fund, FEE_RATE,
                 FEE_SHARE, SLIPPAGE, STEP_MINUTES, ADL_BASIS)
    return engine.run()


def timed(fn, repeat: int):
    """Best wall time of ``repeat`` calls (perf_counter) and the last result."""
    best = math.inf
    out = None
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def disagreements(a: np.ndarray, b: np.ndarray, rtol: float = RTOL) -> list[str]:
    """Metrics on which two result arrays differ by more than ``rtol`` (NaN == NaN)."""
    bad = []
    for v in PATH_METRICS:
        k = INDEX[v.name]
        x, y = float(a[k]), float(b[k])
        if math.isnan(x) and math.isnan(y):
            continue
        if not abs(x - y) <= rtol * max(abs(x), abs(y)):
            bad.append(f"{v.name}: {x!r} vs {y!r}")
    return bad


def fmt_rate(r: float) -> str:
    return "—" if not math.isfinite(r) else f"{r:,.3g}"


def fmt_ratio(r: float) -> str:
    if not math.isfinite(r):
        return "—"
    if r >= 100:
        return f"{r:,.0f}x"
    if r >= 10:
        return f"{r:.1f}x"
    if r >= 1:
        return f"{r:.2f}x"
    return f"{r:.3g}x"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--accounts", type=int, default=100_000, help="book size (default 100000)")
    ap.add_argument("--steps", type=int, default=1440, help="steps per path (default 1440)")
    ap.add_argument("--repeat", type=int, default=3,
                    help="timed runs of the kernel and prepare_book; best is kept (default 3)")
    ap.add_argument("--numpy-repeat", type=int, default=1,
                    help="timed runs of the numpy engine (default 1: it is slow)")
    ap.add_argument("--python-accounts", type=int, default=2000,
                    help="book size of the pure-Python reference run, 0 to skip (default 2000)")
    ap.add_argument("--seed", type=int, default=SEED, help=f"book and path seed (default {SEED})")
    args = ap.parse_args(argv)
    if args.accounts < 1 or args.steps < 1 or args.repeat < 1 or args.numpy_repeat < 1:
        ap.error("--accounts, --steps, --repeat and --numpy-repeat must be >= 1")

    import numba

    t_start = time.perf_counter()
    load0 = os.getloadavg()
    print("bench_kernel: numba liquidation kernel vs numpy per-step baseline")
    print(f"machine: cpu_count={os.cpu_count()}  loadavg(1/5/15 min)="
          f"{load0[0]:.2f}/{load0[1]:.2f}/{load0[2]:.2f}  {platform.machine()}  "
          f"python {platform.python_version()}  numpy {np.__version__}  "
          f"numba {numba.__version__}")
    if NUMBA_DISABLED:
        print("WARNING: STRESS_DISABLE_NUMBA is set: the 'kernel' runs as plain Python.")

    tiers = builtin_tiers(TIERS)
    n, steps = args.accounts, args.steps
    fund = FUND_PER_ACCOUNT * n
    prices = crash_path(steps, args.seed)
    book = make_book(n, tiers, args.seed)
    print(f"workload: {n:,} accounts x {steps:,} steps = {n * steps:,} account-steps; "
          f"seed {args.seed}; tiers {TIERS}")
    print(f"path: start {prices[0]:,.0f}, low {prices.min():,.0f} "
          f"({prices.min() / prices[0] - 1:+.1%}) at step {int(prices.argmin())}, "
          f"end {prices[-1]:,.0f}")
    print(f"policy: {LAYERS} (ADL PnL% on {ADL_BASIS}), fund {fund:,.0f}, "
          f"fee_rate {FEE_RATE}, fee_share {FEE_SHARE}, slippage {SLIPPAGE}")

    # ---- warm-up: compile (or load the numba cache), excluded from the timings
    small = Book.from_arrays(book.qty[:1000], book.entry[:1000], book.collateral[:1000])
    t0 = time.perf_counter()
    run_kernel(prices, small, tiers, FUND_PER_ACCOUNT * len(small), prepare(small, tiers))
    t_compile = time.perf_counter() - t0
    print(f"warm-up (numba compile or cache load, excluded): {t_compile:.2f} s")

    # ---- kernel: prepare_book once per book, then the path with the book prepared
    t_prep, prepared = timed(lambda: prepare(book, tiers), args.repeat)
    t_kern, m_kern = timed(lambda: run_kernel(prices, book, tiers, fund, prepared),
                           args.repeat)
    # For scale only: the same path without ADL, so without the re-sorts ADL forces.
    t_plat, _ = timed(lambda: run_kernel(prices, book, tiers, fund, prepared, ["platform"]),
                      args.repeat)

    # ---- numpy baseline (engine set-up included: it converts the book once)
    t_np, m_np = timed(lambda: run_reference(VectorisedEngine, prices, book, tiers, fund),
                       args.numpy_repeat)

    # ---- pure Python on a small book, extrapolated per account-step
    t_py = math.nan
    n_py = args.python_accounts
    py_bad: list[str] = []
    if n_py > 0:
        book_py = make_book(n_py, tiers, args.seed)
        fund_py = FUND_PER_ACCOUNT * n_py
        t_py, m_py = timed(lambda: run_reference(ReferenceEngine, prices, book_py, tiers,
                                                 fund_py), 1)
        py_bad = disagreements(run_kernel(prices, book_py, tiers, fund_py), m_py)

    work = n * steps
    rate_np = work / t_np
    rows = [
        ("numba kernel (book prepared)", t_kern, work / t_kern),
        ("prepare_book (once per book)", t_prep, math.nan),
        ("kernel + prepare_book", t_kern + t_prep, work / (t_kern + t_prep)),
        ("numpy VectorisedEngine", t_np, rate_np),
    ]
    if n_py > 0:
        rows.append(("pure Python ReferenceEngine*", t_py * n / n_py, n_py * steps / t_py))

    print()
    print(f"best of {args.repeat} (kernel, prepare_book), {args.numpy_repeat} (numpy), "
          f"1 (pure Python)")
    print(f"{'engine':<32}{'s / path':>12}{'account-steps/s':>18}{'vs numpy':>12}")
    for name, sec, rate in rows:
        print(f"{name:<32}{sec:>12.4g}{fmt_rate(rate):>18}{fmt_ratio(rate / rate_np):>12}")
    print(f"(kernel under policy ['platform'] on the same path, no ADL ranking: "
          f"{t_plat:.4g} s/path; not compared)")
    if n_py > 0:
        print(f"* measured at {n_py:,} accounts x {steps:,} steps ({t_py:.2f} s), "
              f"extrapolated linearly to {n:,} accounts")

    nliq = m_kern[INDEX["n_liquidations"]]
    print()
    print(f"liquidated: {nliq:,.0f} of {n:,} accounts ({nliq / n:.1%}; aim ≈ 1/3), "
          f"shortfall {m_kern[INDEX['shortfall']]:,.2f} in "
          f"{m_kern[INDEX['n_shortfalls']]:,.0f} liquidations; fund paid "
          f"{m_kern[INDEX['fund_paid']]:,.2f}, ran dry at minute "
          f"{m_kern[INDEX['time_to_depletion']]:g}; ADL covered "
          f"{m_kern[INDEX['adl_cost']]:,.2f} in {m_kern[INDEX['n_adl']]:,.0f} closes; "
          f"residual {m_kern[INDEX['residual']]:,.2f}")

    ok = True
    np_bad = disagreements(m_kern, m_np)
    for key in ("n_liquidations", "shortfall"):
        a, b = float(m_kern[INDEX[key]]), float(m_np[INDEX[key]])
        same = abs(a - b) <= RTOL * max(abs(a), abs(b))
        print(f"agreement {key}: kernel {a!r}, numpy {b!r} -> {'ok' if same else 'DIFFER'}")
        ok &= same
    ok &= report_agreement("numpy", np_bad, n)
    if n_py > 0:
        ok &= report_agreement("pure Python", py_bad, n_py)

    r1 = (work / t_kern) / rate_np
    r2 = (work / (t_kern + t_prep)) / rate_np
    met = r1 >= TARGET
    print(f"target kernel >= {TARGET:g}x numpy: {'MET' if met else 'NOT MET'} "
          f"({r1:,.1f}x with the book prepared, {r2:,.1f}x including prepare_book)")
    load1 = os.getloadavg()
    print(f"loadavg at end: {load1[0]:.2f}/{load1[1]:.2f}/{load1[2]:.2f}; "
          f"total run time {time.perf_counter() - t_start:.1f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
