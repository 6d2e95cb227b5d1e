#!/usr/bin/env python
"""Whole-run benchmarks (issue 7): start-up, per-task overhead, scaling, the big run.

One run measures, on the same machine and under the same load:

a. **Start-up.** The interpreter alone (``python -c pass``: the baseline of
   this section), ``stress --version``, and ``stress run`` of a tiny config
   (200 accounts × 60 steps × 4 paths) with numba's cache populated (warm
   start; target under 2 s). Then the start-up of a loky pool and of a local
   Dask cluster (2 workers, first task returned).
b. **Per-task overhead.** ``--tasks`` empty tasks through each backend,
   minus its start-up, per task; against the compute time of one default
   shard (250 paths) to show what batching paths into tasks buys.
c. **Scaling, joblib 1 → 2 workers** on ``--scale-paths`` paths (default
   4,800: runs of 20–35 s) of the default config at 100,000 accounts (its
   shards of 250, 20 shards; at least 16 shards for fewer paths), each run
   timed whole (pool start-up included) and at its steady rate; target ≥ 1.8×
   on an idle machine. The load average from before the runs is printed beside
   the figure. Short runs understate the speed-up: the pool's start-up (≈ 3 s
   with the kernel's loading) is a large part of an 800-path run, and the
   steady rate still ends with the last shard, which one worker computes while
   the other waits (half a shard on average: 1/14 of the window at 16 shards,
   1/18 at 20).
d. **The big run**: ``stress run`` of ``configs/default.yaml`` at 100,000
   accounts × 1,440 steps × 10,000 paths × 3 policies (the population fixed
   per run), in a fresh process on all cores, wall time from process start to
   exit (start-up and writing included); target under 120 s. Broken down into
   start-up (interpreter, imports, config, book, pool), worker compute, and
   the driver's shard writes and final combine (timed inside the run), with
   the worker compute split into path generation, kernel and the kernel's ADL
   (ranking and closes) from a sample of ``--sample`` paths spread evenly over
   the run, timed in this process.

Usage::

    python benchmarks/bench_run.py [--quick] [--only abcd] [--big-paths N]

``--quick`` shrinks every size (a smoke test of the script, not figures).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT = ROOT / "configs" / "default.yaml"
BIG_ACCOUNTS = 100_000
TARGET_WARM = 2.0
TARGET_SCALE = 1.8
TARGET_BIG = 120.0

TINY = textwrap.dedent("""\
    run: {name: tiny, paths: 4, steps: 60, seed: 1, shard_size: 2}
    market: {kind: gbm, s0: 100.0, sigma: 0.8}
    population: {kind: synthetic, accounts: 200}
    exchange: {tiers: binance_btcusdt_2021}
    policies:
      - {name: fund+adl, layers: [insurance_fund, adl]}
    """)


def machine_line(label: str = "machine") -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"{label}: {platform.machine()}, {os.cpu_count()} CPUs, load average {load}; "
            f"Python {platform.python_version()}")


def wall(cmd: list[str], cwd: Path, env: dict | None = None) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def best(fn, repeat: int) -> float:
    return min(fn() for _ in range(repeat))


def stress_exe() -> str:
    exe = Path(sys.executable).parent / "stress"
    if not exe.exists():
        sys.exit("bench_run.py: run it with the project's venv (.venv/bin/python), where the "
                 "`stress` command is installed")
    return str(exe)


# ------------------------------------------------------------------- a
def startup(args, work: Path) -> None:
    print("a. start-up (best of 3 each)")
    cfg = work / "tiny.yaml"
    cfg.write_text(TINY)
    py = best(lambda: wall([sys.executable, "-c", "pass"], work), 3)
    ver = best(lambda: wall([stress_exe(), "--version"], work), 3)
    # The first run populates numba's cache (if it was not already).
    first = wall([stress_exe(), "run", str(cfg), "--out", str(work / "tiny"), "--no-progress"],
                 work)
    warm = best(lambda: wall([stress_exe(), "run", str(cfg), "--out", str(work / "tiny"),
                              "--no-progress"], work), 3)
    print(f"  python -c pass (baseline)          {py:7.3f} s   1.0x")
    print(f"  stress --version                   {ver:7.3f} s   {ver / py:5.1f}x")
    print(f"  stress run tiny (first, may compile){first:7.3f} s   {first / py:5.1f}x")
    print(f"  stress run tiny (warm cache)       {warm:7.3f} s   {warm / py:5.1f}x   "
          f"target < {TARGET_WARM:g} s: {'MET' if warm < TARGET_WARM else 'NOT MET'}")


# ------------------------------------------------------------------- b
def _noop(shared, i):
    return i


def backend_costs(args) -> None:
    from stress.runner.backends import open_backend
    from stress.runner.run import _shard_task
    from stress.runner.prepare import prepare
    from stress.config import load_config

    n = args.tasks
    print(f"\nb. backends: start-up (2 workers, first task back) and per-task overhead "
          f"({n} empty tasks)")
    shared = np.zeros(1000)
    rows = []
    t0 = time.perf_counter()
    sum(1 for _ in (_noop(shared, i) for i in range(n)))
    call = (time.perf_counter() - t0) / n
    rows.append(("plain call (baseline)", 0.0, call))
    for name, kw in (("joblib (loky)", dict(name="joblib")),
                     ("dask LocalCluster", dict(name="dask", cluster="local"))):
        try:
            t0 = time.perf_counter()
            with open_backend(workers=2, **kw) as pool:
                list(pool.map(_noop, shared, [(0,)]))
                start = time.perf_counter() - t0
                t1 = time.perf_counter()
                got = list(pool.map(_noop, shared, [(i,) for i in range(n)]))
                per = (time.perf_counter() - t1) / n
            assert sorted(got) == list(range(n))
            rows.append((name, start, per))
        except Exception as e:  # noqa: BLE001 - a benchmark reports and goes on
            print(f"  {name}: not measured ({type(e).__name__}: {e})")
    # One default shard's compute, in this process, for scale.
    cfg = load_config(DEFAULT).with_overrides({"run.paths": 250 if not args.quick else 20})
    prep = prepare(cfg)
    _shard_task(prep, 0, 0, 2)  # compile / load the kernel
    t0 = time.perf_counter()
    _shard_task(prep, 0, 0, cfg.run.paths)
    shard = time.perf_counter() - t0
    for name, start, per in rows:
        print(f"  {name:22s} start-up {start:6.2f} s   per task {per * 1e6:9.1f} µs "
              f"({per / call:8.0f}x a call; {per / shard:.1e} of one {cfg.run.paths}-path "
              f"default shard, {shard:.2f} s)")


# ------------------------------------------------------------------- c
def scaling(args) -> None:
    from stress.config import load_config
    from stress.runner.run import execute

    paths, accounts = args.scale_paths, args.accounts
    cfg = load_config(DEFAULT)
    # The config's shards, but at least 16 (a steady rate needs several per worker).
    shard = min(cfg.run.shard_size, max(1, paths // 16))
    cfg = cfg.with_overrides({"run.paths": paths, "run.shard_size": shard,
                              "population.accounts": accounts})
    print(f"\nc. joblib scaling: default config, {accounts:,} accounts × {cfg.run.steps} steps × "
          f"{paths} paths × {len(cfg.policies)} policies, shards of {shard}; whole runs "
          f"(start-up, pool and writing included) and the steady rate (paths after the "
          f"first shard / time from the first shard to the last)")
    load_before = os.getloadavg()
    execute(cfg, workers=1, out=Path(args.work) / "warm")[0].close()  # warm the cache
    whole, steady = {}, {}
    for workers in (1, 2, 1, 2):
        stamps = []
        t0 = time.perf_counter()
        ds, _ = execute(cfg, workers=workers, out=Path(args.work) / f"scale{workers}",
                        on_shard=lambda d: stamps.append((time.perf_counter(), d.stop - d.start)))
        ds.close()
        whole.setdefault(workers, []).append(time.perf_counter() - t0)
        after = sum(n for _, n in stamps[workers:])
        steady.setdefault(workers, []).append(after / (stamps[-1][0] - stamps[workers - 1][0]))
    t1, t2 = min(whole[1]), min(whole[2])
    r1, r2 = max(steady[1]), max(steady[2])
    for w, t, r in ((1, t1, r1), (2, t2, r2)):
        print(f"  {w} worker{'s' if w > 1 else ' '} whole run {t:7.2f} s ({paths / t:6.1f} paths/s); "
              f"steady {r:6.1f} paths/s")
    load = ", ".join(f"{x:.2f}" for x in load_before)
    print(f"  speed-up, whole runs {t1 / t2:.2f}x; steady rate {r2 / r1:.2f}x; target >= "
          f"{TARGET_SCALE}x on an idle machine: {'MET' if r2 / r1 >= TARGET_SCALE else 'NOT MET'}"
          f" (steady rate)   (load average before the runs: {load}; {os.cpu_count()} CPUs)")


# ------------------------------------------------------------------- d
DRIVER = textwrap.dedent("""\
    import json, sys, time
    t_start = float(sys.argv[1])
    out = sys.argv[2]
    overrides = json.loads(sys.argv[3])
    import stress.runner.run as R
    from stress.config import load_config
    from stress.runner.frame import Frame
    timers = {"prepare": 0.0, "shard_writes": 0.0, "combine": 0.0}
    combining = []
    def timed(name, fn):
        def wrapper(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                if not combining:
                    timers[name] += time.perf_counter() - t0
        return wrapper
    def combine(*a, **k):
        t0 = time.perf_counter()
        combining.append(1)
        try:
            return write_results(*a, **k)
        finally:
            combining.clear()
            timers["combine"] += time.perf_counter() - t0
    R.prepare = timed("prepare", R.prepare)
    Frame.write = timed("shard_writes", Frame.write)  # the combine's own write excluded
    write_results, R.write_results = R.write_results, combine
    compute, first = [], []
    def on_shard(done):
        compute.append(done.seconds)
        if not first:
            first.append(time.perf_counter())
    cfg = load_config(sys.argv[4]).with_overrides(overrides)
    t_import = time.perf_counter()
    ds, _ = R.execute(cfg, out=out, on_shard=on_shard)
    t_done = time.perf_counter()
    ds.close()
    timers.update(imports=t_import, first_shard=first[0], done=t_done,
                  compute=sum(compute), shards=len(compute), max_shard=max(compute))
    print(json.dumps(timers))
    """)


def split_worker_time(cfg, sample: int) -> dict:
    """Per path: path generation, kernel per policy, and ADL's share of the kernel, from a
    sample of paths run as :func:`stress.runner.shard.simulate_shard` runs them."""
    from stress.exchange.contracts import kernel_accounts, kernel_market
    from stress.exchange.kernels import BookRunner, tier_array, trajectory_length
    from stress.market.liquidity import path_liquidity
    from stress.market.paths import price_path
    from stress.runner.prepare import prepare
    from stress.runner.seeding import path_rng
    from stress.runner.shard import kernel_params
    from stress.runner.variables import N_METRICS, INDEX
    from stress.config import fund_record_steps

    prep = prepare(cfg)
    tt = tier_array(prep.tiers)
    params = [kernel_params(cfg, pol, prep.s0) for pol in cfg.policies]
    n_pol = len(params)
    # ADL's cost: the fund+adl policy again with a fund that never runs dry (no ADL).
    adl = [p for p, pol in enumerate(cfg.policies) if pol.layer("adl") is not None]
    rich = None
    if adl:
        rich = params[adl[0]].copy()
        from stress.runner.variables import P
        rich[P["fund_initial"]] = 1e30
    t_book = time.perf_counter()
    runner = BookRunner(kernel_accounts(prep.book, False), tt, params[0], reorder=True)
    t_book = time.perf_counter() - t_book
    out = np.empty(N_METRICS)
    traj = np.empty(trajectory_length(cfg.run.steps, fund_record_steps(cfg)))
    gen = np.zeros(sample)
    kern = np.zeros((n_pol, sample))
    no_adl = np.zeros(sample)
    liq = np.zeros(sample)
    # Paths spread evenly over the run (path costs vary a lot with the path's moves);
    # the first one twice: its first run warms every code path.
    picks = np.linspace(0, cfg.run.paths - 1, sample).astype(int)
    for j in range(sample + 1):
        path = int(picks[max(0, j - 1)])
        t0 = time.perf_counter()
        rng = path_rng(cfg.run.seed, path)
        prices = price_path(cfg.market, cfg.run.steps, cfg.run.dt_years, rng, prep.replay)
        lq = path_liquidity(prices, cfg.liquidity, cfg.exchange.mark_smoothing_minutes,
                            cfg.run.step_minutes, rng)
        mk = kernel_market(prices, lq, False)
        market = (mk.index, mk.mark, mk.depth_bid, mk.depth_ask, mk.gap_bid, mk.gap_ask)
        t1 = time.perf_counter()
        ks = []
        for p in range(n_pol):
            t = time.perf_counter()
            runner.run(market, prep.layers[p], params[p], out, traj)
            ks.append(time.perf_counter() - t)
            if p == 0:
                nliq = out[INDEX["n_liquidations"]]
        t = time.perf_counter()
        if rich is not None:
            runner.run(market, prep.layers[adl[0]], rich, out, traj)
        t_rich = time.perf_counter() - t
        if j:
            gen[j - 1], kern[:, j - 1], no_adl[j - 1], liq[j - 1] = t1 - t0, ks, t_rich, nliq
    return dict(book=t_book, gen=gen.mean(), kernel=kern.mean(axis=1),
                adl=(kern[adl[0]].mean() - no_adl.mean()) if adl else 0.0,
                liquidated=liq.mean() / len(runner.base),
                names=[pol.name for pol in cfg.policies])


def big_run(args) -> None:
    from stress.config import load_config

    overrides = {"run.paths": args.big_paths, "population.accounts": args.accounts}
    cfg = load_config(DEFAULT).with_overrides(overrides)
    print(f"\nd. the big run: stress run configs/default.yaml with {args.accounts:,} accounts × "
          f"{cfg.run.steps} steps × {args.big_paths:,} paths × {len(cfg.policies)} policies, "
          f"shards of {cfg.run.shard_size}, {os.cpu_count()} workers; "
          f"{machine_line('before')}")
    out = Path(args.work) / "big"
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", DRIVER, repr(t0), str(out),
                          json.dumps(overrides), str(DEFAULT)],
                         capture_output=True, text=True, cwd=ROOT)
    total = time.perf_counter() - t0
    if res.returncode:
        print(res.stderr)
        raise SystemExit("the big run failed")
    t = json.loads(res.stdout.strip().splitlines()[-1])
    size = sum(f.stat().st_size for f in out.rglob("*.nc"))
    print(f"  wall {total:.1f} s from process start to exit; target < {TARGET_BIG:g} s: "
          f"{'MET' if total < TARGET_BIG else 'NOT MET'}   ({args.big_paths / total:,.0f} paths/s, "
          f"{args.big_paths * len(cfg.policies) * cfg.run.steps * args.accounts / total:.2e} "
          f"account-steps/s; {size / 2 ** 20:.1f} MiB of netCDF)")
    startup = t["imports"] - t0
    until_first = t["first_shard"] - t["imports"]
    finish = total - (t["done"] - t0)
    print(f"  {machine_line('after')}")
    print("  breakdown of the wall time (driver's clock):")
    print(f"    start-up: interpreter, imports, config          {startup:7.2f} s")
    print(f"    prepare: book drawn, data read, config hash     {t['prepare']:7.2f} s")
    print(f"    pool start-up and the first shard               {until_first - t['prepare']:7.2f} s")
    print(f"    shard files written by the driver ({t['shards']} shards)  "
          f"{t['shard_writes']:7.2f} s")
    print(f"    combine into results.nc                         {t['combine']:7.2f} s")
    print(f"    exit (close, interpreter teardown)              {finish:7.2f} s")
    print(f"  worker compute: {t['compute']:.1f} s in all over {os.cpu_count()} workers "
          f"({t['compute'] / args.big_paths * 1e3:.2f} ms per path, slowest shard "
          f"{t['max_shard']:.2f} s), split by a sample of {args.sample} paths in this process:")
    s = split_worker_time(cfg, args.sample)
    per_path = s["gen"] + s["kernel"].sum()
    print(f"    path generation (stream, prices, liquidity, mark)  {s['gen'] * 1e3:7.2f} ms/path "
          f"{s['gen'] / per_path:6.1%}")
    for name, k in zip(s["names"], s["kernel"]):
        print(f"    kernel, policy {name:12s}                   {k * 1e3:7.2f} ms/path "
              f"{k / per_path:6.1%}")
    print(f"      of which ADL ranking and closes (fund+adl minus the same policy with a fund "
          f"that never runs dry) {s['adl'] * 1e3:.2f} ms/path")
    print(f"    (accounts liquidated per path: {s['liquidated']:.1%} under the first policy; "
          f"book sort {s['book']:.3f} s once per run)")
    scaled = per_path * args.big_paths / os.cpu_count()
    print(f"  sample × paths / cores = {scaled:.1f} s of compute wall; measured compute "
          f"{t['compute'] / os.cpu_count():.1f} s per worker")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="abcd", help="sections to run (default abcd)")
    ap.add_argument("--accounts", type=int, default=BIG_ACCOUNTS)
    ap.add_argument("--big-paths", type=int, default=10_000)
    ap.add_argument("--scale-paths", type=int, default=4800)
    ap.add_argument("--tasks", type=int, default=500)
    ap.add_argument("--sample", type=int, default=200)
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test")
    args = ap.parse_args(argv)
    if args.quick:
        args.accounts, args.big_paths, args.scale_paths = 2000, 40, 32
        args.tasks, args.sample = 20, 3
    print(machine_line())
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="stress-bench-") as work:
        args.work = work
        if "a" in args.only:
            startup(args, Path(work))
        if "b" in args.only:
            backend_costs(args)
        if "c" in args.only:
            scaling(args)
        if "d" in args.only:
            big_run(args)
    print(f"\n{machine_line('machine at end')}\ntotal {time.perf_counter() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
