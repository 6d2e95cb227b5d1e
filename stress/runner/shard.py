"""A shard: a contiguous range of path indices → one Dataset.

Every policy sees the same price path and the same book for a given path
index (common random numbers), so differences between policies are the
policy's alone.
"""

from __future__ import annotations

import hashlib
import threading

import numpy as np

from stress import __version__
from stress.config import fund_record_steps, settlement_steps
from stress.errors import ConservationError, StressError
from stress.exchange.contracts import kernel_accounts, kernel_market
from stress.exchange.kernels import (BookRunner, layer_table, make_params, tier_array,
                                     trajectory_length)
from stress.market.liquidity import path_liquidity
from stress.market.paths import price_path
from stress.runner.frame import Frame
from stress.runner.prepare import Prepared
from stress.runner.seeding import path_rng
from stress.runner.variables import (ADL_BASIS_CODES, ADL_RANKINGS, BEARERS, FUNDING_MODES,
                                     INDEX, LIQUIDATION_STYLES, N_METRICS, P, PATH_METRICS)

# Relative tolerance of the loss identity.
IDENTITY_RTOL = 1e-9
# Most paths, and most bytes of market arrays, in one kernel call.
BATCH_PATHS = 64
BATCH_BYTES = 4 << 20


def kernel_params(cfg, policy, s0: float = 1.0) -> np.ndarray:
    """The kernel's ``params`` array for one policy of a config (``s0``: the start
    price, converting an inverse contract's depth floor to coin)."""
    ex, liq, step = cfg.exchange, cfg.liquidity, cfg.run.step_minutes
    inverse = ex.contract == "inverse"
    top = cfg.population.top_up
    initial, cap, fee_share = policy.fund_settings(cfg.fund)
    social = policy.layer("socialised")
    kw = dict(fund_initial=initial, fee_rate=ex.liquidation_fee_rate, fee_share=fee_share,
              fund_cap=np.inf if cap is None else cap, slippage=ex.slippage, step_minutes=step,
              adl_basis=ADL_BASIS_CODES[policy.adl.pnl_basis],
              adl_ranking=ADL_RANKINGS[policy.adl.ranking],
              settle_every=1 if social is None else settlement_steps(social, cfg),
              record_every=fund_record_steps(cfg), req_fee=ex.requirement_fee_rate,
              mm_entry=ex.mm_basis == "entry", liq_style=LIQUIDATION_STYLES[ex.liquidation],
              partial_fraction=ex.partial_fraction, partial_min_tier=ex.partial_min_tier,
              surplus_to_trader=ex.surplus_to == "trader", topup_prob=top.probability,
              topup_target=top.target_ratio or 0.0, inverse=inverse, alerts=ex.margin_alerts)
    if liq is not None:
        floor = liq.depth * liq.depth_floor
        kw.update(impact_k=liq.k, impact_gamma=liq.gamma, permanent=liq.permanent,
                  permanent_decay=(0.5 ** (step / liq.permanent_half_life_minutes)
                                   if liq.permanent_half_life_minutes else 1.0),
                  used_decay=0.5 ** (step / liq.recovery_half_life_minutes),
                  # Inverse: depth is converted to coin at the mark (the floor at s0).
                  depth_floor=floor / s0 if inverse else floor,
                  max_rounds=liq.max_cascade_rounds)
    f = ex.funding
    if f.mode != "none":
        every = f.interval_minutes / step
        # In 1/P the premium changes sign; so do the constant rate and the interest.
        sign = -1.0 if inverse else 1.0
        kw.update(funding_every=max(1, round(every)), funding_mode=FUNDING_MODES[f.mode],
                  funding_rate=sign * f.rate, funding_interest=sign * f.interest,
                  funding_clamp=f.clamp, funding_cap=f.cap)
    return make_params(**kw)


