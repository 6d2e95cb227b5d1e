#!/usr/bin/env python
"""Scale benchmarks of the liquidation kernel (issue 7): detection strategies, peers,
fixed costs.

One run measures, on the same machine and under the same load:

a. **Kernel comparison** at 100,000 accounts × 1,440 one-minute steps under the
   policy ``[insurance_fund, adl]``, on two deterministic crash paths: (i) a wick
   that liquidates a few per cent of the book (the headline of the 1,000×
   target) and (ii) the extreme crash of ``bench_kernel.py`` (≈ 37 % of the
   accounts liquidated). Engines: the pure-Python ``ReferenceEngine`` (small
   book, extrapolated), the numpy ``VectorisedEngine``, and the numba kernel in
   its three detection modes: ``DETECT_NAIVE`` (the exact margin test on every
   open account at every mark: the naive numba kernel), ``DETECT_SCAN`` (every
   open account's threshold compared with the mark) and ``DETECT_SORTED`` (the
   sorted-threshold walk, the fast kernel, run through ``BookRunner``; its
   one-off preparation is reported separately and amortised over
   ``--amortise`` paths, 250 by default: one shard, a lower bound, since
   ``stress run`` prepares a book once per worker and reuses it for the
   worker's next shards). Every engine gets the book's rows in walk order, the layout
   ``stress run`` keeps a book in. For scale, a stand-alone numba loop doing
   only the margin test on contiguous arrays (no events: not an engine) shows
   the floor of any per-step scan. All numba modes must give bit-identical metrics, and
   numpy / pure Python must agree with them to 1e-9; otherwise the script
   prints the difference and exits with status 1. A sweep of the wick's depth
   shows how the sorted kernel's time grows with the liquidations.
b. **Peers**: 2,000 accounts, 200 paths, 3 policies, at 7,200 steps (Merton
   jump-diffusion paths with one −7 % jump a day on average) and at 600 steps
   (the four shock shapes of ``scenarios/``, 50 noisy paths each): the kernel's
   equivalent account-steps per second on one core (kernel time only, one
   kernel call per path for the three policies, as ``stress run`` calls it),
   against the figures the issue quotes for three peers, with the ≥ 100×
   target; and each policy's time with a call of its own.
c. **Fixed costs**: generating one 1,440-step path of ``configs/default.yaml``
   (its random stream, the Merton price path, the mark and liquidity arrays).

Usage::

    python benchmarks/bench_scale.py [--accounts N] [--steps N] [--repeat N] [--quick]

Throughput is ``accounts × steps / seconds per path`` (account-steps/s); the
sorted kernel does not visit every account at every step, so its figure is the
equivalent throughput of doing the same job.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

# Run from a checkout without installing: make the package (and bench_kernel) importable.
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_kernel as bk  # noqa: E402  (the extreme crash path, the book, the checks)
from stress._jit import NUMBA_DISABLED, njit  # noqa: E402
from stress.config import load_config  # noqa: E402
from stress.exchange.contracts import kernel_market  # noqa: E402
from stress.exchange.kernels import (DETECT_NAIVE, DETECT_SCAN, DETECT_SORTED,  # noqa: E402
                                     S_FORKS, BookRunner, book_accounts, layer_table,
                                     make_params, prepare_book, tier_array, walk_permutation)
from stress.exchange.reference import ReferenceEngine, VectorisedEngine  # noqa: E402
from stress.exchange.tiers import builtin_tiers  # noqa: E402
from stress.market.liquidity import path_liquidity  # noqa: E402
from stress.market.paths import price_path  # noqa: E402
from stress.runner.seeding import path_rng  # noqa: E402
from stress.runner.shard import BATCH_PATHS  # noqa: E402
from stress.runner.variables import (ADL_BASIS_CODES, INDEX, LAYER_CODES,  # noqa: E402
                                     N_METRICS, PATH_METRICS)

SEED = bk.SEED
LAYERS = bk.LAYERS  # ["insurance_fund", "adl"]
TARGET_NAIVE = 1000.0  # sorted ≥ 1000× naive numba
TARGET_PEERS = 100.0  # ≥ 100× each peer
# Headline wick (i): sized to liquidate a few per cent of the default synthetic book.
WICK_DEPTH = 0.02
WICK_MINUTES = 5
WICK_REBOUND = 0.5  # fraction of the fall (log terms) won back ...
WICK_REBOUND_MINUTES = 60  # ... over this many minutes
SWEEP_DEPTHS = (0.0, 0.02, 0.05, 0.08, 0.10, 0.15)
# Peers (issue 7), account-steps per second on their own headline workloads.
PEERS = [
    ("Rust stress test (15 crash shapes x 200 seeds x 2,000 users x <=600 steps, 2 cores)",
     2.0e7),
    ("Python+numba simulator (100 paths x 7,200 steps x 2,000 traders x 2 models, 1 core)",
     1.9e8),
    ("C++ liquidation engine", 2.1e8),
]
PEER_POLICIES = [("fund+adl", ["insurance_fund", "adl"]), ("socialised", ["socialised"]),
                 ("platform", ["platform"])]
PEER_FUND_PER_ACCOUNT = 25.0  # configs/default.yaml: 500,000 for 20,000 accounts
PEER_JUMPS_PER_YEAR = 365.0  # one crash-sized jump a day on average
SHOCK_SCENARIOS = ("gap_down_20pct", "wick_30pct", "staircase_crash", "short_squeeze")
DEFAULT_CONFIG = ROOT / "configs" / "default.yaml"


# ------------------------------------------------------------------ helpers
def machine_line(label: str = "machine") -> str:
    import numba
    la = os.getloadavg()
    return (f"{label}: cpu_count={os.cpu_count()}  loadavg(1/5/15 min)={la[0]:.2f}/{la[1]:.2f}/"
            f"{la[2]:.2f}  {platform.machine()}  python {platform.python_version()}  "
            f"numpy {np.__version__}  numba {numba.__version__}")


def best_of(fn, repeat: int):
    """Best wall time of ``repeat`` calls and the last result."""
    best, out = math.inf, None
    for _ in range(max(1, repeat)):
        gc.collect()
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def fmt_s(s: float) -> str:
    if not math.isfinite(s):
        return "—"
    if s >= 1:
        return f"{s:.3g} s"
    if s >= 1e-3:
        return f"{s * 1e3:.3g} ms"
    return f"{s * 1e6:.3g} µs"


def fmt_ns(ns: float) -> str:
    if not math.isfinite(ns):
        return "—"
    return f"{ns:.3g}" if ns >= 0.01 else f"{ns:.2e}"


def wick_path(steps: int, depth: float, seed: int = SEED, minutes: int = WICK_MINUTES,
              rebound: float = WICK_REBOUND,
              rebound_minutes: int = WICK_REBOUND_MINUTES) -> np.ndarray:
    """``bench_kernel.wick_path`` (the same GBM noise as its crash path) with this
    benchmark's realistic wick by default."""
    return bk.wick_path(steps, depth, seed, minutes, rebound, rebound_minutes)


