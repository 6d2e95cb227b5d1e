"""The fast kernel at scale: the sorted-threshold walk finds exactly the accounts a scan
of every account finds, and a path undoes its changes to the book (so many paths and
policies share one sorted book) without a trace."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest

from conftest import jump_prices, random_book, small_tiers
from stress.exchange.kernels import (DETECT_NAIVE, DETECT_SCAN, DETECT_SORTED, F_EQH, F_LOSS,
                                     LEDGER_METRICS, N_METRICS, S_QBOOK, S_RESORTED,
                                     U, BookRunner, account_array, layer_table, ledger_class,
                                     make_params, tier_array)
from stress.runner.variables import ADL_RANKINGS, INDEX, LAYER_CODES

LAYER_LISTS = [["insurance_fund", "adl"], ["socialised", "platform"],
               ["insurance_fund", "socialised", "adl", "platform"], ["platform"],
               ["adl", "socialised", "insurance_fund"]]


def case(seed: int):
    """A random book of 1–150 accounts with stops, top-up budgets and alerts, 150 jump
    steps, and kernel parameters drawn over every option (like the conservation sweep
    of test_policies)."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 150))
    book = random_book(rng, n)
    prices = jump_prices(rng, 150, rate=0.08)
    side = np.sign(book.qty)
    stop = np.where(rng.random(n) < 0.2, book.entry * (1 - side * 0.05), np.nan)
    budget = np.where(rng.random(n) < 0.5, book.collateral, 0.0)
    kw = dict(fund_initial=50.0, fee_rate=0.002, fee_share=0.7, slippage=0.003,
              liq_style=int(rng.integers(3)), surplus_to_trader=int(rng.integers(2)),
              alerts=(0.5, 0.8), topup_prob=0.5, topup_target=0.0,
              funding_every=int(rng.choice([0, 30])), funding_mode=1, funding_rate=0.001,
              fund_cap=[math.inf, 60.0][int(rng.integers(2))],
              adl_ranking=int(rng.integers(len(ADL_RANKINGS))),
              settle_every=[1, 7, 30, 1000][seed % 4], mm_entry=int(rng.integers(2)),
              req_fee=0.0005, impact_k=float(rng.choice([0.0, 0.5])), permanent=0.3,
              record_every=10)
    layers = np.array([LAYER_CODES[x] for x in LAYER_LISTS[seed % len(LAYER_LISTS)]])
    acct = account_array(book.qty, book.entry, book.collateral, stop, budget, rng.random(n))
    flat = np.zeros(len(prices))
    inf = np.full(len(prices), np.inf)
    market = (prices, prices, inf, inf, flat, flat)
    return acct, market, layers, kw


def run(runner, market, layers, kw, detect=DETECT_SORTED):
    out = np.empty(N_METRICS)
    traj = np.empty(16)
    final = runner.run(market, layers, make_params(detect=detect, **kw), out, traj, keep=True)
    return out, traj, final


@pytest.mark.parametrize("seed", range(120))
def test_sorted_walk_equals_a_scan_of_every_account(seed):
    # The same candidates in the same order, so every metric, the fund trajectory and
    # every account at the end are bit-identical; this also checks that the
    # thresholds are a safe filter after every kind of move.
    acct, market, layers, kw = case(seed)
    tt = tier_array(small_tiers())
    runs = [run(BookRunner(acct.copy(), tt, make_params(**kw)), market, layers, kw, d)
            for d in (DETECT_SORTED, DETECT_SCAN, DETECT_NAIVE)]
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            np.testing.assert_array_equal(a, b)