def simulate_shard(prep: Prepared, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """Paths ``start..stop-1``: the metrics, shape (policy, path, metric), and the fund
    trajectories, shape (policy, path, time) (``time`` empty when not recorded).

    Raises :class:`ConservationError` if a path's books do not balance.
    """
    cfg = prep.config
    n_pol = len(cfg.policies)
    # Path-major while running (each path's rows contiguous for the kernel).
    out = np.empty((stop - start, n_pol, N_METRICS))
    fund = np.full((stop - start, n_pol, trajectory_length(cfg.run.steps,
                                                           fund_record_steps(cfg))), np.nan)
    tt = tier_array(prep.tiers)
    inverse = cfg.exchange.contract == "inverse"
    params = [kernel_params(cfg, pol, prep.s0) for pol in cfg.policies]
    table = np.ascontiguousarray(np.stack(params))
    layers, n_layers = layer_table(prep.layers)
    # One sorted book for every path and policy (thresholds depend on the exchange's
    # rules, not on the policy), unless the book is redrawn per path.
    runner = None
    if prep.book is not None:
        runner = book_runner(kernel_accounts(prep.book, inverse), tt, params[0])
    # Paths go to the kernel in batches, one call each (a call unboxes 33 arrays); a
    # batch's markets are (paths, 6, steps + 1): 2.2 MB at 1,440 steps.
    batch = max(1, min(BATCH_PATHS, BATCH_BYTES // (48 * (cfg.run.steps + 1))))
    try:
        for b0 in range(start, stop, batch):
            b1 = min(stop, b0 + batch)
            markets = np.empty((b1 - b0, 6, cfg.run.steps + 1))
            draws = None
            for k, path in enumerate(range(b0, b1)):
                rng = path_rng(cfg.run.seed, path)
                prices = price_path(cfg.market, cfg.run.steps, cfg.run.dt_years, rng,
                                    prep.replay)
                if not np.all(np.isfinite(prices)):
                    raise StressError(f"{cfg.source or 'config'}: market: the price path {path} "
                                      f"is not finite (overflow); lower market.sigma, "
                                      f"market.mu or the jumps")
                # Drawn after the prices, so liquidity never changes a path's prices.
                liq = path_liquidity(prices, cfg.liquidity, cfg.exchange.mark_smoothing_minutes,
                                     cfg.run.step_minutes, rng)
                mk = kernel_market(prices, liq, inverse)
                markets[k] = (mk.index, mk.mark, mk.depth_bid, mk.depth_ask, mk.gap_bid,
                              mk.gap_ask)
                if prep.book is None:  # a book per path: a runner of its own
                    runner = BookRunner(kernel_accounts(prep.book_for_path(path), inverse), tt,
                                        params[0])
                # Drawn last, and only with top-ups, so they never change anything else.
                u = rng.random(len(runner.base)) if prep.topups else None
                if prep.book is None:  # and a kernel call of its own
                    j = path - start
                    runner.run_batch(markets[k:k + 1], layers, n_layers, table, out[j:j + 1],
                                     fund[j:j + 1], None if u is None else u[None])
                elif u is not None:
                    if draws is None:
                        draws = np.empty((b1 - b0, len(u)))
                    draws[k] = u
            if prep.book is not None:
                runner.run_batch(markets, layers, n_layers, table, out[b0 - start:b1 - start],
                                 fund[b0 - start:b1 - start], draws)
    except BaseException:
        release_runner()  # a path cut short may have left the runner's book changed
        raise
    out = np.ascontiguousarray(out.transpose(1, 0, 2))
    fund = np.ascontiguousarray(fund.transpose(1, 0, 2))
    check_identity(out, prep.policy_names, start, [pr[P["fund_initial"]] for pr in params])
    return out, fund


# The last book runner of each thread: a worker runs shard after shard of one book.
_CACHE = threading.local()


def book_runner(acct: np.ndarray, tt: np.ndarray, params: np.ndarray) -> BookRunner:
    """A :class:`BookRunner` (rows in walk order) for the book ``acct``: this thread's
    last one if it was built for the same accounts, tiers and exchange rules.

    A runner undoes every path it runs, so it is the same runner for its next
    shard; building it again would sort the book and allocate its scratch once
    per shard (0.06-0.2 s at 10^5 accounts). It is keyed on the bytes of what it
    was built from, not on the config, so a changed data file makes a new one.
    Threads never share one (a Dask worker may run shards in several threads).
    """
    key = hashlib.blake2b(digest_size=16)
    for a in (acct, tt, params):
        key.update(np.ascontiguousarray(a).view(np.uint8))
        key.update(repr(a.shape).encode())
    key = key.digest()
    cached = getattr(_CACHE, "runner", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    _CACHE.runner = None  # freed before the new one is allocated
    runner = BookRunner(acct, tt, params, reorder=True)
    _CACHE.runner = (key, runner)
    return runner


def release_runner() -> None:
    """Drop this thread's cached runner (its book and scratch)."""
    _CACHE.runner = None


def check_identity(out: np.ndarray, policies: list[str], start: int = 0,
                   fund_initial=None) -> None:
    """Check every path's books; raise :class:`ConservationError` naming the first path
    and policy that break them.

    The loss identity: ``shortfall = fund_paid + adl_cost + socialised_loss +
    platform_loss + residual``. With ``fund_initial`` (per policy) also the
    conservation of money (:func:`money_error`) to 1e-9 relative.
    """
    lhs = out[..., INDEX["shortfall"]]
    rhs = sum(out[..., INDEX[k]] for k in BEARERS.values())
    bad = np.abs(lhs - rhs) > IDENTITY_RTOL * np.maximum(np.abs(lhs), 1e-3)
    if bad.any():
        p, j = np.argwhere(bad)[0]
        raise ConservationError(
            f"loss identity broken on path {start + j}, policy {policies[p]}: shortfall "
            f"{lhs[p, j]!r} != sum of layers {rhs[p, j]!r}")
    if fund_initial is None:
        return
    err, scale = money_error(out, np.asarray(fund_initial, dtype=float)[:, None])
    bad = np.abs(err) > IDENTITY_RTOL * scale
    if bad.any():
        p, j = np.argwhere(bad)[0]
        raise ConservationError(
            f"money not conserved on path {start + j}, policy {policies[p]}: the balance "
            f"sheet is off by {err[p, j]!r} (relative {abs(err[p, j]) / scale[p, j]:.2e})")


def money_error(out: np.ndarray, fund_initial) -> tuple[np.ndarray, np.ndarray]:
    """The balance sheet of each path: ``(error, scale)``.

    Money enters or leaves the venue only through trades against the market
    (``market_pnl``) and traders' deposits (``topup_volume``); inside it moves
    between traders' cash, the insurance fund and the platform (fees, fund
    overflow, negative-balance protection), and a written-off negative balance
    nobody covered (``residual``) is a hole. So ::

        trader_balance_change + Δfund + (fee_revenue + fund_overflow − platform_loss)
            − residual − market_pnl − topup_volume = 0

    (funding is zero-sum between traders). ``scale`` is the initial fund plus
    the gross flows, the yardstick of the relative error.
    """
    m = {name: out[..., k] for name, k in INDEX.items()}
    err = (m["trader_balance_change"] + (m["fund_final"] - fund_initial) + m["fee_revenue"]
           + m["fund_overflow"] - m["platform_loss"] - m["residual"] - m["market_pnl"]
           - m["topup_volume"])
    scale = (np.abs(fund_initial) + np.abs(m["market_pnl"]) + np.abs(m["trader_balance_change"])
             + sum(np.abs(m[k]) for k in ("topup_volume", "fund_inflow", "fund_paid", "adl_cost",
                                          "socialised_loss", "platform_loss", "residual",
                                          "fee_revenue", "fund_overflow", "funding_volume")))
    return err, np.maximum(scale, 1e-3)


def shard_frame(out: np.ndarray, prep: Prepared, start: int,
                fund: np.ndarray | None = None) -> Frame:
    """Wrap a shard's metrics (and fund trajectories) as the contents of a Dataset
    with units, long names and the run's attributes (``.to_xarray()`` for the Dataset,
    ``.write(path)`` for its file).

    Besides the per-path metrics: ``loss_share(policy, path, bearer)``, the share
    of the shortfall each bearer took (NaN on paths without one), and
    ``fund(policy, path, time)``, the insurance fund every
    ``fund.record_every_minutes``.
    """
    cfg = prep.config
    paths = np.arange(start, start + out.shape[1], dtype=np.int64)
    inverse = cfg.exchange.contract == "inverse"
    data_vars = {}
    for k, var in enumerate(PATH_METRICS):
        values = out[:, :, k]
        if var.integer:
            values = values.astype(np.int64)
        units = var.units
        if units == "quote" and inverse and var.name != "shortfall_quote":
            units = "coin"
        data_vars[var.name] = (var.dims, values, {"units": units, "long_name": var.long_name})
    shortfall = out[:, :, INDEX["shortfall"]]
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.stack([np.where(shortfall > 0, out[:, :, INDEX[m]] / shortfall, np.nan)
                          for m in BEARERS.values()], axis=-1)
    data_vars["loss_share"] = (("policy", "path", "bearer"), share, {
        "units": "1", "long_name": "share of the path's shortfall borne by each bearer (NaN "
                                  "without a shortfall)"})
    money = "coin" if inverse else "quote"
    if fund is not None and fund.shape[-1] > 0:
        data_vars["fund"] = (("policy", "path", "time"), fund, {
            "units": money, "long_name": "insurance fund balance at the end of the step"})
    settings = [p.fund_settings(cfg.fund) for p in cfg.policies]
    coords = {
        "policy": ("policy", np.asarray(prep.policy_names, dtype=object),
                   {"long_name": "loss-handling policy"}),
        "layers": ("policy", np.asarray([layers_label(p) for p in cfg.policies],
                                        dtype=object),
                   {"long_name": "waterfall layers, in order (non-default options in "
                                 "brackets)"}),
        "fund_initial": ("policy", np.array([v[0] for v in settings], dtype=float),
                         {"units": money, "long_name": "insurance fund at the path start"}),
        "fund_cap": ("policy", np.array([np.inf if v[1] is None else v[1] for v in settings]),
                     {"units": money, "long_name": "insurance fund cap (inf: none)"}),
        "path": ("path", paths, {"long_name": "Monte Carlo path index"}),
        "bearer": ("bearer", np.asarray(list(BEARERS), dtype=object),
                   {"long_name": "who bore the loss"}),
    }
    if "fund" in data_vars:
        every = fund_record_steps(cfg) * cfg.run.step_minutes
        coords["time"] = ("time", every * np.arange(fund.shape[-1], dtype=float),
                          {"units": "min", "long_name": "time from the path start"})
    attrs = {
        "title": f"stress run {cfg.run.name}",
        "run_name": cfg.run.name,
        "config": prep.config_yaml,
        # The scenario laid over the config ("" for none); `config` is already the merge.
        "scenario": cfg.scenario or "",
        "config_hash": prep.config_hash,
        "seed": cfg.run.seed,
        "stress_version": __version__,
        "steps": cfg.run.steps,
        "step_minutes": cfg.run.step_minutes,
        "accounts": len(prep.book) if prep.book is not None else cfg.population.accounts,
        "contract": cfg.exchange.contract,
        "margin_currency": "coin" if inverse else "quote",
        "Conventions": "CF-1.8",
    }
    return Frame(data_vars, coords, attrs)


def layers_label(policy) -> str:
    """A policy's waterfall as text, e.g. ``insurance_fund>adl[risk_based]``."""
    parts = []
    for layer in policy.layers:
        opts = {k: v for k, v in layer.model_dump(exclude_defaults=True).items() if k != "kind"}
        parts.append(layer.kind + (f"[{','.join(str(v) for v in opts.values())}]"
                                   if opts else ""))
    return ">".join(parts)