def describe_path(prices: np.ndarray) -> str:
    lo = int(prices.argmin())
    return (f"start {prices[0]:,.0f}, low {prices[lo]:,.0f} ({prices[lo] / prices[0] - 1:+.1%}) "
            f"at step {lo}, end {prices[-1]:,.0f} ({prices[-1] / prices[0] - 1:+.1%})")


def plain_market(prices: np.ndarray):
    """The kernel's market tuple without a liquidity model: mark = index, infinite depth."""
    index = np.ascontiguousarray(prices, dtype=np.float64)
    inf = np.full(index.shape[0], np.inf)
    zero = np.zeros(index.shape[0])
    return (index, index, inf, inf, zero, zero)


def kernel_params(fund: float, detect: int = DETECT_SORTED) -> np.ndarray:
    return make_params(fund_initial=fund, fee_rate=bk.FEE_RATE, fee_share=bk.FEE_SHARE,
                       slippage=bk.SLIPPAGE, step_minutes=bk.STEP_MINUTES,
                       adl_basis=ADL_BASIS_CODES[bk.ADL_BASIS], detect=detect)


def layer_codes(names) -> np.ndarray:
    return np.asarray([LAYER_CODES[x] for x in names], dtype=np.int64)


@njit(cache=True)
def margin_test_floor(prices, q, e, c, cap, mmr, amt):
    """Only the per-step margin test of every open account on contiguous arrays (no
    events handled, nothing changes): the floor of any per-step scan. Returns the
    number of breaches seen (so the loop is not optimised away)."""
    n = q.shape[0]
    hits = 0
    for t in range(1, prices.shape[0]):
        mark = prices[t]
        for i in range(n):
            qi = q[i]
            if qi == 0.0:
                continue
            notional = abs(qi) * mark
            k = 0
            while notional > cap[k]:
                k += 1
            if c[i] + qi * (mark - e[i]) <= notional * mmr[k] - amt[k]:
                hits += 1
    return hits


