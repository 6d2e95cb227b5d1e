"""Forks: a policy whose loss reaches its ADL or socialised layer goes on from the
primary's checkpoint at that round instead of running from step 0 (see
``simulate_policies``). A fork must give exactly what a run of its own gives, and the
book must be left as it was, whatever the primary did after the checkpoint."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest

from conftest import jump_prices, random_book, small_tiers
from stress.exchange.kernels import (FK_NCKPT, N_METRICS, S_FORKS, S_UNDOFULL, BookRunner,
                                     account_array, layer_table, make_params, tier_array)
from stress.runner.variables import ADL_RANKINGS, LAYER_CODES

# Waterfalls that fork from a platform primary: at the first loss (ADL or socialised
# first), or once the fund runs dry.
FORKING = [["socialised"], ["adl", "platform"], ["insurance_fund", "adl"],
           ["insurance_fund", "socialised", "platform"], ["insurance_fund", "adl", "socialised"],
           ["socialised", "adl"]]


def crash_case(seed: int, n: int | None = None, **extra):
    """A book of 40–400 accounts without stops, top-ups or alerts (every settlement
    period is clean, so socialised policies can fork), a path with crashes, and the
    kernel parameters; ``extra`` overrides them."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(40, 250)) if n is None else n
    book = random_book(rng, n)
    prices = jump_prices(rng, 300, vol=0.004, rate=0.03, jump_mean=-0.06, jump_std=0.05)
    kw = dict(fund_initial=float(rng.choice([0.0, 20.0, 200.0])), fee_rate=0.002,
              fee_share=0.7, slippage=0.003, liq_style=int(rng.choice([0, 0, 1])),
              fund_cap=[math.inf, 150.0][int(rng.integers(2))],
              adl_ranking=int(rng.integers(len(ADL_RANKINGS))),
              settle_every=int(rng.choice([1, 1, 5])), impact_k=float(rng.choice([0.0, 0.5])),
              permanent=0.3, record_every=10) | extra
    acct = account_array(book.qty, book.entry, book.collateral)
    flat = np.zeros(len(prices))
    inf = np.full(len(prices), np.inf)
    return acct, (prices, prices, inf, inf, flat, flat), kw


def policies(seed: int):
    """A platform primary and three forking waterfalls, with different funds."""
    rng = np.random.default_rng(500 + seed)
    names = [["platform"]] + [FORKING[k] for k in rng.choice(len(FORKING), 3, replace=False)]
    funds = [None] + list(rng.choice([0.0, 20.0, 200.0, 1e9], 3))
    return names, funds


def compare(acct, market, kw, names, funds, records: int = 31) -> BookRunner:
    """The policies in one call and a call each: bit for bit the same metrics and fund
    trajectories (``records`` of them: with none, a fork takes the ledger its primary
    followed instead of replaying the journal), and the same book after. Returns the
    one-call runner."""
    tt = tier_array(small_tiers())
    params = [make_params(**(kw if f is None else kw | {"fund_initial": float(f)}))
              for f in funds]
    layer_codes = [np.array([LAYER_CODES[x] for x in lay]) for lay in names]
    one = BookRunner(acct.copy(), tt, params[0], reorder=True)
    each = BookRunner(acct.copy(), tt, params[0], reorder=True)
    table, n_layers = layer_table(layer_codes)
    k = len(names)
    out = np.full((k, N_METRICS), -1.0)
    traj = np.full((k, records), -1.0)
    one.run_policies(market, table, n_layers, np.stack(params), out, traj)
    for p in range(k):
        o, tr = np.empty(N_METRICS), np.full(records, -1.0)
        each.run(market, layer_codes[p], params[p], o, tr)
        np.testing.assert_array_equal(out[p], o, err_msg=f"policy {names[p]}")
        np.testing.assert_array_equal(traj[p], tr, err_msg=f"policy {names[p]}")
    nl, ns = one.n_long, one.n_short  # (the orders' tails are unused scratch)
    for a, b in zip((one.acct, one.lorder[:nl], one.sorder[:ns], one.lkey[:nl], one.skey[:ns]),
                    (each.acct, each.lorder[:nl], each.sorder[:ns], each.lkey[:nl],
                     each.skey[:ns])):
        np.testing.assert_array_equal(a, b)
    return one


