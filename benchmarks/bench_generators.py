#!/usr/bin/env python
"""Throughput of the index price generators against plain numpy normal draws.

One run measures, on the same machine and under the same load, the time to
generate ``--paths`` paths of ``--steps`` steps with
``stress.market.paths.price_path`` for each market kind (``gbm``, ``merton``,
``kou``, ``hawkes``, at their config defaults, or with every jump intensity
multiplied by ``--jump-scale``), each path from its own stream
``stress.runner.seeding.path_rng(seed, i)`` as the runner does. That includes
building the stream, the drift, the jumps, the cumulative sum and the
exponential.

Two baselines of the same size, ``paths × steps`` standard normals:

* ``numpy bulk``: one ``Generator.standard_normal((paths, steps))`` call (the
  baseline of the target and of the ``vs bulk`` column);
* ``numpy per path``: ``path_rng(seed, i).standard_normal(steps)`` per path,
  which pays the same per-stream set-up as the generators.

Throughput is path-steps per second; every figure is the best of
``--repeat`` runs. numba is compiled (or loaded from its cache) on a short
path first; that warm-up is printed but not counted.

Usage::

    python benchmarks/bench_generators.py [--paths 2000] [--steps 1440] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

# Run from a checkout without installing: make the package importable.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from stress._jit import NUMBA_DISABLED  # noqa: E402
from stress.config import (GBMMarket, HawkesMarket, HawkesSide, KouMarket,  # noqa: E402
                           MertonMarket)
from stress.market.paths import price_path  # noqa: E402
from stress.runner.seeding import path_rng  # noqa: E402

SEED = 20260312
STEP_MINUTES = 1.0
DT = STEP_MINUTES / (365.0 * 24.0 * 60.0)
TARGET = 5.0  # kou and hawkes within 5x of the bulk numpy baseline


def markets(jump_scale: float) -> dict:
    """The four generators at their defaults, jump intensities scaled by ``jump_scale``."""
    h = HawkesMarket(kind="hawkes")

    def side(s):
        return HawkesSide(baseline=s.baseline * jump_scale, excitation=s.excitation,
                          decay=s.decay, mean_size=s.mean_size)

    return {
        "gbm": GBMMarket(kind="gbm"),
        "merton": MertonMarket(kind="merton",
                               jump_intensity=MertonMarket(kind="merton").jump_intensity
                               * jump_scale),
        "kou": KouMarket(kind="kou",
                         jump_intensity=KouMarket(kind="kou").jump_intensity * jump_scale),
        "hawkes": HawkesMarket(kind="hawkes", up=side(h.up), down=side(h.down)),
    }


def best_of(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--paths", type=int, default=2000, help="paths per run (default 2000)")
    ap.add_argument("--steps", type=int, default=1440, help="steps per path (default 1440)")
    ap.add_argument("--repeat", type=int, default=5, help="runs per figure, best kept (default 5)")
    ap.add_argument("--jump-scale", type=float, default=1.0,
                    help="multiply every jump intensity (Hawkes: the baselines) by this "
                         "(default 1: the config defaults)")
    ap.add_argument("--seed", type=int, default=SEED, help=f"root seed (default {SEED})")
    args = ap.parse_args(argv)
    paths, steps, seed = args.paths, args.steps, args.seed
    size = paths * steps

    print("bench_generators: price_path per kind vs numpy standard_normal of the same size")
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"machine: cpu_count={os.cpu_count()}  loadavg(1/5/15 min)="
          f"{load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}  python {platform.python_version()}  "
          f"numpy {np.__version__}")
    if NUMBA_DISABLED:
        print("WARNING: STRESS_DISABLE_NUMBA is set: the Hawkes recursion runs as plain Python.")
    print(f"workload: {paths:,} paths x {steps:,} steps of {STEP_MINUTES:g} min = {size:,} "
          f"path-steps; jump intensities x {args.jump_scale:g}")

    kinds = markets(args.jump_scale)
    t = time.perf_counter()
    for m in kinds.values():
        price_path(m, 16, DT, path_rng(seed, 0))
    print(f"warm-up (numba compile or cache load, excluded): {time.perf_counter() - t:.2f} s")

    def bulk():
        np.random.Generator(np.random.PCG64(seed)).standard_normal((paths, steps))

    def per_path():
        for i in range(paths):
            path_rng(seed, i).standard_normal(steps)

    def generate(market):
        def run():
            for i in range(paths):
                price_path(market, steps, DT, path_rng(seed, i))
        return run

    times = {"numpy bulk": best_of(bulk, args.repeat),
             "numpy per path": best_of(per_path, args.repeat)}
    for name, m in kinds.items():
        times[name] = best_of(generate(m), args.repeat)

    base, base_pp = times["numpy bulk"], times["numpy per path"]
    print()
    print(f"best of {args.repeat}")
    print(f"{'generator':<16}{'s / run':>10}{'path-steps/s':>15}{'vs bulk':>10}"
          f"{'vs per path':>13}")
    for name, sec in times.items():
        print(f"{name:<16}{sec:>10.4f}{size / sec / 1e6:>13.1f} M{sec / base:>9.2f}x"
              f"{sec / base_pp:>12.2f}x")
    print("(vs: time relative to the baseline; lower is faster)")
    worst = max(times["kou"], times["hawkes"]) / base
    met = worst <= TARGET
    print(f"target kou and hawkes within {TARGET:g}x of numpy bulk: "
          f"{'MET' if met else 'NOT MET'} (worst {worst:.2f}x)")
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"loadavg at end: {load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