def bitwise_diff(a: np.ndarray, b: np.ndarray) -> list[str]:
    """Metrics whose values are not bit-identical (NaN == NaN)."""
    bad = []
    for v in PATH_METRICS:
        k = INDEX[v.name]
        x, y = a[k], b[k]
        if not (x == y or (math.isnan(x) and math.isnan(y))) or (
                x == y and x == 0.0 and math.copysign(1, x) != math.copysign(1, y)):
            bad.append(f"{v.name}: {x!r} vs {y!r}")
    return bad


# ------------------------------------------------------- a. kernel comparison
def walk_ordered(book, tiers):
    """``book`` with its rows in the order the kernel's walks visit them (longs by
    falling liquidation price, shorts by rising, then closed positions): the layout
    ``stress run`` keeps a book in (``BookRunner(reorder=True)``). Every engine of
    section (a) gets these rows, so that all see the same book in the same order."""
    acct = book_accounts(book)
    perm = walk_permutation(prepare_book(acct, tier_array(tiers), make_params()), len(acct))
    return dataclasses.replace(book, **{f.name: getattr(book, f.name)[perm]
                                        for f in dataclasses.fields(book)})


class KernelCase:
    """One book, one policy, the three detection modes ready to run paths."""

    def __init__(self, book, tiers, fund: float):
        self.book, self.tiers, self.fund = book, tiers, fund
        self.tt = tier_array(tiers)
        self.acct = book_accounts(book)
        self.layers = layer_codes(LAYERS)
        self.params = {d: kernel_params(fund, d) for d in (DETECT_SORTED, DETECT_SCAN,
                                                            DETECT_NAIVE)}
        self.runners = {d: BookRunner(self.acct.copy(), self.tt, p)
                        for d, p in self.params.items()}

    def run(self, detect: int, market) -> np.ndarray:
        out = np.empty(N_METRICS)
        self.runners[detect].run(market, self.layers, self.params[detect], out, np.empty(0))
        return out

    def setup(self) -> BookRunner:
        """What one new book costs: thresholds, sort, copies, scratch."""
        return BookRunner(self.acct.copy(), self.tt, self.params[DETECT_SORTED])

    def prepare_only(self):
        return prepare_book(self.acct.copy(), self.tt, self.params[DETECT_SORTED])


def reference(cls, prices, book, tiers, fund):
    return bk.run_reference(cls, prices, book, tiers, fund)