def test_the_book_is_restored_after_every_path():
    # Many paths and policies on one runner: after each, the working book, the sorted
    # orders and the scratch are exactly as before, and a path gives the same numbers
    # whatever ran before it.
    for seed in range(40):
        acct, market, layers, kw = case(seed)
        tt = tier_array(small_tiers())
        runner = BookRunner(acct.copy(), tt, make_params(**kw))
        pristine = [a.copy() for a in (runner.acct, runner.lorder, runner.sorder, runner.lkey,
                                       runner.skey)]
        first = run(runner, market, layers, kw)
        _, other_market, other_layers, other_kw = case(seed + 1000)
        if len(other_market[0]) == len(market[0]):
            run(runner, other_market, layers, other_kw | {"fund_initial": 7.0})
        for cut in (40, 90, 151):
            run(runner, tuple(m[:cut] for m in market), other_layers, kw)
        for now, before in zip((runner.acct, runner.lorder, runner.sorder, runner.lkey,
                                runner.skey), pristine):
            np.testing.assert_array_equal(now, before)
        again = run(runner, market, layers, kw)
        for a, b in zip(first, again):
            np.testing.assert_array_equal(a, b)
        fwork, iwork, touched, is_loose, st, _ = runner.work
        assert not is_loose.any() and touched[0] == 0
        assert np.all(fwork[F_LOSS:F_EQH + 1] == 0.0)  # the per-account loss rows are zero again



@pytest.mark.parametrize("seed", range(30))
def test_every_policy_in_one_call_equals_a_call_per_policy(seed):
    # run_policies (one kernel call for a path's policies and the restores) gives what
    # run gives policy by policy: the metrics and trajectories bit for bit, the book
    # restored after the last; waterfalls of different lengths and different rules.
    acct, market, _, kw = case(seed)
    tt = tier_array(small_tiers())
    chosen = [LAYER_LISTS[(seed + k) % len(LAYER_LISTS)] for k in range(3)]
    layer_codes = [np.array([LAYER_CODES[x] for x in names]) for names in chosen]
    params = [make_params(**(kw | {"fund_initial": f})) for f in (50.0, 0.0, 5.0)]
    one = BookRunner(acct.copy(), tt, params[0])
    each = BookRunner(acct.copy(), tt, params[0])
    table, n_layers = layer_table(layer_codes)
    out = np.full((3, N_METRICS), -1.0)
    traj = np.full((3, 16), -1.0)
    for _ in range(2):  # twice: the second call starts from the restored book
        one.run_policies(market, table, n_layers, np.stack(params), out, traj)
        for p in range(3):
            o, tr = np.empty(N_METRICS), np.full(16, -1.0)
            each.run(market, layer_codes[p], params[p], o, tr)
            np.testing.assert_array_equal(out[p], o)
            np.testing.assert_array_equal(traj[p], tr)
    nl, ns = one.n_long, one.n_short  # (the orders' tails are unused scratch)
    for a, b in zip((one.acct, one.lorder[:nl], one.sorder[:ns], one.lkey[:nl], one.skey[:ns]),
                    (each.acct, each.lorder[:nl], each.sorder[:ns], each.lkey[:nl],
                     each.skey[:ns])):
        np.testing.assert_array_equal(a, b)


RIDING_LISTS = [["platform"], ["insurance_fund", "adl"], ["insurance_fund", "platform"],
                ["insurance_fund", "adl", "platform"], ["insurance_fund"], ["adl", "platform"],
                ["socialised"], ["insurance_fund", "socialised", "platform"]]


