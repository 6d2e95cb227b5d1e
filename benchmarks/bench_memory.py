#!/usr/bin/env python
"""Peak memory of a run against its number of paths (issue 7): bounded by the shard size.

Runs ``stress run`` of ``configs/default.yaml`` twice in fresh processes, with
``--paths`` and with 10× as many (same shard size, same workers), and samples
the resident memory of the whole process tree (the driver and its loky
workers) every 20 ms. The baseline is the smaller run: the target is a peak
RSS of the larger run under 1.2× the smaller one's (the driver writes every
shard as it arrives and streams the shards into ``results.nc`` chunk by
chunk, so nothing grows with the paths but the files).

Usage::

    python benchmarks/bench_memory.py [--paths 500] [--factor 10] [--accounts 20000]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = ROOT / "configs" / "default.yaml"
TARGET = 1.2


def tree_rss(proc) -> tuple[int, int]:
    """(RSS of the process tree, RSS of the root process) in bytes."""
    import psutil
    total = root = 0
    try:
        root = proc.memory_info().rss
        total = root
        for child in proc.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:
                pass
    except psutil.Error:
        pass
    return total, root


def measure(args, paths: int, work: Path) -> dict:
    import psutil
    stress = Path(sys.executable).parent / "stress"
    cmd = [str(stress), "run", str(DEFAULT), "--out", str(work / f"p{paths}"), "--no-progress",
           "--workers", str(args.workers)]
    env = dict(os.environ)
    # The config's run/population sizes through a small overlay config.
    overlay = work / f"c{paths}.yaml"
    overlay.write_text(DEFAULT.read_text().replace(
        "paths: 5000", f"paths: {paths}").replace(
        "accounts: 20000", f"accounts: {args.accounts}").replace(
        "shard_size: 250", f"shard_size: {args.shard_size}"))
    cmd[2] = str(overlay)
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                         cwd=ROOT)
    proc = psutil.Process(p.pid)
    peak = peak_root = 0
    done = threading.Event()

    def sample():
        nonlocal peak, peak_root
        while not done.is_set():
            total, root = tree_rss(proc)
            peak, peak_root = max(peak, total), max(peak_root, root)
            time.sleep(0.02)

    th = threading.Thread(target=sample)
    th.start()
    _, err = p.communicate()
    done.set()
    th.join()
    if p.returncode:
        raise SystemExit(f"stress run failed:\n{err.decode()}")
    size = (work / f"p{paths}" / "results.nc").stat().st_size
    return dict(paths=paths, peak=peak, root=peak_root, seconds=time.perf_counter() - t0,
                size=size)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--paths", type=int, default=500)
    ap.add_argument("--factor", type=int, default=10)
    ap.add_argument("--accounts", type=int, default=20_000)
    ap.add_argument("--shard-size", type=int, default=250)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {load}")
    print(f"stress run configs/default.yaml with {args.accounts:,} accounts, shards of "
          f"{args.shard_size}, {args.workers} workers; peak RSS of the process tree "
          f"(driver + workers), sampled every 20 ms")
    with tempfile.TemporaryDirectory(prefix="stress-mem-") as work:
        small = measure(args, args.paths, Path(work))
        big = measure(args, args.paths * args.factor, Path(work))
    mib = 2 ** 20
    for r in (small, big):
        print(f"  {r['paths']:>7,} paths: peak {r['peak'] / mib:8.1f} MiB (driver "
              f"{r['root'] / mib:7.1f} MiB) in {r['seconds']:6.1f} s; results.nc "
              f"{r['size'] / mib:6.1f} MiB")
    ratio = big["peak"] / small["peak"]
    print(f"  {args.factor}x the paths: peak RSS {ratio:.3f}x the baseline (driver "
          f"{big['root'] / small['root']:.3f}x); target < {TARGET}x: "
          f"{'MET' if ratio < TARGET else 'NOT MET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