def compare_engines(label: str, prices: np.ndarray, case: KernelCase, args, small_case) -> dict:
    """Part a for one path: times every engine, checks agreement, prints the table."""
    n = len(case.book)
    steps = len(prices) - 1
    work = n * steps
    market = plain_market(prices)
    print()
    print(f"--- {label}")
    print(f"path: {describe_path(prices)}")

    t_sorted, m_sorted = best_of(lambda: case.run(DETECT_SORTED, market), args.repeat)
    t_scan, m_scan = best_of(lambda: case.run(DETECT_SCAN, market), args.repeat)
    t_naive, m_naive = best_of(lambda: case.run(DETECT_NAIVE, market), args.naive_repeat)
    t_setup, _ = best_of(case.setup, args.repeat)
    t_prep, _ = best_of(case.prepare_only, args.repeat)
    t_floor = math.nan
    if not NUMBA_DISABLED and not args.no_floor:
        tt = case.tt
        q, e, c = (np.ascontiguousarray(case.acct[:, j]) for j in (0, 1, 2))
        t_floor, _ = best_of(lambda: margin_test_floor(market[0], q, e, c, tt[1].copy(),
                                                       tt[2].copy(), tt[3].copy()),
                             args.naive_repeat)
    t_np = math.nan
    m_np = None
    if args.numpy_repeat > 0:
        t_np, m_np = best_of(lambda: reference(VectorisedEngine, prices, case.book, case.tiers,
                                               case.fund), args.numpy_repeat)
    t_py = math.nan
    m_py = m_small = None
    if small_case is not None:
        t_py, m_py = best_of(lambda: reference(ReferenceEngine, prices, small_case.book,
                                               small_case.tiers, small_case.fund), 1)
        m_small = small_case.run(DETECT_SORTED, market)
        t_py *= n / len(small_case.book)

    k_am = args.amortise
    t_amort = t_sorted + t_setup / k_am
    rows = [
        (f"pure Python ReferenceEngine*", t_py),
        ("numpy VectorisedEngine", t_np),
        ("naive numba (DETECT_NAIVE)", t_naive),
        ("threshold scan (DETECT_SCAN)", t_scan),
        ("sorted-threshold (DETECT_SORTED)", t_sorted),
        (f"sorted + set-up / {k_am} paths", t_amort),
        ("sorted + set-up (1 path, new book)", t_sorted + t_setup),
    ]
    print(f"best of {args.repeat} (sorted, scan, set-up), {args.naive_repeat} (naive), "
          f"{args.numpy_repeat} (numpy), 1 (pure Python)")
    head = (f"{'engine':<38}{'s / path':>11}{'acct-steps/s':>14}{'ns/acct-step':>14}"
            f"{'vs naive':>10}{'vs numpy':>10}")
    print(head)
    for name, sec in rows:
        rate = work / sec if sec > 0 else math.nan
        print(f"{name:<38}{fmt_s(sec):>11}{bk.fmt_rate(rate):>14}{fmt_ns(sec / work * 1e9):>14}"
              f"{bk.fmt_ratio(t_naive / sec):>10}{bk.fmt_ratio(t_np / sec):>10}")
    print(f"{'  one-off set-up (BookRunner)':<38}{fmt_s(t_setup):>11}   of which prepare_book "
          f"(thresholds + sort) {fmt_s(t_prep)}")
    if math.isfinite(t_floor):
        print(f"{'  [floor] margin test only, SoA**':<38}{fmt_s(t_floor):>11}"
              f"{bk.fmt_rate(work / t_floor):>14}{fmt_ns(t_floor / work * 1e9):>14}"
              f"{bk.fmt_ratio(t_naive / t_floor):>10}{bk.fmt_ratio(t_np / t_floor):>10}")
    if small_case is not None:
        print(f"* measured at {len(small_case.book):,} accounts x {steps:,} steps, extrapolated "
              f"linearly to {n:,} accounts")
    if math.isfinite(t_floor):
        print("** not an engine: a numba loop over contiguous q, entry, collateral arrays doing "
              "only equity <= maintenance margin (no events, nothing changes); the floor of any "
              "per-step scan")

    nliq = m_sorted[INDEX["n_liquidations"]]
    print(f"liquidated {nliq:,.0f} of {n:,} accounts ({nliq / n:.1%}); shortfall "
          f"{m_sorted[INDEX['shortfall']]:,.0f}; fund paid {m_sorted[INDEX['fund_paid']]:,.0f}; "
          f"ADL {m_sorted[INDEX['adl_cost']]:,.0f} in {m_sorted[INDEX['n_adl']]:,.0f} closes")

    ok = True
    for name, m in (("scan", m_scan), ("naive", m_naive)):
        bad = bitwise_diff(m_sorted, m)
        if bad:
            ok = False
            print(f"DISAGREEMENT sorted vs {name} (bitwise): " + "; ".join(bad))
    if ok:
        print(f"numba modes (sorted, scan, naive) bit-identical on all {len(PATH_METRICS)} metrics")
    if m_np is not None:
        ok &= bk.report_agreement("numpy", bk.disagreements(m_sorted, m_np), n)
    if m_py is not None:
        ok &= bk.report_agreement("pure Python", bk.disagreements(m_small, m_py),
                                  len(small_case.book))
    return dict(ok=ok, t_sorted=t_sorted, t_naive=t_naive, t_scan=t_scan, t_np=t_np,
                t_floor=t_floor, t_setup=t_setup, t_amort=t_amort, share=nliq / n,
                naive_ns=t_naive / work * 1e9)