@functools.lru_cache(maxsize=None)
def riding_case(seed: int) -> int:
    """Four policies of ``RIDING_LISTS`` on a random book and path, in one call and a
    call each: checks that they agree bit for bit and returns how many rode. Cached:
    the count's test takes the cases' results instead of running them again (a case
    that fails raises every time: exceptions are not cached)."""
    acct, market, _, kw = case(seed)
    tt = tier_array(small_tiers())
    rng = np.random.default_rng(1000 + seed)
    names = [RIDING_LISTS[k] for k in rng.integers(len(RIDING_LISTS), size=4)]
    names[seed % 4] = ["platform"]
    layer_codes = [np.array([LAYER_CODES[x] for x in lay]) for lay in names]
    params = [make_params(**(kw | {"fund_initial": float(f), "fee_share": float(s),
                                   "fund_cap": float(c), "adl_ranking": int(a),
                                   "settle_every": int(e)}))
              for f, s, c, a, e in zip(rng.choice([0.0, 5.0, 50.0, 1e9], 4), rng.random(4),
                                       rng.choice([math.inf, 60.0], 4),
                                       rng.integers(len(ADL_RANKINGS), size=4),
                                       rng.choice([1, 7, 30], 4))]
    one = BookRunner(acct.copy(), tt, params[0])
    each = BookRunner(acct.copy(), tt, params[0])
    table, n_layers = layer_table(layer_codes)
    out = np.full((4, N_METRICS), -1.0)
    traj = np.full((4, 16), -1.0)
    rode = one.run_policies(market, table, n_layers, np.stack(params), out, traj)
    for p in range(4):
        o, tr = np.empty(N_METRICS), np.full(16, -1.0)
        each.run(market, layer_codes[p], params[p], o, tr)
        np.testing.assert_array_equal(out[p], o)
        np.testing.assert_array_equal(traj[p], tr)
    np.testing.assert_array_equal(one.acct, each.acct)
    # What a rider takes from the journal is its ledger; the rest is the path's.
    other = np.setdiff1d(np.arange(N_METRICS), LEDGER_METRICS)
    for p in range(4):
        if names[p] != ["platform"] and ledger_class(layer_codes[p]) == 0:
            np.testing.assert_array_equal(out[p, other], out[seed % 4, other])
    return rode


@pytest.mark.parametrize("seed", range(40))
def test_policies_riding_on_a_ledger_journal_equal_runs_of_their_own(seed):
    # A policy whose parameters differ from another's only in the fund, the fee share,
    # the cap, the ADL rules or the settlement period takes its results from the
    # other's ledger journal unless a loss would reach its ADL or socialised layer:
    # bit-identical to a run of its own either way. Funds from none to ample, so that
    # some riders finish and others fall back to a run.
    riding_case(seed)


def test_riders_ride_and_fall_back():
    # Over the cases above, policies did ride, and not every one that could.
    rode = [riding_case(seed) for seed in range(40)]
    assert 20 <= sum(rode) < 3 * len(rode), rode


@pytest.mark.parametrize("style, rides", [(0, 1), (2, 0)])
def test_a_full_ledger_journal_makes_the_riders_run(style, rides):
    # Case 14 has 23 accounts. Stepwise liquidation pays a fee at every step: more than
    # the journal's 46 entries, so the fund + platform policy cannot ride on the
    # platform's journal and is run; full liquidation fits, and it rides.
    acct, market, _, kw = case(14)
    tt = tier_array(small_tiers())
    kw = kw | {"liq_style": style}
    layer_codes = [np.array([LAYER_CODES["platform"]]),
                   np.array([LAYER_CODES["insurance_fund"], LAYER_CODES["platform"]])]
    params = np.stack([make_params(**kw)] * 2)
    runner = BookRunner(acct.copy(), tt, params[0])
    table, n_layers = layer_table(layer_codes)
    out, traj = np.empty((2, N_METRICS)), np.empty((2, 16))
    assert runner.run_policies(market, table, n_layers, params, out, traj) == rides
    o, tr = np.empty(N_METRICS), np.empty(16)
    runner.run(market, layer_codes[1], params[1], o, tr)
    np.testing.assert_array_equal(out[1], o)
    np.testing.assert_array_equal(traj[1], tr)
    assert out[1, INDEX["fund_inflow"]] > 0.0 and out[1, INDEX["shortfall"]] > 0.0


