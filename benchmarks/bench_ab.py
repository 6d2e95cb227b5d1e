#!/usr/bin/env python
"""A/B of the liquidation kernel: this checkout's against a git revision's, in one process.

On a shared or virtual machine the speed drifts by up to 2x within minutes, so two
runs of a benchmark one after the other cannot resolve a change of a few per cent.
This script loads both kernels into one process (the revision's
``stress/exchange/kernels.py`` as a module of its own, importing everything else
from this checkout) and times them alternately, a few milliseconds apart, on the
same books and paths: both see the same machine. It prints each one's best time,
the median of the per-repetition ratios with their quartiles (each ratio compares
two calls a few milliseconds apart, so the drift cancels; the best times alone can
be one kernel's lucky moment), and whether the two give bit-identical metrics.

Workloads:

- ``peers``: the 600-step shock workload of ``bench_scale.py`` (2,000 accounts,
  the four shock shapes, 50 paths each, three policies in one call per path, as
  ``stress run`` calls the kernel), per shape and in all, with the ratio to the
  C++ engine's 2.1e8 account-steps/s.
- ``big``: 100,000 accounts, one policy (``insurance_fund, adl``), the sorted
  kernel on ``bench_scale.py``'s wicks (2 %, 8 %, 15 %), one call per path.

The revision's kernel file is kept under ``~/.cache/stress-ab/<commit>/`` (or
``$XDG_CACHE_HOME``), so that numba compiles it once; this checkout's compiles
as usual. The revision's kernel must fit this checkout's package (the same
metric and parameter lists): it is for comparing kernel changes.

Usage::

    python benchmarks/bench_ab.py [REV] [--workload peers|big|all] [--reps N]

``REV`` defaults to ``HEAD`` (the last commit against the working tree).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_kernel as bk  # noqa: E402
import bench_scale as bs  # noqa: E402
from stress.config import load_config  # noqa: E402
from stress.exchange import kernels as head  # noqa: E402
from stress.exchange.tiers import builtin_tiers  # noqa: E402
from stress.market.paths import price_path  # noqa: E402
from stress.runner.seeding import path_rng  # noqa: E402
from stress.runner.variables import N_METRICS  # noqa: E402

CPP_RATE = 2.1e8  # the C++ liquidation engine's account-steps/s (issue 7)
PEER_STEPS = 600
PEER_PATHS = 200
PEER_ACCOUNTS = 2000
BIG_ACCOUNTS = 100_000
BIG_STEPS = 1440
BIG_DEPTHS = (0.02, 0.08, 0.15)
KERNEL = "stress/exchange/kernels.py"
JIT = "stress/_jit.py"


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "stress-ab"


def written(path: Path, source: str) -> Path:
    """``path`` holding ``source``, written only if it differs (numba's cache is keyed on
    the file's time stamp)."""
    if not path.exists() or path.read_text() != source:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(source)
        tmp.replace(path)
    return path


def loaded(name: str, path: Path):
    """The module at ``path``, imported as ``name`` (registered in ``sys.modules``:
    numba's cache finds the functions it calls by module name)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_revision(rev: str):
    """The kernel module of git revision ``rev``, and its commit."""
    def git(*args):
        return subprocess.run(["git", "-C", str(ROOT), *args], check=True, capture_output=True,
                              text=True).stdout
    try:
        commit = git("rev-parse", "--verify", f"{rev}^{{commit}}").strip()
        source = git("show", f"{commit}:{KERNEL}")
        jit_source = git("show", f"{commit}:{JIT}")
    except subprocess.CalledProcessError as e:
        sys.exit(f"bench_ab: {rev!r}: {e.stderr.strip() or 'not a revision of this checkout'}")
    folder = cache_root() / commit
    path = written(folder / "kernels.py", source)
    # The revision's own compile settings (stress/_jit.py) while its kernels load.
    jit = loaded(f"stress_ab_jit_{commit[:12]}",
                 written(folder / "_jit.py", jit_source))
    own = sys.modules["stress._jit"]
    sys.modules["stress._jit"] = jit
    try:
        module = loaded(f"stress_ab_{commit[:12]}", path)
    finally:
        sys.modules["stress._jit"] = own
    return module, commit


def same(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.array_equal(a, b, equal_nan=True))


def alternate(calls: dict, reps: int) -> dict:
    """Seconds of each of ``reps`` calls of every ``calls[name]()``, the names called
    in turn, in reverse order on every other repetition: ``{name: array of times}``."""
    names = list(calls)
    times = {k: np.empty(reps) for k in names}
    clock = time.perf_counter
    for rep in range(reps):
        for k in (names if rep % 2 == 0 else names[::-1]):
            t = clock()
            calls[k]()
            times[k][rep] = clock() - t
    return times


def paired(times: dict, names: list) -> tuple[float, float, float]:
    """The median and quartiles of the per-repetition ratios ``second / first``: each
    ratio compares two calls made a few milliseconds apart, so the machine's drift
    cancels, and the median ignores the repetitions a burst of load hit."""
    r = times[names[1]] / times[names[0]]
    q1, med, q3 = np.percentile(r, [25, 50, 75])
    return med, q1, q3


def peers(kernels: dict, reps: int) -> bool:
    tiers = builtin_tiers(bk.TIERS)
    cfg = load_config(bs.DEFAULT_CONFIG)
    _, markets = bs.peer_markets("shocks")
    n = PEER_ACCOUNTS
    book = bk.make_book(n, tiers, bk.SEED)
    params = bs.kernel_params(bs.PEER_FUND_PER_ACCOUNT * n)
    layer_lists = [bs.layer_codes(ls) for _, ls in bs.PEER_POLICIES]
    n_pol = len(layer_lists)
    groups = {g: [] for g in range(len(markets))}
    for i in range(PEER_PATHS):
        g = i % len(markets)
        groups[g].append(bs.plain_market(price_path(markets[g], PEER_STEPS, cfg.run.dt_years,
                                                    path_rng(bk.SEED, i))))
    runs = {}
    for name, k in kernels.items():
        runner = k.BookRunner(k.book_accounts(book), k.tier_array(tiers), params, reorder=True)
        table, n_layers = k.layer_table(layer_lists)
        ptable = np.ascontiguousarray(np.stack([params] * n_pol))
        runs[name] = (runner, table, n_layers, ptable, np.empty((n_pol, N_METRICS)),
                      np.empty((n_pol, 0)))

    def one(name, paths):
        runner, table, n_layers, ptable, out, traj = runs[name]
        if hasattr(runner, "run_batch"):  # (as stress run calls it, where there is one)
            outs = np.empty((len(paths), n_pol, N_METRICS))
            runner.run_batch(np.array(paths), table, n_layers, ptable, outs,
                             np.empty((len(paths), n_pol, 0)))
            return outs[-1]
        for mk in paths:
            runner.run_policies(mk, table, n_layers, ptable, out, traj)
        return out

    identical = True
    for paths in groups.values():
        for mk in paths:
            res = [one(name, [mk]).copy() for name in kernels]
            identical &= same(res[0], res[1])
    print()
    print(f"--- peers: {n:,} accounts x {PEER_STEPS} steps, {len(markets)} shock shapes x "
          f"{PEER_PATHS // len(markets)} paths, {n_pol} policies in one call per path; best "
          f"of {reps}, alternated")
    names = list(kernels)
    print(f"{'shape':<20}" + "".join(f"{k + ' us/path':>18}" for k in names)
          + f"{'ratio (quartiles)':>26}")
    sums = {k: np.zeros(reps) for k in names}
    for g, paths in groups.items():
        t = alternate({k: (lambda k=k: one(k, paths)) for k in names}, reps)
        for k in names:
            sums[k] += t[k]
        print(f"{bs.SHOCK_SCENARIOS[g]:<20}"
              + "".join(f"{t[k].min() / len(paths) * 1e6:>18.1f}" for k in names)
              + "{:>10.3f} ({:.3f}-{:.3f})".format(*paired(t, names)))
    work = n * PEER_STEPS
    row = {k: sums[k].min() / (PEER_PATHS * n_pol) for k in names}
    print(f"{'per path & policy':<20}" + "".join(f"{row[k] * 1e6:>18.2f}" for k in names)
          + "{:>10.3f} ({:.3f}-{:.3f})".format(*paired(sums, names)))
    print(f"{'x the C++ engine':<20}" + "".join(f"{work / row[k] / CPP_RATE:>18.1f}"
                                               for k in names))
    print("metrics bit-identical on every path" if identical else
          "metrics DIFFER between the two kernels on some paths")
    return identical


def big(kernels: dict, reps: int, depths=BIG_DEPTHS) -> bool:
    tiers = builtin_tiers(bk.TIERS)
    n = BIG_ACCOUNTS
    book = bs.walk_ordered(bk.make_book(n, tiers, bk.SEED), tiers)
    params = bs.kernel_params(bk.FUND_PER_ACCOUNT * n)
    layers = bs.layer_codes(bs.LAYERS)
    runners = {name: k.BookRunner(k.book_accounts(book), k.tier_array(tiers), params)
               for name, k in kernels.items()}
    out = {name: np.empty(N_METRICS) for name in kernels}
    traj = np.empty(0)
    names = list(kernels)
    print()
    print(f"--- big: {n:,} accounts x {BIG_STEPS:,} steps, one policy "
          f"({', '.join(bs.LAYERS)}), sorted kernel; best of {reps}, alternated")
    print(f"{'wick':>6}{'liquidated':>12}" + "".join(f"{k + ' ms/path':>20}" for k in names)
          + f"{'ratio (quartiles)':>26}")
    identical = True
    for depth in depths:
        mk = bs.plain_market(bs.wick_path(BIG_STEPS, depth))

        def one(name, mk=mk):
            runners[name].run(mk, layers, params, out[name], traj)

        for name in names:
            one(name)
        identical &= same(out[names[0]], out[names[1]])
        t = alternate({k: (lambda k=k: one(k)) for k in names}, reps)
        liq = out[names[1]][head.N_LIQUIDATIONS]
        print(f"{-depth:>+6.0%}{liq:>12,.0f}" + "".join(f"{t[k].min() * 1e3:>20.3f}" for k in names)
              + "{:>10.3f} ({:.3f}-{:.3f})".format(*paired(t, names)))
    print("metrics bit-identical on every path" if identical else
          "metrics DIFFER between the two kernels on some paths")
    return identical


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("rev", nargs="?", default="HEAD",
                    help="the git revision to compare with (default HEAD)")
    ap.add_argument("--workload", choices=["peers", "big", "all"], default="peers")
    ap.add_argument("--reps", type=int, default=15,
                    help="alternated repetitions; the best of each is kept (default 15)")
    ap.add_argument("--depths", type=lambda s: [float(x) for x in s.split(",") if x],
                    default=list(BIG_DEPTHS),
                    help="the big workload's wick depths, comma-separated (default "
                         + ",".join(f"{d:g}" for d in BIG_DEPTHS) + ")")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    base, commit = load_revision(args.rev)
    kernels = {commit[:10]: base, "checkout": head}
    print(bs.machine_line())
    print(f"A/B: {args.rev} ({commit[:10]}) against this checkout (ratio = checkout / "
          f"{commit[:10]}: below 1 is faster)")
    ok = True
    if args.workload in ("peers", "all"):
        ok &= peers(kernels, args.reps)
    if args.workload in ("big", "all"):
        ok &= big(kernels, args.reps, args.depths)
    print(f"\n(total {time.perf_counter() - t0:.0f} s, numba compiles and cache loads included)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