def sweep(case: KernelCase, steps: int, args, naive_ns: float, floor_ns: float) -> None:
    """The sorted kernel's time against the depth of the wick (same book, same noise)."""
    n = len(case.book)
    work = n * steps
    print()
    print(f"sorted kernel vs wick depth ({WICK_MINUTES}-minute wick, {WICK_REBOUND:.0%} rebound "
          f"over {WICK_REBOUND_MINUTES} min; best of {args.repeat}; ratios against the naive "
          f"kernel's {naive_ns:.3g} ns/account-step measured on path (i)"
          + (f" and the SoA floor's {floor_ns:.3g}" if math.isfinite(floor_ns) else "") + ")")
    print(f"{'wick':>6}{'low':>8}{'liquidated':>12}{'ADL closes':>12}{'s / path':>11}"
          f"{'vs naive':>10}{'vs floor':>10}")
    for depth in args.sweep:
        prices = wick_path(steps, depth, args.seed)
        market = plain_market(prices)
        t, m = best_of(lambda: case.run(DETECT_SORTED, market), args.repeat)
        ratio = naive_ns * 1e-9 * work / t
        fr = floor_ns * 1e-9 * work / t
        print(f"{-depth:>+6.0%}{prices.min() / prices[0] - 1:>+8.1%}"
              f"{m[INDEX['n_liquidations']] / n:>12.1%}{m[INDEX['n_adl']]:>12,.0f}"
              f"{fmt_s(t):>11}{bk.fmt_ratio(ratio):>10}{bk.fmt_ratio(fr):>10}")


# ------------------------------------------------------------------ b. peers
def peer_markets(kind: str):
    """``(label, [market configs])`` of a peer workload."""
    cfg = load_config(DEFAULT_CONFIG)
    if kind == "merton":
        m = cfg.market.model_copy(update={"jump_intensity": PEER_JUMPS_PER_YEAR})
        return (f"Merton jump-diffusion (sigma {m.sigma:g}, {m.jump_intensity:g} jumps/yr, mean "
                f"{m.jump_mean:+g} log, sd {m.jump_std:g})", [m])
    from stress.scenarios import apply_scenario
    markets = [apply_scenario(cfg, name).market for name in SHOCK_SCENARIOS]
    return ("shock shapes " + ", ".join(SHOCK_SCENARIOS) + " (sigma 0.6 noise)", markets)