@pytest.mark.parametrize("seed", [1, 6, 11, 16])
def test_the_book_sides_kept_by_the_runner_equal_a_sum_per_path(seed):
    # The first socialised settlement starts from the book's open quantity per side:
    # kept by BookRunner (S_QBOOK), or summed over the positions by size on the path.
    acct, market, _, kw = case(seed)
    layers = np.array([LAYER_CODES["socialised"], LAYER_CODES["platform"]])
    tt = tier_array(small_tiers())
    kept = BookRunner(acct.copy(), tt, make_params(**kw))
    summed = BookRunner(acct.copy(), tt, make_params(**kw))
    summed.work[4][S_QBOOK] = 0.0
    a, b = run(kept, market, layers, kw), run(summed, market, layers, kw)
    assert a[0][INDEX["socialised_loss"]] > 0.0
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_layer_table_pads_the_waterfalls():
    table, n = layer_table([np.array([3, 1]), np.array([2]), np.array([1, 2, 3])])
    np.testing.assert_array_equal(table, [[3, 1, 0], [2, 0, 0], [1, 2, 3]])
    np.testing.assert_array_equal(n, [2, 1, 3])
    assert table.dtype == np.int64 and n.dtype == np.int64

def test_a_resorting_path_is_undone():
    # Funding moves every threshold: the book is re-sorted on the path, and restored.
    for seed in range(60):
        acct, market, layers, kw = case(seed)
        if len(acct) < 80:
            continue
        kw = kw | {"funding_every": 5}
        tt = tier_array(small_tiers())
        runner = BookRunner(acct.copy(), tt, make_params(**kw))
        lorder = runner.lorder.copy()
        out1 = run(runner, market, layers, kw)[0]
        assert runner.work[4][S_RESORTED] == 0.0  # the resort flag was reset by the restore
        np.testing.assert_array_equal(runner.lorder, lorder)
        out2 = run(BookRunner(acct.copy(), tt, make_params(**kw)), market, layers, kw)[0]
        np.testing.assert_array_equal(out1, out2)
        assert out1[INDEX["funding_volume"]] > 0
        return
    pytest.fail("no case with a large enough book")


@pytest.mark.parametrize("seed", range(40))
def test_a_reordered_book_is_the_book_in_walk_order(seed):
    # reorder=True stores the rows in walk order (longs by falling threshold, then
    # shorts by rising threshold, then closed accounts): exactly a plain runner on the
    # book permuted so, with set_column and the final accounts in the caller's order.
    acct, market, layers, kw = case(seed)
    tt = tier_array(small_tiers())
    ordered = BookRunner(acct.copy(), tt, make_params(**kw), reorder=True)
    nl, ns = ordered.n_long, ordered.n_short
    thr = ordered.base[:, 3]
    assert np.all(ordered.base[:nl, 0] > 0) and np.all(ordered.base[nl:nl + ns, 0] < 0)
    assert np.all(np.diff(thr[:nl]) <= 0) and np.all(np.diff(thr[nl:nl + ns]) >= 0)
    assert sorted(ordered.perm) == list(range(len(acct)))
    u = np.random.default_rng(seed).random(len(acct))
    ordered.set_column(7, u)
    permuted = acct[ordered.perm]
    permuted[:, 7] = u[ordered.perm]
    plain = BookRunner(permuted, tt, make_params(**kw))
    got, want = run(ordered, market, layers, kw), run(plain, market, layers, kw)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    back = np.empty_like(want[2])
    back[ordered.perm] = want[2]
    np.testing.assert_array_equal(got[2], back)
    np.testing.assert_array_equal(got[2][:, 7], u)


def test_the_sort_of_losses_equals_numpy_sort():
    # The Gini's sort of the losses: spread over buckets up to 4,096 values, a radix
    # sort of the bit patterns above (and to finish crowded keys below); both the
    # same sorted array as numpy's.
    from stress.exchange.kernels import _sort_nonnegative
    rng = np.random.default_rng(7)
    for m in (0, 1, 2, 7, 8, 1999, 4096, 4097, 45_000):
        crowded = rng.random(m)
        crowded[::97] = 1e300  # one bucket holds nearly every key: spread again
        for x in (rng.pareto(1.3, m) * 1e4, np.round(rng.random(m), 2), np.full(m, 3.5),
                  rng.random(m) * 1e-300, np.where(rng.random(m) < 0.5, 0.0, rng.random(m)),
                  crowded):
            y = x.copy()
            _sort_nonnegative(y)
            np.testing.assert_array_equal(y, np.sort(x))