@functools.lru_cache(maxsize=None)
def fork_case(seed: int) -> tuple[int, int]:
    """:func:`compare` on crash case ``seed`` (every other one without fund records):
    returns (forks, checkpoints)."""
    acct, market, kw = crash_case(seed)
    names, funds = policies(seed)
    one = compare(acct, market, kw, names, funds, records=31 if seed % 2 else 0)
    st, fk = one.work[4], one.work[5]
    return int(st[S_FORKS]), int(fk[FK_NCKPT])


@pytest.mark.parametrize("seed", range(40))
def test_forked_policies_equal_runs_of_their_own(seed):
    fork_case(seed)


def test_policies_fork_and_from_several_checkpoints():
    # Over the cases above: most forking policies forked (the others rode or were
    # run), and some paths took a checkpoint for each of two or more rounds.
    got = [fork_case(seed) for seed in range(40)]
    forks = sum(f for f, _ in got)
    assert forks >= 40, got
    assert sum(c >= 2 for _, c in got) >= 3, got


def test_a_fork_is_what_a_run_gives_on_the_same_path_twice():
    # The runner's scratch (undo log, checkpoints) is reset by each path: the same
    # path again, after another, gives the same numbers.
    acct, market, kw = crash_case(7)  # (three forks, from two checkpoints)
    names, funds = policies(7)
    tt = tier_array(small_tiers())
    params = np.stack([make_params(**(kw if f is None else kw | {"fund_initial": float(f)}))
                       for f in funds])
    table, n_layers = layer_table([np.array([LAYER_CODES[x] for x in lay]) for lay in names])
    runner = BookRunner(acct.copy(), tt, params[0], reorder=True)
    outs = []
    for m in (market, tuple(a[:150] for a in market), market):
        out, traj = np.empty((4, N_METRICS)), np.empty((4, 31))
        runner.run_policies(m, table, n_layers, params, out, traj)
        outs.append((out, traj))
    for a, b in zip(outs[0], outs[2]):
        np.testing.assert_array_equal(a, b)
    assert runner.work[4][S_FORKS] >= 6


def test_a_full_undo_log_gives_the_forks_up():
    # Funding every step re-touches every open account after a checkpoint: with two
    # checkpoints the undo log (room for n rows) runs out, in the primary or in a
    # fork; the forks not yet run are given up and those policies run from step 0:
    # the same numbers either way.
    in_primary = in_fork = 0
    for seed in range(20):
        acct, market, kw = crash_case(seed, n=int(30 + seed % 7), funding_every=1,
                                      funding_mode=1, funding_rate=0.0005)
        names = [["platform"], ["insurance_fund", "adl"], ["adl", "platform"]]
        one = compare(acct, market, kw, names, [None, 3.0, 0.0], records=seed % 2 * 31)
        st, fk = one.work[4], one.work[5]
        if st[S_UNDOFULL] == 1.0:
            in_primary += st[S_FORKS] == 0.0
            in_fork += st[S_FORKS] > 0.0
    assert in_primary >= 1 and in_fork >= 1, (in_primary, in_fork)


@pytest.mark.parametrize("style", [1, 2])
def test_partial_and_stepwise_liquidation_fork_too(style):
    # Accounts reduced in steps (touched again, loose, their thresholds moved) before
    # and after the checkpoints: the forks still equal the policies' own runs.
    forks = 0
    for seed in range(20):
        acct, market, kw = crash_case(seed, liq_style=style)
        names = [["platform"], ["insurance_fund", "adl"], ["insurance_fund", "socialised"]]
        one = compare(acct, market, kw, names, [None, 20.0, 5.0])
        forks += int(one.work[4][S_FORKS])
    assert forks >= 10, forks