def peer_workload(kind: str, steps: int, args, tiers) -> dict:
    n, paths = args.peer_accounts, args.peer_paths
    label, markets = peer_markets(kind)
    cfg = load_config(DEFAULT_CONFIG)
    dt = cfg.run.dt_years
    book = bk.make_book(n, tiers, args.seed)
    tt = tier_array(tiers)
    fund = PEER_FUND_PER_ACCOUNT * n
    params = kernel_params(fund)
    pols = [(name, layer_codes(ls)) for name, ls in PEER_POLICIES]
    t0 = time.perf_counter()
    runner = BookRunner(book_accounts(book), tt, params, reorder=True)  # as stress run has it
    t_setup = time.perf_counter() - t0
    # Paths first (timed on their own), then the kernel over all of them.
    t0 = time.perf_counter()
    path_list = []
    for i in range(paths):
        rng = path_rng(args.seed, i)
        path_list.append(plain_market(price_path(markets[i % len(markets)], steps, dt, rng)))
    t_gen = time.perf_counter() - t0
    out = np.empty(N_METRICS)
    traj = np.empty(0)
    # As stress run calls it: one kernel call per batch of paths, for every policy.
    table, n_layers = layer_table([lay for _, lay in pols])
    ptable = np.ascontiguousarray(np.stack([params] * len(pols)))
    batches = [np.array(path_list[b:b + BATCH_PATHS]) for b in range(0, paths, BATCH_PATHS)]
    outs = np.empty((paths, len(pols), N_METRICS))
    trajs = np.empty((paths, len(pols), 0))
    for _, lay in pols:  # warm-up (cache load) excluded
        runner.run(path_list[0], lay, params, out, traj)
    runner.run_batch(batches[0][:1], table, n_layers, ptable, outs[:1], trajs[:1])

    st = runner.work[4]

    def one_pass():
        clock = time.perf_counter
        forks = st[S_FORKS]
        t = clock()
        rode = 0
        for b, mk in zip(range(0, paths, BATCH_PATHS), batches):
            rode += runner.run_batch(mk, table, n_layers, ptable, outs[b:b + len(mk)],
                                     trajs[b:b + len(mk)])
        elapsed = clock() - t
        liq = outs[:, 0, INDEX["n_liquidations"]].sum()
        return elapsed, liq / (paths * n), rode, int(st[S_FORKS] - forks)

    def per_policy():
        per = np.zeros(len(pols))
        clock = time.perf_counter
        for mk in path_list:
            for p, (_, lay) in enumerate(pols):
                t = clock()
                runner.run(mk, lay, params, out, traj)
                per[p] += clock() - t
        return per

    best = None
    for _ in range(max(1, args.peer_repeat)):
        gc.collect()
        now = one_pass()
        if best is None or now[0] < best[0]:
            best = now
    total, share, rode, forks = best
    per = None
    for _ in range(max(1, args.peer_repeat)):
        gc.collect()
        now = per_policy()
        per = now if per is None else np.minimum(per, now)
    work = n * steps * paths * len(pols)
    rate = work / total
    print()
    print(f"--- peer workload: {n:,} accounts x {steps:,} steps x {paths:,} paths x "
          f"{len(pols)} policies = {work:.3g} account-steps")
    print(f"paths: {label}; liquidated per path {share:.1%} of the book on average")
    print(f"kernel (one core, best of {args.peer_repeat}, one call per {BATCH_PATHS} paths "
          f"for the {len(pols)} policies): {total:.3f} s = {fmt_s(total / paths / len(pols))} per path "
          f"and policy; {rate:,.3g} equivalent account-steps/s")
    print(f"  of the {paths * len(pols):,} path-policies, {rode:,} rode on another policy's "
          f"ledger journal (no loss reached their ADL layer) and {forks:,} forked from its "
          f"checkpoint at the round one did (see simulate_policies)")
    print("  per policy, a call each (best of each; no riding): "
          + ", ".join(f"{name} {fmt_s(t / paths)}" for (name, _), t in zip(pols, per))
          + f" per path (sum {fmt_s(per.sum() / paths)})")
    print(f"not counted: path generation {t_gen:.3f} s ({fmt_s(t_gen / paths)} per path), "
          f"book set-up {fmt_s(t_setup)} (once)")
    return dict(label=f"{steps:,} steps, {kind}", rate=rate, total=total, gen=t_gen)


def peers(args, tiers) -> None:
    print()
    print("=" * 100)
    print("b. peers: kernel-only equivalent account-steps/s on one core")
    results = []
    for steps in args.peer_steps:
        kind = "shocks" if steps <= 1440 else "merton"
        results.append(peer_workload(kind, steps, args, tiers))
    print()
    print(f"{'peer':<86}{'peer rate':>11}" + "".join(f"{r['label']:>24}" for r in results)
          + f"{'>= 100x':>10}")
    for name, rate in PEERS:
        ratios = [r["rate"] / rate for r in results]
        met = min(ratios) >= TARGET_PEERS
        print(f"{name:<86}{rate:>11.3g}" + "".join(f"{bk.fmt_ratio(x):>24}" for x in ratios)
              + f"{'MET' if met else 'NOT MET':>10}")
    print("(the target needs >= 100x on every workload: the verdict is on the lowest ratio)")