def test_the_stable_argsort_equals_numpy_stable_argsort():
    # The ADL queue's and the book's sorts: spread over buckets up to 4,096 values,
    # a radix sort above (and below for crowded keys), numba's merge sort under 8;
    # all numpy's stable order (ties in index order, -0.0 tied with 0.0, -inf
    # first, +inf then NaN last).
    from stress.exchange.kernels import argsort_stable
    rng = np.random.default_rng(11)
    for m in (0, 1, 7, 8, 512, 513, 1000, 4096, 4097, 40_000):
        mixed = rng.standard_normal(m) * 1e3
        mixed[::7] = -np.inf
        mixed[::11] = 0.0
        mixed[::13] = -0.0
        mixed[::17] = np.inf
        mixed[::19] = np.nan
        mixed[::23] = -np.nan
        outlier = rng.standard_normal(m)
        outlier[::101] = -1e300
        for x in (rng.random(m) * 1e5 - 5e4, rng.integers(-30, 30, m).astype(float), mixed,
                  np.full(m, -2.5), -rng.pareto(1.2, m), rng.random(m) * 1e-305, outlier):
            np.testing.assert_array_equal(argsort_stable(x), np.argsort(x, kind="stable"))


@pytest.mark.parametrize("m", [1, 2, 9, 17, 300, 2048, 3000])
def test_spread_sorts_integers_stably(m):
    # _spread directly (compiled, or as Python with STRESS_DISABLE_NUMBA=1): the
    # sorted keys and the stable order of the payload, wherever the result ends:
    # spread keys, few distinct keys, clusters (a second spread), and keys still
    # crowded after two spreads (nested outliers: the radix sort takes over).
    from stress.exchange.kernels import _spread
    rng = np.random.default_rng(m)
    count = np.empty(2049, np.int64)
    clusters = (rng.integers(0, 6, m, dtype=np.uint64) * np.uint64(2**50)
                + rng.integers(0, 2**30, m, dtype=np.uint64))
    nested = rng.integers(0, 2**20, m, dtype=np.uint64)
    nested[:2] = np.array([2**40, 2**63], dtype=np.uint64)[:m]
    for keys in (rng.integers(0, 2**63, m, dtype=np.uint64),
                 rng.integers(0, 5, m, dtype=np.uint64) + np.uint64(2**62),
                 np.sort(rng.integers(0, 2**40, m, dtype=np.uint64))[::-1].copy(),
                 clusters, nested):
        order = np.argsort(keys, kind="stable")
        for carry in (True, False):
            ka = keys.copy()
            ia = np.arange(m, dtype=np.int64) if carry else np.empty(0, np.int64)
            kb = np.empty(m, np.uint64)
            ib = np.empty(m, np.int64) if carry else np.empty(0, np.int64)
            in_b = _spread(ka, ia, kb, ib, count, np.empty(2048, np.int64))
            np.testing.assert_array_equal(kb if in_b else ka, keys[order])
            if carry:
                np.testing.assert_array_equal(ib if in_b else ia, order)


def test_size_order_lists_open_positions_by_size_per_side():
    # The order the Gini streams the untouched accounts' lazy haircuts in (Q·H is
    # monotone in |Q| on each side): longs by Q, then shorts by |Q|, ties in row order.
    from stress.exchange.kernels import size_order
    acct = account_array(qty=[2.0, -1.0, 0.0, 0.5, -3.0, 2.0, -1.0],
                         entry=[100.0] * 7, collateral=[10.0] * 7)
    qval, qpos, n_long = size_order(acct)
    np.testing.assert_array_equal(qval, [0.5, 2.0, 2.0, -1.0, -1.0, -3.0])
    np.testing.assert_array_equal(qpos, [1, 3, -1, 0, 5, 2, 4])
    assert n_long == 3


