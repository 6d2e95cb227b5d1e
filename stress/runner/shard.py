"""A shard: a contiguous range of path indices → one Dataset.

Every policy sees the same price path and the same book for a given path
index (common random numbers), so differences between policies are the
policy's alone.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from stress import __version__
from stress.errors import ConservationError, StressError
from stress.exchange.contracts import kernel_accounts, kernel_market
from stress.exchange.kernels import (U, make_params, prepare_book, simulate_path, tier_array,
                                     workspace)
from stress.market.liquidity import path_liquidity
from stress.market.paths import price_path
from stress.runner.prepare import Prepared
from stress.runner.seeding import path_rng
from stress.runner.variables import (FUNDING_MODES, INDEX, LIQUIDATION_STYLES, N_METRICS,
                                     PATH_METRICS)

# Relative tolerance of the loss identity.
IDENTITY_RTOL = 1e-9


def kernel_params(cfg, adl_basis: int, s0: float = 1.0) -> np.ndarray:
    """The kernel's ``params`` array for one policy of a config (``s0``: the start
    price, converting an inverse contract's depth floor to coin)."""
    ex, liq, step = cfg.exchange, cfg.liquidity, cfg.run.step_minutes
    inverse = ex.contract == "inverse"
    top = cfg.population.top_up
    kw = dict(fund_initial=cfg.fund.initial, fee_rate=ex.liquidation_fee_rate,
              fee_share=cfg.fund.fee_share, slippage=ex.slippage, step_minutes=step,
              adl_basis=adl_basis, req_fee=ex.requirement_fee_rate,
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


def simulate_shard(prep: Prepared, start: int, stop: int) -> np.ndarray:
    """Metrics array of shape (policy, path, metric) for paths ``start..stop-1``."""
    cfg = prep.config
    n_pol = len(cfg.policies)
    out = np.empty((n_pol, stop - start, N_METRICS))
    tt = tier_array(prep.tiers)
    inverse = cfg.exchange.contract == "inverse"
    params = [kernel_params(cfg, b, prep.s0) for b in prep.adl_basis]
    fixed = None
    if prep.book is not None:
        base = kernel_accounts(prep.book, inverse)
        fixed = base, prepare_book(base, tt, params[0])
    ws = acct = lo = so = None
    for j, path in enumerate(range(start, stop)):
        rng = path_rng(cfg.run.seed, path)
        prices = price_path(cfg.market, cfg.run.steps, cfg.run.dt_years, rng, prep.replay)
        if not np.all(np.isfinite(prices)):
            raise StressError(f"{cfg.source or 'config'}: market: the price path {path} is not "
                              f"finite (overflow); lower market.sigma, market.mu or the jumps")
        # Drawn after the prices, so liquidity never changes a path's prices.
        liq = path_liquidity(prices, cfg.liquidity, cfg.exchange.mark_smoothing_minutes,
                             cfg.run.step_minutes, rng)
        if fixed is not None:
            base, (lorder, sorder, nl, ns) = fixed
        else:
            base = kernel_accounts(prep.book_for_path(path), inverse)
            lorder, sorder, nl, ns = prepare_book(base, tt, params[0])
        if prep.topups:
            # Drawn last, and only with top-ups, so they never change anything else.
            base = base.copy()
            base[:, U] = rng.random(len(base))
        mk = kernel_market(prices, liq, inverse)
        if ws is None or len(acct) != len(base):
            # Buffers reused for every path and policy: a path allocates nothing.
            ws = workspace(len(base))
            acct, lo, so = np.empty_like(base), np.empty_like(lorder), np.empty_like(sorder)
        for p in range(n_pol):
            np.copyto(acct, base)
            np.copyto(lo, lorder)
            np.copyto(so, sorder)
            simulate_path(mk.index, mk.mark, mk.depth_bid, mk.depth_ask, mk.gap_bid,
                          mk.gap_ask, acct, lo, so, nl, ns, tt, prep.layers[p], params[p],
                          out[p, j], *ws)
    check_identity(out, prep.policy_names, start)
    return out


def check_identity(out: np.ndarray, policies: list[str], start: int = 0) -> None:
    """``shortfall = fund_paid + adl_cost + socialised_loss + platform_loss + residual``.

    Raises :class:`ConservationError` naming the first path and policy that breaks it.
    """
    lhs = out[..., INDEX["shortfall"]]
    rhs = sum(out[..., INDEX[k]] for k in ("fund_paid", "adl_cost", "socialised_loss",
                                           "platform_loss", "residual"))
    err = np.abs(lhs - rhs)
    bad = err > IDENTITY_RTOL * np.maximum(np.abs(lhs), 1e-3)
    if bad.any():
        p, j = np.argwhere(bad)[0]
        raise ConservationError(
            f"loss identity broken on path {start + j}, policy {policies[p]}: shortfall "
            f"{lhs[p, j]!r} != sum of layers {rhs[p, j]!r}")


def to_dataset(out: np.ndarray, prep: Prepared, start: int) -> xr.Dataset:
    """Wrap a metrics array as a Dataset with units, long names and the run's attributes."""
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
    coords = {
        "policy": ("policy", np.asarray(prep.policy_names, dtype=object),
                   {"long_name": "loss-handling policy"}),
        "layers": ("policy", np.asarray([">".join(p.layers) for p in cfg.policies],
                                        dtype=object),
                   {"long_name": "waterfall layers, in order"}),
        "path": ("path", paths, {"long_name": "Monte Carlo path index"}),
    }
    attrs = {
        "title": f"stress run {cfg.run.name}",
        "run_name": cfg.run.name,
        "config": cfg.to_yaml(),
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
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)