# ------------------------------------------------------------- c. fixed costs
def fixed_costs(args) -> None:
    cfg = load_config(DEFAULT_CONFIG)
    steps, dt = cfg.run.steps, cfg.run.dt_years
    m = cfg.market
    n = args.gen_paths
    for i in range(20):  # warm-up
        rng = path_rng(cfg.run.seed, i)
        path_liquidity(price_path(m, steps, dt, rng), cfg.liquidity,
                       cfg.exchange.mark_smoothing_minutes, cfg.run.step_minutes, rng)

    def per_path():
        t = np.zeros(3)
        clock = time.perf_counter
        for i in range(n):
            t0 = clock()
            rng = path_rng(cfg.run.seed, i)
            t1 = clock()
            prices = price_path(m, steps, dt, rng)
            t2 = clock()
            liq = path_liquidity(prices, cfg.liquidity, cfg.exchange.mark_smoothing_minutes,
                                 cfg.run.step_minutes, rng)
            kernel_market(prices, liq, False)
            t[:] += (t1 - t0, t2 - t1, clock() - t2)
        return t / n

    best = None
    for _ in range(args.repeat):
        t = per_path()
        best = t if best is None else np.minimum(best, t)
    print()
    print("=" * 100)
    print(f"c. fixed costs: one {steps:,}-step path of configs/default.yaml ({m.kind}, "
          f"{getattr(m, 'jump_intensity', 0):g} jumps/yr), mean over {n:,} paths, best of "
          f"{args.repeat}")
    print(f"  path_rng (stream set-up)        {fmt_s(best[0]):>10}")
    print(f"  price_path ({m.kind})             {fmt_s(best[1]):>10}")
    print(f"  path_liquidity + kernel_market  {fmt_s(best[2]):>10}  (liquidity: "
          f"{'none' if cfg.liquidity is None else 'model'})")
    print(f"  total per path                  {fmt_s(best.sum()):>10}")
    print("  (pool start-up and per-task overhead: see bench_run.py)")