def test_the_rank_sum_of_three_sorted_streams_is_that_of_their_sorted_union():
    # The Gini's Σ r·v over the listed losses and the two streams, merged in runs: the
    # same terms in the same order as summing the sorted union, so bit for bit; ties
    # between the arrays, empty arrays, one array only.
    from stress.exchange.kernels import _rank_sum
    rng = np.random.default_rng(7)

    def direct(*arrays):
        v = np.sort(np.concatenate(arrays))
        acc = 0.0
        for r, x in enumerate(v, start=1):
            acc += r * x
        return acc

    empty = np.empty(0)
    for _ in range(200):
        parts = []
        for _ in range(3):
            n = int(rng.integers(0, 40))
            x = rng.choice([0.0, 0.5, 1.0, 2.0, 7.25], n) if rng.random() < 0.5 else \
                rng.lognormal(0.0, 2.0, n)
            parts.append(np.sort(x))
        assert _rank_sum(*parts, 0) == direct(*parts)
        # Zeros left out of the first array, counted in r0: the same sum, bit for bit.
        zeros = int(np.sum(parts[0] == 0.0))
        assert _rank_sum(parts[0][zeros:], parts[1], parts[2], zeros) == direct(*parts)
    a = np.array([1.0, 2.0, 2.0, 5.0])
    assert _rank_sum(a, empty, empty, 0) == _rank_sum(empty, a, empty, 0) \
        == _rank_sum(empty, empty, a, 0)
    assert _rank_sum(a, empty, empty, 0) == 1.0 + 2 * 2.0 + 3 * 2.0 + 4 * 5.0
    assert _rank_sum(a, empty, empty, 3) == 4.0 + 5 * 2.0 + 6 * 2.0 + 7 * 5.0
    assert _rank_sum(empty, empty, empty, 0) == 0.0


@pytest.mark.parametrize("seed", range(12))
def test_a_batch_of_paths_in_one_call_equals_a_call_per_path(seed):
    # run_batch (one kernel call for many paths, each with its own top-up draws) gives
    # what run_policies gives path by path, bit for bit, and leaves the book as a call
    # per path does (the draws column as the last path had it).
    acct, _, _, kw = case(seed)
    n = len(acct)
    tt = tier_array(small_tiers())
    rng = np.random.default_rng(500 + seed)
    markets = []
    for k in range(5):
        prices = jump_prices(rng, 150, rate=0.08)
        flat = np.zeros(len(prices))
        depth = np.full(len(prices), 2000.0 if k % 2 else np.inf)
        markets.append((prices, prices * (1.0 + 0.001 * k), depth, depth, flat, flat + 0.001))
    draws = rng.random((5, n))
    chosen = [LAYER_LISTS[(seed + k) % len(LAYER_LISTS)] for k in range(3)]
    table, n_layers = layer_table([np.array([LAYER_CODES[x] for x in names])
                                   for names in chosen])
    params = np.stack([make_params(**(kw | {"fund_initial": f})) for f in (50.0, 0.0, 5.0)])
    one = BookRunner(acct.copy(), tt, params[0], reorder=bool(seed % 2))
    each = BookRunner(acct.copy(), tt, params[0], reorder=bool(seed % 2))
    out = np.full((5, 3, N_METRICS), -1.0)
    traj = np.full((5, 3, 16), -1.0)
    rode = one.run_batch(np.array(markets), table, n_layers, params, out, traj, draws)
    rode_each = 0
    for k in range(5):
        each.set_column(U, draws[k])
        o, tr = np.empty((3, N_METRICS)), np.full((3, 16), -1.0)
        rode_each += each.run_policies(markets[k], table, n_layers, params, o, tr)
        np.testing.assert_array_equal(out[k], o)
        np.testing.assert_array_equal(traj[k], tr)
    assert rode == rode_each
    for a, b in zip((one.acct, one.base), (each.acct, each.base)):
        np.testing.assert_array_equal(a, b)
    # Without draws the column stays as it is.
    one.run_batch(np.array(markets[:2]), table, n_layers, params, out[:2], traj[:2])
    np.testing.assert_array_equal(one.base, each.base)