# -------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--accounts", type=int, default=100_000, help="book size (default 100000)")
    ap.add_argument("--steps", type=int, default=1440, help="steps per path (default 1440)")
    ap.add_argument("--repeat", type=int, default=3,
                    help="timed runs of the sorted and scan kernels, set-up and path "
                         "generation; best kept (default 3)")
    ap.add_argument("--naive-repeat", type=int, default=3,
                    help="timed runs of the naive kernel and the SoA floor (default 3)")
    ap.add_argument("--numpy-repeat", type=int, default=1,
                    help="timed runs of the numpy engine, 0 skips it (default 1: it is slow)")
    ap.add_argument("--python-accounts", type=int, default=2000,
                    help="book size of the pure-Python run, 0 skips it (default 2000)")
    ap.add_argument("--amortise", type=int, default=250,
                    help="paths sharing one book set-up in the amortised row (default 250, "
                         "one shard: stress run prepares the book once per worker and reuses "
                         "it for the next shards)")
    ap.add_argument("--wick", type=float, default=WICK_DEPTH,
                    help=f"depth of the headline wick (i) (default {WICK_DEPTH})")
    ap.add_argument("--sweep", type=lambda s: [float(x) for x in s.split(",") if x],
                    default=list(SWEEP_DEPTHS),
                    help="wick depths of the sweep, comma-separated, empty to skip "
                         "(default " + ",".join(f"{d:g}" for d in SWEEP_DEPTHS) + ")")
    ap.add_argument("--no-floor", action="store_true", help="skip the SoA floor loop")
    ap.add_argument("--peer-accounts", type=int, default=2000, help="peer book (default 2000)")
    ap.add_argument("--peer-paths", type=int, default=200, help="peer paths (default 200)")
    ap.add_argument("--peer-steps", type=lambda s: [int(x) for x in s.split(",") if x],
                    default=[7200, 600],
                    help="peer path lengths, comma-separated; > 1440 uses Merton paths, "
                         "otherwise the shock shapes; empty skips (default 7200,600)")
    ap.add_argument("--peer-repeat", type=int, default=2,
                    help="passes of the kernel over the peer paths; best kept (default 2)")
    ap.add_argument("--gen-paths", type=int, default=1000,
                    help="paths of the path-generation timing (default 1000)")
    ap.add_argument("--only", choices=["a", "b", "c"], action="append",
                    help="run only these parts (repeatable)")
    ap.add_argument("--quick", action="store_true",
                    help="a quick check: 20,000 accounts, repeats 1, 50 peer paths")
    ap.add_argument("--seed", type=int, default=SEED, help=f"book and path seed (default {SEED})")
    args = ap.parse_args(argv)
    if args.quick:
        args.accounts = min(args.accounts, 20_000)
        args.repeat = args.naive_repeat = args.peer_repeat = 1
        args.peer_paths = min(args.peer_paths, 50)
        args.python_accounts = min(args.python_accounts, 500)
        args.gen_paths = min(args.gen_paths, 200)
    if min(args.accounts, args.steps, args.repeat, args.naive_repeat, args.amortise,
           args.peer_accounts, args.peer_paths, args.gen_paths) < 1:
        ap.error("sizes and repeats must be >= 1")
    parts = set(args.only or ["a", "b", "c"])

    t_start = time.perf_counter()
    print("bench_scale: kernel detection strategies, peers and fixed costs (issue 7)")
    print(machine_line())
    if NUMBA_DISABLED:
        print("WARNING: STRESS_DISABLE_NUMBA is set: the kernels run as plain Python.")
    tiers = builtin_tiers(bk.TIERS)
    ok = True

    # Warm-up: compile or load the numba cache (every detection mode), not counted.
    t0 = time.perf_counter()
    small = KernelCase(bk.make_book(1000, tiers, args.seed), tiers, 1000.0)
    mk = plain_market(bk.crash_path(60, args.seed))
    for d in (DETECT_SORTED, DETECT_SCAN, DETECT_NAIVE):
        small.run(d, mk)
    if not NUMBA_DISABLED and not args.no_floor:
        a = small.acct
        margin_test_floor(mk[0], a[:, 0].copy(), a[:, 1].copy(), a[:, 2].copy(),
                          small.tt[1].copy(), small.tt[2].copy(), small.tt[3].copy())
    print(f"warm-up (numba compile or cache load, excluded): {time.perf_counter() - t0:.2f} s")

    if "a" in parts:
        n, steps = args.accounts, args.steps
        print()
        print("=" * 100)
        print(f"a. kernel comparison: {n:,} accounts x {steps:,} steps = {n * steps:,} "
              f"account-steps per path; synthetic book (SyntheticPopulation defaults, tiers "
              f"{bk.TIERS}, seed {args.seed}); policy {LAYERS}, fund {bk.FUND_PER_ACCOUNT:g} "
              f"per account, fee {bk.FEE_RATE}, slippage {bk.SLIPPAGE}")
        book = walk_ordered(bk.make_book(n, tiers, args.seed), tiers)
        case = KernelCase(book, tiers, bk.FUND_PER_ACCOUNT * n)
        small_case = None
        if args.python_accounts > 0:
            nb = args.python_accounts
            small_book = walk_ordered(bk.make_book(nb, tiers, args.seed), tiers)
            small_case = KernelCase(small_book, tiers, bk.FUND_PER_ACCOUNT * nb)
        p1 = wick_path(steps, args.wick, args.seed)
        r1 = compare_engines(
            f"path (i), realistic wick: {args.wick:.0%} down over {WICK_MINUTES} min (sin² "
            f"profile) at minute {(steps * 5) // 12}, {WICK_REBOUND:.0%} of it won back over "
            f"{WICK_REBOUND_MINUTES} min; GBM noise sigma {bk.SIGMA}", p1, case, args,
            small_case)
        p2 = bk.crash_path(steps, args.seed)
        r2 = compare_engines(
            f"path (ii), extreme crash of bench_kernel.py: {bk.CRASH_DEPTH:.0%} down over "
            f"{bk.CRASH_MINUTES} min, {bk.REBOUND:.0%} rebound over {bk.REBOUND_MINUTES} min",
            p2, case, args, small_case)
        ok &= r1["ok"] and r2["ok"]
        if args.sweep:
            sweep(case, steps, args, r1["naive_ns"], r1["t_floor"] / (n * steps) * 1e9)
        print()
        for tag, r in (("(i) realistic wick", r1), ("(ii) extreme crash", r2)):
            ratio = r["t_naive"] / r["t_sorted"]
            print(f"target sorted >= {TARGET_NAIVE:,.0f}x naive numba, path {tag} "
                  f"({r['share']:.1%} liquidated): "
                  f"{'MET' if ratio >= TARGET_NAIVE else 'NOT MET'} ({ratio:,.0f}x with the "
                  f"book prepared, {r['t_naive'] / r['t_amort']:,.0f}x with the set-up "
                  f"amortised over {args.amortise} paths"
                  + (f"; {r['t_floor'] / r['t_sorted']:,.0f}x the SoA floor"
                     if math.isfinite(r["t_floor"]) else "") + ")")
    if "b" in parts and args.peer_steps:
        peers(args, tiers)
    if "c" in parts:
        fixed_costs(args)

    print()
    print(machine_line("machine at end"))
    print(f"total run time {time.perf_counter() - t_start:.1f} s")
    if not ok:
        print("ENGINES DISAGREE: exit status 1")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
