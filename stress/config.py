"""Validated configuration models.

A config is YAML with six sections, ``run``, ``market``, ``population``,
``exchange``, ``fund`` and ``policies``. Every model forbids unknown keys so
that a typo is an error; field descriptions (with units) are the source of
the README's config reference. Loading never creates files or directories.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args

import yaml
from pydantic import (BaseModel, ConfigDict, Field, PrivateAttr, ValidationError,
                      field_validator, model_serializer, model_validator)

from stress.errors import ConfigError

LAYERS = ("insurance_fund", "adl", "socialised", "platform")
MINUTES_PER_YEAR = 365.0 * 24.0 * 60.0


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


def _finite(v: float) -> float:
    if v is not None and not math.isfinite(v):
        raise ValueError("must be a finite number")
    return v


# --------------------------------------------------------------------- run
class RunConfig(Strict):
    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100,
        description="Run name; results go to `results/<name>/`. Letters, digits, `_`, `-`, `.`.")
    paths: int = Field(ge=1, description="Number of Monte Carlo price paths.")
    steps: int = Field(ge=1, description="Steps per path (1,440 one-minute steps = one day).")
    seed: int = Field(ge=0, description="Root seed; path i uses the stream derived from (seed, i).")
    shard_size: int = Field(
        default=250, ge=1,
        description="Paths per shard (one task, one file in `results/<name>/shards/`). "
                    "Results do not depend on it.")
    step_minutes: float = Field(
        default=1.0, gt=0, description="Length of one step, in minutes.")

    @property
    def dt_years(self) -> float:
        return self.step_minutes / MINUTES_PER_YEAR


# ------------------------------------------------------------------ market
class GBMMarket(Strict):
    kind: Literal["gbm"]
    s0: float = Field(default=60_000.0, gt=0, description="Start price (quote per base).")
    mu: float = Field(default=0.0, description="Drift, per year (continuously compounded): "
                                               "E[S_t] = s0·exp(mu·t).")
    sigma: float = Field(default=0.6, ge=0, description="Diffusion volatility, per √year.")

    _fin = field_validator("s0", "mu", "sigma")(_finite)


class MertonMarket(GBMMarket):
    kind: Literal["merton"]  # type: ignore[assignment]
    jump_intensity: float = Field(
        default=20.0, ge=0, description="Poisson jump rate λ, jumps per year.")
    jump_mean: float = Field(
        default=-0.08, ge=-5, le=5,
        description="Mean of the log jump size (−0.08 ≈ an 8% crash).")
    jump_std: float = Field(default=0.04, ge=0, le=5, description="Std of the log jump size.")

    _fin2 = field_validator("jump_intensity", "jump_mean", "jump_std")(_finite)


class KouMarket(GBMMarket):
    kind: Literal["kou"]  # type: ignore[assignment]
    jump_intensity: float = Field(
        default=20.0, ge=0, description="Poisson jump rate λ, jumps per year.")
    p_up: float = Field(default=0.3, ge=0, le=1,
                        description="Probability that a jump is upward.")
    eta_up: float = Field(
        default=12.0,
        description="Rate η₁ of the exponential law of an up jump's log size (mean 1/η₁; "
                    "12 ≈ 8.3%, near the mean BTC up jump of Liu, Packham & Sepp 2024). "
                    "Must be > 1, otherwise the expected price is infinite.")
    eta_down: float = Field(
        default=12.5, gt=0,
        description="Rate η₂ of the exponential law of a down jump's log magnitude (mean "
                    "1/η₂; 12.5 = 8%, near the mean BTC down jump of Liu, Packham & Sepp "
                    "2024).")

    _fin2 = field_validator("jump_intensity", "p_up", "eta_up", "eta_down")(_finite)

    @model_validator(mode="after")
    def _check_eta_up(self):
        if not self.eta_up > 1:
            raise ConfigError("eta_up", "must be > 1 (otherwise the expected price is infinite)",
                              self.eta_up)
        return self


class HawkesSide(Strict):
    baseline: float = Field(ge=0, description="Baseline jump intensity (without excitation), "
                                             "jumps per year.")
    excitation: float = Field(
        ge=0, description="α: added to this side's intensity by each jump of this side, "
                          "jumps per year.")
    decay: float = Field(gt=0, description="β: decay rate of the excitation, per year "
                                           "(1/β is its mean lifetime).")
    mean_size: float = Field(
        gt=0, description="Mean magnitude of the log jump (exponential law): up jumps are "
                          "+Exp, down jumps −Exp. Must be < 1 on the up side.")

    _fin = field_validator("baseline", "excitation", "decay", "mean_size")(_finite)

    @model_validator(mode="after")
    def _check_stationary(self):
        ratio = self.excitation / self.decay
        if not ratio < 1:
            raise ConfigError(
                "excitation", f"branching ratio excitation/decay = {ratio:.6g} must be < 1 "
                              f"(otherwise the jump intensity explodes)", self.excitation)
        return self


def _hawkes_up() -> HawkesSide:
    return HawkesSide(baseline=5.8, excitation=2190.0, decay=4380.0, mean_size=0.084)


def _hawkes_down() -> HawkesSide:
    return HawkesSide(baseline=8.5, excitation=2190.0, decay=4380.0, mean_size=0.080)


class HawkesMarket(GBMMarket):
    kind: Literal["hawkes"]  # type: ignore[assignment]
    mu: float = Field(
        default=0.0,
        description="Drift, per year: jumps are compensated at their stationary rates, so "
                    "E[log S_t] matches a stationary process exactly while E[S_t] runs "
                    "slightly above s0·exp(mu·t) because jumps cluster (+0.07 %/day at the "
                    "defaults).")
    up: HawkesSide = Field(
        default_factory=_hawkes_up,
        description="Self-exciting up jumps (squeezes). Baseline and mean size from Liu, "
                    "Packham & Sepp (2024, BTC daily; values unverified); excitation and decay "
                    "are illustrative, not fitted: branching ratio 0.5, excitation lifetime "
                    "1/decay = 2 hours. A side given in the config needs all four keys.")
    down: HawkesSide = Field(
        default_factory=_hawkes_down,
        description="Self-exciting down jumps (crashes); defaults chosen as for `up`.")

    @model_validator(mode="after")
    def _check_up_size(self):
        if not self.up.mean_size < 1:
            raise ConfigError("up.mean_size", "must be < 1 (otherwise the expected price is "
                                              "infinite)", self.up.mean_size)
        return self


class ReplayNoise(Strict):
    sigma: float = Field(
        ge=0, description="Volatility of the noise, per √year: each path is the replay times "
                          "exp(σ·W_t − σ²t/2), W a Brownian motion from 0 drawn from the path's "
                          "own random stream, so the expected price is the replay.")

    _fin = field_validator("sigma")(_finite)


class ReplayMarket(Strict):
    kind: Literal["replay"]
    path: str = Field(description="CSV file (relative to the config file) with a timestamp "
                                  "and a price column; the same path for every Monte Carlo path.")
    price_column: str = Field(default="close", description="Column holding the price.")
    timestamp_column: str = Field(default="timestamp",
                                  description="Column holding the time stamp (must increase).")
    where: dict[str, str] = Field(
        default_factory=dict,
        description="Keep only rows whose columns equal these values, e.g. "
                    "`{event: 2020-03-12_black_thursday}`.")
    rescale_to: float | None = Field(
        default=None, gt=0,
        description="Multiply the replayed prices so that the path starts at this price "
                    "(the shape of a past day from today's price); null = as recorded.")
    noise: ReplayNoise | None = Field(
        default=None,
        description="Monte Carlo noise around the replay; null = every path is the replay "
                    "itself.")

    _fin = field_validator("rescale_to")(_finite)


class ShockMarket(Strict):
    kind: Literal["shock"]
    s0: float = Field(default=60_000.0, gt=0, description="Start price (quote per base).")
    shape: Literal["gap", "wick", "staircase", "squeeze"] = Field(
        description="`gap`: an instant move at `at_minute` that stays; `wick`: down (or up) "
                    "linearly to the extreme in half of `duration_minutes`, back to s0 in the "
                    "other half; `staircase`: `steps_count` equal instant moves, one every "
                    "duration/steps_count minutes from `at_minute` on; `squeeze`: a linear "
                    "move over `duration_minutes` that stays. Moves are linear in price.")
    size: float = Field(
        gt=-1, description="Size of the move, fraction of s0: the gap (−0.2 = 20% down), the "
                           "wick's depth at its extreme, the staircase's total fall, the "
                           "squeeze's rise (+0.25).")
    at_minute: float = Field(default=60.0, ge=0,
                             description="When the shock starts, minutes from the path start.")
    duration_minutes: float = Field(
        default=10.0, gt=0,
        description="wick: time to go down and back; staircase: total time (each stair lasts "
                    "duration/steps_count); squeeze: rise time; ignored by a gap.")
    steps_count: int = Field(default=5, ge=1, description="Number of stairs of a staircase.")
    sigma: float = Field(
        default=0.0, ge=0,
        description="GBM noise around the shock path, per √year (driftless: the expected "
                    "price is the shock path); 0 = every Monte Carlo path is the same shock.")

    _fin = field_validator("s0", "size", "at_minute", "duration_minutes", "sigma")(_finite)


Market = Annotated[Union[GBMMarket, MertonMarket, KouMarket, HawkesMarket, ReplayMarket,
                         ShockMarket],
                   Field(discriminator="kind")]


# -------------------------------------------------------------- population
class LeverageMix(Strict):
    values: list[float] = Field(
        default=[2, 5, 10, 20, 25, 50, 75, 100], min_length=1,
        description="Leverage choices (x). Each must be ≥ 1 and within the tier table's "
                    "maximum leverage.")
    weights: list[float] | None = Field(
        default=[0.10, 0.20, 0.25, 0.20, 0.08, 0.10, 0.03, 0.04],
        description="Relative weights of `values` (normalised); null = equal.")

    @model_validator(mode="after")
    def _check(self):
        for i, v in enumerate(self.values):
            if not (math.isfinite(v) and v >= 1):
                raise ConfigError(f"values.{i}", "leverage must be a finite number >= 1", v)
        if self.weights is not None:
            if len(self.weights) != len(self.values):
                raise ConfigError("weights", f"needs {len(self.values)} entries (one per value)",
                                  self.weights)
            for i, w in enumerate(self.weights):
                if not (math.isfinite(w) and w >= 0):
                    raise ConfigError(f"weights.{i}", "weight must be a finite number >= 0", w)
            if sum(self.weights) <= 0:
                raise ConfigError("weights", "weights must not all be zero", self.weights)
        return self


class NotionalLaw(Strict):
    minimum: float = Field(default=500.0, gt=0,
                           description="Smallest position notional, quote (Pareto scale).")
    alpha: float = Field(default=1.3, gt=0,
                         description="Pareto tail index; smaller = more whales.")
    maximum: float = Field(default=5_000_000.0, gt=0,
                           description="Largest position notional, quote (draws are capped).")

    @model_validator(mode="after")
    def _check(self):
        if self.maximum < self.minimum:
            raise ConfigError("maximum", f"must be >= minimum ({self.minimum})", self.maximum)
        return self


class SyntheticPopulation(Strict):
    kind: Literal["synthetic"]
    accounts: int = Field(default=10_000, ge=1, description="Number of accounts.")
    leverage: LeverageMix = Field(default_factory=LeverageMix,
                                  description="Mix of leverages the accounts choose.")
    notional: NotionalLaw = Field(default_factory=NotionalLaw,
                                  description="Heavy-tailed law of position notional at entry.")
    long_fraction: float = Field(default=0.5, ge=0, le=1,
                                 description="Probability that an account is long.")
    entry_spread: float = Field(
        default=0.01, ge=0,
        description="Std of log(entry price / start price): where positions were opened.")
    redraw_per_path: bool = Field(
        default=False,
        description="Draw a new book for every path (from the path's seed) instead of one "
                    "book per run.")
    cross_fraction: float | None = Field(
        default=None, ge=0, le=1,
        description="Share of accounts in cross margin; null = every account uses "
                    "`exchange.margin_mode`.")
    free_balance: float = Field(
        default=1.0, ge=0,
        description="Wallet balance beyond the position's margin, as a multiple of that margin. "
                    "A cross-margin account's whole wallet backs its position; an isolated "
                    "account's free balance stays aside.")
    stop_loss: "StopLossBehaviour" = Field(default_factory=lambda: StopLossBehaviour(),
                                           description="Stop-loss orders.")
    top_up: "TopUpBehaviour" = Field(default_factory=lambda: TopUpBehaviour(),
                                     description="Margin top-ups at margin alerts.")


class StopLossBehaviour(Strict):
    adoption: float = Field(default=0.0, ge=0, le=1,
                            description="Share of accounts with a stop-loss order.")
    distance: float = Field(
        default=0.05, gt=0, lt=1,
        description="Stop distance from the entry price, fraction: a long's stop at "
                    "entry·(1 − distance), a short's at entry·(1 + distance). Triggered at the "
                    "mark, filled at the step's execution price (it gaps through in a crash).")


class TopUpResponse(Strict):
    probability: float = Field(
        default=1.0, ge=0, le=1,
        description="Probability that an account with budget left adds collateral when its "
                    "margin ratio crosses an alert level (`exchange.margin_alerts`).")
    target_ratio: float | None = Field(
        default=None, gt=0, lt=1,
        description="Margin ratio (maintenance requirement / margin balance) the top-up "
                    "restores; null = half the alert level crossed.")


class TopUpBehaviour(TopUpResponse):
    adoption: float = Field(default=0.0, ge=0, le=1,
                            description="Share of accounts with a top-up budget.")
    budget: float = Field(default=1.0, gt=0,
                          description="Top-up budget per adopting account, as a multiple of "
                                      "the position's initial margin.")


class CSVPopulation(Strict):
    kind: Literal["csv"]
    path: str = Field(description="CSV snapshot (relative to the config file) with columns "
                                  "`account_id, qty, entry_price, collateral` and optional "
                                  "`leverage, margin_mode, wallet_balance, stop_price, "
                                  "topup_budget`; qty signed (+ long, − short), base units "
                                  "(inverse contracts: USD face value); collateral and "
                                  "wallet balance in the margin currency.")
    top_up: TopUpResponse = Field(default_factory=TopUpResponse,
                                  description="How accounts with a `topup_budget` respond to "
                                              "margin alerts.")


Population = Annotated[Union[SyntheticPopulation, CSVPopulation], Field(discriminator="kind")]


# ---------------------------------------------------------------- exchange
class TierRow(Strict):
    notional_floor: float = Field(ge=0, description="Lower bound of the bracket (exclusive), quote.")
    notional_cap: float | None = Field(
        default=None, description="Upper bound (inclusive), quote; null = no cap (last tier).")
    mmr: float = Field(ge=0, lt=1, description="Maintenance margin rate (fraction).")
    maint_amount: float = Field(default=0.0, ge=0,
                                description="Maintenance amount (deduction), quote.")
    max_leverage: float = Field(ge=1, description="Maximum leverage allowed in the bracket.")


class ExchangeConfig(Strict):
    preset: Literal["binance_usdm", "bybit_linear", "okx", "gate", "hyperliquid"] | None = Field(
        default=None,
        description="Venue preset: fills the tier table, fees, liquidation style and margin "
                    "conventions of that venue's BTC perpetual (see `stress/data/presets/`); "
                    "keys set here override it.")
    tiers: str | list[TierRow] = Field(
        default="binance_btcusdt_2021",
        description="Tier table: a built-in name (`binance_btcusdt_2021`, or a preset's table), "
                    "a CSV path with columns `notional_floor, notional_cap, mmr, maint_amount, "
                    "max_leverage`, or an inline list of rows. Brackets in the margin currency "
                    "(coin for inverse contracts).")
    contract: Literal["linear", "inverse"] = Field(
        default="linear",
        description="`linear` (quote-margined: PnL and collateral in quote) or `inverse` "
                    "(coin-margined, as BitMEX and the coin-margined books: qty is USD face "
                    "value, PnL and collateral in coin; shortfalls reported in coin and quote).")
    max_leverage: float | None = Field(
        default=None, ge=1,
        description="Venue-wide leverage cap (entry notional / collateral), below the tier "
                    "table's: an account that would use more (a synthetic draw or a CSV row) "
                    "opens the same position at the cap, with more collateral. Default: the "
                    "tier table's caps only.")
    margin_mode: Literal["isolated", "cross"] = Field(
        default="isolated",
        description="Default margin mode: `isolated` (the position's collateral alone backs it) "
                    "or `cross` (the account's whole wallet balance does).")
    mm_basis: Literal["mark", "entry"] = Field(
        default="mark",
        description="Maintenance margin on the notional at the mark (`mark`: Binance, OKX, "
                    "Gate, Hyperliquid) or at entry (`entry`: Bybit's isolated USDT formula).")
    requirement_fee_rate: float = Field(
        default=0.0, ge=0, lt=1,
        description="Fee rate counted inside the maintenance requirement (the taker fee to "
                    "close, as OKX and Gate do): liquidation when equity ≤ MM + rate·notional.")
    liquidation: Literal["full", "partial", "stepwise"] = Field(
        default="full",
        description="`full`: close the whole position; `partial`: close `partial_fraction` "
                    "and re-check (positions in tier `partial_min_tier` or above); `stepwise` "
                    "(Gate): lower the risk-limit tier one step at a time, closing what exceeds "
                    "the lower tier's cap and re-checking, before closing the rest in tier 1.")
    partial_fraction: float = Field(
        default=0.5, gt=0, le=1,
        description="Fraction of the position closed per partial-liquidation step.")
    partial_min_tier: int = Field(
        default=2, ge=1,
        description="Lowest tier (1-based, at the mark notional) whose positions are "
                    "liquidated partially; smaller positions are closed at once.")
    surplus_to: Literal["fund", "trader"] = Field(
        default="fund",
        description="Where the equity left after a liquidation and its fee goes: to the "
                    "insurance fund (Binance, Bybit, OKX) or back to the trader (Hyperliquid).")
    margin_alerts: list[float] = Field(
        default=[], max_length=4,
        description="Margin-ratio alert levels (maintenance requirement / margin balance, "
                    "ascending, in (0, 1)); crossings are counted and trigger top-ups.")
    liquidation_fee_rate: float = Field(
        default=0.0, ge=0, lt=1,
        description="Liquidation fee, fraction of the closed notional at the execution price; "
                    "paid out of what is left of the position's equity.")
    slippage: float = Field(
        default=0.0, ge=0, lt=1,
        description="Fixed part of the execution price's distance from the mark, against the "
                    "position: a long is closed at mark·(1 − slippage − gap − impact), a short "
                    "at mark·(1 + slippage + gap + impact) (gap and impact: `liquidity`).")
    mark_smoothing_minutes: float = Field(
        default=0.0, ge=0,
        description="Half-life of the exponential average of the index that forms the mark "
                    "price, minutes; 0 = the mark is the index.")
    funding: "FundingConfig" = Field(default_factory=lambda: FundingConfig(),
                                     description="Funding payments between longs and shorts.")

    _fin = field_validator("max_leverage")(_finite)

    @field_validator("margin_alerts")
    @classmethod
    def _alerts(cls, v):
        for i, a in enumerate(v):
            if not 0 < a < 1:
                raise ConfigError(str(i), "an alert level must be in (0, 1)", a)
            if i and a <= v[i - 1]:
                raise ConfigError(str(i), f"alert levels must ascend (previous {v[i - 1]})", a)
        return v


class FundingConfig(Strict):
    mode: Literal["none", "constant", "premium"] = Field(
        default="none",
        description="`none`; `constant` (the rate below every interval); `premium` (the "
                    "interval's mean premium of mark over index, plus `interest` − premium "
                    "clamped to ±`clamp`, the whole capped at ±`cap`, as venues do).")
    interval_minutes: float = Field(default=480.0, gt=0,
                                    description="Time between funding payments, minutes.")
    rate: float = Field(default=0.0001, ge=-1, le=1,
                        description="Constant funding rate per interval (positive: longs pay "
                                    "shorts).")
    interest: float = Field(default=0.0001, ge=-1, le=1,
                            description="Interest component per interval (premium mode).")
    clamp: float = Field(default=0.0005, ge=0, le=1,
                         description="Clamp of (interest − premium) per interval (premium mode).")
    cap: float = Field(default=0.0075, ge=0, le=1,
                       description="Largest absolute funding rate per interval.")


# --------------------------------------------------------------- liquidity
class LiquidityEvent(Strict):
    start_minute: float = Field(ge=0, description="Start of the event, minutes from the path start.")
    duration_minutes: float = Field(gt=0, description="Length of the event, minutes.")
    depth_factor: float = Field(default=1.0, gt=0, le=1,
                                description="Book depth is multiplied by this during the event.")
    gap: float = Field(default=0.0, ge=0, lt=1,
                       description="The book is empty over this band beyond the mark (fraction "
                                   "of the price): forced orders fill at least this far away.")
    side: Literal["both", "bid", "ask"] = Field(
        default="both", description="Which side of the book the event hits (bid: where "
                                    "liquidated longs sell).")


class GapEvents(Strict):
    rate_per_day: float = Field(default=0.0, ge=0,
                                description="Random gap events per day (Poisson), per path.")
    width: float = Field(default=0.01, ge=0, lt=1,
                         description="Band beyond the mark left empty, fraction of the price.")
    duration_minutes: float = Field(default=5.0, gt=0, description="Length of each gap, minutes.")
    side: Literal["both", "bid", "ask"] = Field(default="bid",
                                                 description="Side of the book that empties.")


class LiquidityConfig(Strict):
    depth: float = Field(
        default=5.0e7, gt=0,
        description="Baseline book depth per side: quote notional within `band` of the mark.")
    band: float = Field(default=0.01, gt=0, lt=1,
                        description="Reference band of the depth, fraction of the price.")
    impact_law: Literal["linear", "square_root"] = Field(
        default="square_root",
        description="Impact of a step's forced orders Q against depth D: "
                    "impact = k·(Q/D)^γ, γ = 1 (linear) or ½ (square_root).")
    impact_k: float | None = Field(
        default=None, ge=0,
        description="k of the impact law, fraction of the price; null = `band` (eating the "
                    "band's depth moves the price by the band).")
    permanent: float = Field(
        default=0.5, ge=0, le=1,
        description="Part of the impact that moves the mark (and can breach more accounts "
                    "in the same step); the rest is temporary.")
    permanent_half_life_minutes: float | None = Field(
        default=None, gt=0,
        description="Half-life with which the mark's displacement by forced orders decays "
                    "back to the index, minutes; null = it never decays.")
    recovery_half_life_minutes: float = Field(
        default=30.0, gt=0,
        description="Half-life of the book's recovery to its baseline depth after thinning, "
                    "and of the refilling of depth consumed by forced orders, minutes.")
    jump_threshold: float = Field(
        default=0.02, gt=0,
        description="An absolute one-step log return above this counts as a jump.")
    jump_thinning: float = Field(default=0.5, gt=0, le=1,
                                 description="Depth is multiplied by this after a jump.")
    vol_elasticity: float = Field(
        default=1.0, ge=0,
        description="Depth ∝ (reference_vol / realised vol)^elasticity when realised vol is "
                    "above the reference.")
    reference_vol: float = Field(default=0.6, gt=0,
                                 description="Volatility at which depth is at baseline, per √year.")
    vol_half_life_minutes: float = Field(
        default=30.0, gt=0, description="Half-life of the realised-volatility average, minutes.")
    depth_floor: float = Field(
        default=0.01, gt=0, le=1,
        description="Depth never falls below this fraction of the baseline.")
    max_cascade_rounds: int = Field(
        default=50, ge=1,
        description="Cap on liquidation rounds within one step (reported when hit).")
    gaps: GapEvents = Field(default_factory=GapEvents, description="Random gap events.")
    events: list[LiquidityEvent] = Field(
        default_factory=list, description="Scripted depth collapses and gaps.")

    @property
    def gamma(self) -> float:
        return 1.0 if self.impact_law == "linear" else 0.5

    @property
    def k(self) -> float:
        return self.band if self.impact_k is None else self.impact_k


# -------------------------------------------------------------- fund, policy
class FundConfig(Strict):
    initial: float = Field(default=1_000_000.0, ge=0,
                           description="Insurance fund at the start of each path, quote.")
    fee_share: float = Field(default=1.0, ge=0, le=1,
                             description="Share of liquidation fees paid into the fund "
                                         "(the rest goes to the platform).")
    cap: float | None = Field(
        default=None, gt=0,
        description="Largest fund, quote: what the fund holds above it is paid out to the "
                    "platform; null = no cap. Must be ≥ `initial`.")
    record_every_minutes: float | None = Field(
        default=60.0, ge=0,
        description="The fund's trajectory (per policy, path and time) is stored every this "
                    "many minutes, rounded to whole steps (at least one); null or 0 = not "
                    "stored.")

    _fin = field_validator("initial", "cap", "record_every_minutes")(_finite)

    @model_validator(mode="after")
    def _check_cap(self):
        if self.cap is not None and self.initial > self.cap:
            raise ConfigError("cap", f"must be >= initial ({self.initial!r})", self.cap)
        return self


class InsuranceFundLayer(Strict):
    kind: Literal["insurance_fund"] = "insurance_fund"
    initial: float | None = Field(
        default=None, ge=0,
        description="This policy's fund at the start of each path, quote; null = "
                    "`fund.initial`.")
    cap: float | None = Field(
        default=None, gt=0,
        description="This policy's fund cap, quote (the excess is paid out to the platform); "
                    "null = `fund.cap`.")
    fee_share: float | None = Field(
        default=None, ge=0, le=1,
        description="Share of liquidation fees paid into this policy's fund; null = "
                    "`fund.fee_share`.")

    _fin = field_validator("initial", "cap")(_finite)


class AdlLayer(Strict):
    kind: Literal["adl"] = "adl"
    ranking: Literal["score", "pro_rata", "leverage", "risk_based"] = Field(
        default="score",
        description="Who is deleveraged among the opposite side's winners: `score` = the "
                    "Binance/Bybit queue by PnL% × effective leverage; `pro_rata` = every "
                    "winner on that side in proportion to its profit; `leverage` = highest "
                    "effective leverage first; `risk_based` = the water-filling optimum of Campbell, "
                    "Hey, Moallemi & Nutz, \"Risk-Based Auto-Deleveraging\" (arXiv "
                    "2603.15963): the most leveraged are reduced first so that the largest "
                    "leverage left is as small as possible.")
    pnl_basis: Literal["collateral", "entry_value"] = Field(
        default="collateral",
        description="PnL% of the `score` queue on the position's collateral (`collateral`) "
                    "or on its entry notional (`entry_value`, as in the venues' ADL pages).")


SETTLEMENTS = {"step": None, "funding": None, "day": 1440.0, "week": 10080.0}


class SocialisedLayer(Strict):
    kind: Literal["socialised"] = "socialised"
    settlement: Literal["step", "funding", "day", "week"] | float = Field(
        default="step",
        description="When the pot of socialised losses is charged: `step` (every step), "
                    "`funding` (each funding interval), `day` (every 1,440 min), `week` "
                    "(every 10,080 min; OKX's 2018 clawback settled weekly) or a number of "
                    "minutes (≥ `run.step_minutes`). Each account pays pro rata to its profit "
                    "over the period (realised plus unrealised), at most that profit; what is "
                    "pending is settled at the end of the path at the latest.")

    @field_validator("settlement", mode="before")
    @classmethod
    def _settlement(cls, v):
        if isinstance(v, str) and v in SETTLEMENTS:
            return v
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) \
                and v > 0:
            return float(v)
        raise ConfigError("", "must be step, funding, day, week or a positive number of "
                              "minutes", v)

    def every_steps(self, cfg: "Config") -> int:
        """The settlement period in whole steps of ``cfg`` (at least 1)."""
        return settlement_steps(self, cfg)


class PlatformLayer(Strict):
    kind: Literal["platform"] = "platform"


Layer = Annotated[Union[InsuranceFundLayer, AdlLayer, SocialisedLayer, PlatformLayer],
                  Field(discriminator="kind")]


def _check_options(j: int, kind: str, keys: list) -> None:
    model = {"insurance_fund": InsuranceFundLayer, "adl": AdlLayer,
             "socialised": SocialisedLayer, "platform": PlatformLayer}[kind]
    options = [name for name in model.model_fields if name != "kind"]
    for key in keys:
        if key not in options:
            expected = (f"expected one of {', '.join(options)}" if options
                        else "it has none")
            raise ConfigError(f"{j}.{key}", f"unknown option of the {kind} layer, {expected}")


def _known_layer(key: str, name: Any) -> None:
    if name not in LAYERS:
        raise ConfigError(key, f"unknown layer, expected one of {', '.join(LAYERS)}", name)


def _normalise_layer(j: int, item: Any) -> Any:
    """One ``layers`` item as a ``{kind: ..., options...}`` mapping (models pass through)."""
    if isinstance(item, BaseModel):
        return item
    if isinstance(item, str):
        _known_layer(str(j), item)
        return {"kind": item}
    if isinstance(item, dict) and "kind" in item:
        _known_layer(f"{j}.kind", item["kind"])
        _check_options(j, item["kind"], [k for k in item if k != "kind"])
        return item
    if isinstance(item, dict) and len(item) == 1:
        (name, options), = item.items()
        _known_layer(str(j), name)
        if options is None:
            options = {}
        if not isinstance(options, dict):
            raise ConfigError(f"{j}.{name}", "the options of a layer must be a mapping",
                              options)
        if "kind" in options:
            raise ConfigError(f"{j}.{name}.kind", "a layer's kind is its key", options["kind"])
        _check_options(j, name, list(options))
        return {"kind": name, **options}
    if isinstance(item, dict):
        raise ConfigError(str(j), "a layer with options is a one-key mapping "
                                  "{name: {option: value}}", item)
    raise ConfigError(str(j), f"must be a layer name ({', '.join(LAYERS)}) or a one-key "
                              f"mapping {{name: {{option: value}}}}", item)


class PolicyConfig(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_+.-]+$", description="Policy name (a label).")
    layers: list[Layer] = Field(
        min_length=1,
        description="Waterfall applied in order to each shortfall; what no layer covers is "
                    "`residual`. Each item is a layer name (`insurance_fund`, `adl`, "
                    "`socialised`, `platform`) or a one-key mapping to the layer's options, "
                    "`{adl: {ranking: risk_based}}` (options below); each at most once.")

    @model_validator(mode="before")
    @classmethod
    def _moved_keys(cls, data):
        if isinstance(data, dict) and "adl_pnl_basis" in data:
            raise ConfigError("adl_pnl_basis", "moved into the adl layer: "
                                               "layers: [..., {adl: {pnl_basis: ...}}]",
                              data["adl_pnl_basis"])
        return data

    @field_validator("layers", mode="before")
    @classmethod
    def _normalise(cls, v):
        if not isinstance(v, (list, tuple)):
            return v  # pydantic reports the type
        return [_normalise_layer(j, item) for j, item in enumerate(v)]

    @field_validator("layers")
    @classmethod
    def _unique(cls, v):
        seen = set()
        for layer in v:
            if layer.kind in seen:
                raise ConfigError("", f"layer {layer.kind!r} appears twice")
            seen.add(layer.kind)
        return v

    @property
    def layer_names(self) -> list[str]:
        """The layers' kinds, in waterfall order."""
        return [layer.kind for layer in self.layers]

    def layer(self, kind: str) -> InsuranceFundLayer | AdlLayer | SocialisedLayer | \
            PlatformLayer | None:
        """The policy's layer of this kind, or None if it has none."""
        if kind not in LAYERS:
            raise ValueError(f"unknown layer kind {kind!r}, expected one of {LAYERS}")
        return next((layer for layer in self.layers if layer.kind == kind), None)

    @property
    def adl(self) -> AdlLayer:
        """The ADL layer's options (the defaults when the policy has no adl layer)."""
        return self.layer("adl") or AdlLayer()

    def fund_settings(self, fund: FundConfig) -> tuple[float, float | None, float]:
        """``(initial, cap, fee_share)`` of this policy's insurance fund.

        The insurance_fund layer's options where set, else the ``fund`` block's. A
        policy without that layer still has a fund (it collects surplus and fees but
        never pays), with the ``fund`` block's settings.
        """
        layer = self.layer("insurance_fund")
        if layer is None:
            return fund.initial, fund.cap, fund.fee_share
        return (fund.initial if layer.initial is None else layer.initial,
                fund.cap if layer.cap is None else layer.cap,
                fund.fee_share if layer.fee_share is None else layer.fee_share)


def default_policies() -> list[PolicyConfig]:
    return [PolicyConfig(name="fund+adl", layers=["insurance_fund", "adl"]),
            PolicyConfig(name="socialised", layers=["socialised"]),
            PolicyConfig(name="platform", layers=["platform"])]


def _whole_steps(minutes: float, step_minutes: float) -> int:
    return max(1, round(minutes / step_minutes))


def settlement_steps(layer: SocialisedLayer, cfg: "Config") -> int:
    """How many steps of ``cfg`` a socialised layer's settlement period lasts (≥ 1)."""
    step = cfg.run.step_minutes
    s = layer.settlement
    if s == "step":
        return 1
    if s == "funding":
        return _whole_steps(cfg.exchange.funding.interval_minutes, step)
    if isinstance(s, str):
        return _whole_steps(SETTLEMENTS[s], step)
    return _whole_steps(s, step)


def fund_record_steps(cfg: "Config") -> int:
    """Steps between stored points of the fund trajectory; 0 = not stored."""
    every = cfg.fund.record_every_minutes
    if not every:
        return 0
    return _whole_steps(every, cfg.run.step_minutes)


# ----------------------------------------------------------------- cluster
DEFAULT_JOB_PROLOGUE = (
    # numba compiles the kernel once per node into node-local disk (the home
    # folder is often read-only or slow on compute nodes).
    "export NUMBA_CACHE_DIR=${TMPDIR:-/tmp}/stress-numba-cache",
    # One worker process per core: no nested threads.
    "export NUMBA_NUM_THREADS=1",
    "export OMP_NUM_THREADS=1",
)


class ClusterConfig(Strict):
    """Where ``--backend dask --cluster slurm|pbs`` starts its workers.

    Results do not depend on it: it is left out of the config hash and of the
    config stored in results.
    """
    kind: Literal["slurm", "pbs"] = Field(
        description="Batch system: `slurm` (dask_jobqueue.SLURMCluster) or `pbs` (PBSCluster).")
    cores: int = Field(ge=1, description="Cores per job (one batch job per node or part of one).")
    processes: int | None = Field(
        default=None, ge=1,
        description="Dask worker processes per job; null = `cores` (one single-threaded worker "
                    "per core). Each worker gets cores/processes threads.")
    memory: str = Field(
        description="Memory per job, shared by its workers, e.g. `16GB` or `64GiB`.")
    walltime: str = Field(
        default="01:00:00",
        description="Wall-clock limit per job, `HH:MM:SS`.")
    jobs: int = Field(default=1, ge=1, description="Number of batch jobs to start.")
    queue: str | None = Field(
        default=None, description="Partition (SLURM `-p`) or queue (PBS `-q`); null = the "
                                  "site's default.")
    account: str | None = Field(
        default=None, description="Account or project charged (SLURM `-A`, PBS `-A`); null = "
                                  "none.")
    job_extra_directives: list[str] = Field(
        default_factory=list,
        description="More batch directives, without the `#SBATCH`/`#PBS` prefix, e.g. "
                    "`[\"--constraint=skylake\"]` or `[\"-l place=scatter\"]`.")
    local_directory: str | None = Field(
        default=None,
        description="Node-local scratch folder for the workers' spill files, e.g. "
                    "`$TMPDIR`; null = the worker's default.")
    log_directory: str | None = Field(
        default=None, description="Folder for the jobs' stdout/stderr files; null = the "
                                  "working directory of the submission.")
    job_script_prologue: list[str] = Field(
        default_factory=lambda: list(DEFAULT_JOB_PROLOGUE),
        description="Shell lines run in each job before the workers start (activate the "
                    "venv here: `source /path/to/.venv/bin/activate`). The default points "
                    "`NUMBA_CACHE_DIR` at node-local disk and sets `NUMBA_NUM_THREADS=1` and "
                    "`OMP_NUM_THREADS=1`; a list given here replaces it.")
    python: str | None = Field(
        default=None,
        description="Python interpreter on the compute nodes, with `stress` of the same "
                    "version installed; null = the driver's own interpreter path.")
    interface: str | None = Field(
        default=None,
        description="Network interface the scheduler and workers listen on, e.g. `ib0`; "
                    "null = the default route's.")

    @field_validator("memory")
    @classmethod
    def _check_memory(cls, v: str) -> str:
        if not re.fullmatch(r"\d+(\.\d+)?\s*([kKMGTP]i?B|B)", v.strip()):
            raise ValueError("must be a size such as 16GB or 64GiB")
        return v.strip()

    @field_validator("walltime", mode="before")
    @classmethod
    def _sexagesimal_walltime(cls, v):
        # YAML 1.1 reads an unquoted 2:30:00 as the integer 9000 (seconds).
        if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
            minutes, seconds = divmod(v, 60)
            return f"{minutes // 60:02d}:{minutes % 60:02d}:{seconds:02d}"
        return v

    @field_validator("walltime")
    @classmethod
    def _check_walltime(cls, v: str) -> str:
        if not re.fullmatch(r"\d+:[0-5]\d:[0-5]\d", v):
            raise ValueError("must be HH:MM:SS such as 01:30:00")
        return v

    @model_validator(mode="after")
    def _check_processes(self):
        if self.processes is not None and self.processes > self.cores:
            raise ConfigError("processes", f"must be <= cores ({self.cores})", self.processes)
        return self


# -------------------------------------------------------------------- top
# Config sections that say where a run is computed, not what: results and the
# config hash ignore them.
NOT_RESULTS = frozenset({"cluster"})


class Config(Strict):
    run: RunConfig
    market: Market = Field(default_factory=lambda: MertonMarket(kind="merton"))
    population: Population = Field(default_factory=lambda: SyntheticPopulation(kind="synthetic"))
    exchange: ExchangeConfig = Field(default_factory=ExchangeConfig)
    fund: FundConfig = Field(default_factory=FundConfig)
    policies: list[PolicyConfig] = Field(default_factory=default_policies, min_length=1)
    liquidity: LiquidityConfig | None = Field(
        default=None,
        description="Order-book depth, gaps and price impact of forced orders; null = fills "
                    "at mark·(1 ∓ slippage) with no impact.")
    cluster: ClusterConfig | None = Field(
        default=None,
        description="Batch jobs for `--backend dask --cluster slurm|pbs`; not part of the "
                    "results or the config hash.")

    # Where relative file paths are resolved and which file the config came from.
    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)
    _source: str | None = PrivateAttr(default=None)
    # Name of the scenario laid over the config (stress.scenarios), recorded in results.
    _scenario: str | None = PrivateAttr(default=None)

    @field_validator("policies")
    @classmethod
    def _unique_names(cls, v):
        names = [p.name for p in v]
        for i, n in enumerate(names):
            if names.index(n) != i:
                raise ConfigError(f"{i}.name", "policy names must be unique", n)
        return v

    @model_serializer(mode="wrap")
    def _omit_absent_cluster(self, handler):
        # A config without a cluster: block dumps exactly as before the block existed.
        data = handler(self)
        if isinstance(data, dict) and data.get("cluster", 0) is None:
            del data["cluster"]
        return data

    @model_validator(mode="after")
    def _cross_checks(self):
        top = self.population.top_up
        if getattr(top, "adoption", 0.0) > 0 and not self.exchange.margin_alerts:
            raise ConfigError("population.top_up.adoption",
                              "top-ups happen at margin alerts: set exchange.margin_alerts",
                              top.adoption)
        for i, policy in enumerate(self.policies):
            for j, layer in enumerate(policy.layers):
                self._check_layer(f"policies.{i}.layers.{j}", layer)
        return self

    def _check_layer(self, key: str, layer) -> None:
        if isinstance(layer, SocialisedLayer):
            s = layer.settlement
            if s == "funding" and self.exchange.funding.mode == "none":
                raise ConfigError(f"{key}.settlement", "settles at funding intervals but "
                                                       "exchange.funding.mode is 'none'", s)
            if not isinstance(s, str) and s < self.run.step_minutes:
                raise ConfigError(f"{key}.settlement",
                                  f"must be >= run.step_minutes ({self.run.step_minutes!r})", s)
        elif isinstance(layer, InsuranceFundLayer):
            initial = self.fund.initial if layer.initial is None else layer.initial
            cap = self.fund.cap if layer.cap is None else layer.cap
            if cap is not None and initial > cap:
                if layer.cap is not None:
                    raise ConfigError(f"{key}.cap", f"must be >= the policy's initial fund "
                                                    f"({initial!r})", cap)
                raise ConfigError(f"{key}.initial", f"must be <= fund.cap ({cap!r})", initial)

    @property
    def source(self) -> str | None:
        return self._source

    @property
    def scenario(self) -> str | None:
        """Name of the scenario applied to this config, if any."""
        return self._scenario

    def resolve(self, relative: str) -> Path:
        """A file path from the config, resolved against the config file's folder."""
        p = Path(relative).expanduser()
        return p if p.is_absolute() else self._base_dir / p

    def to_yaml(self) -> str:
        """The config that determines the results (without the ``cluster`` block)."""
        return yaml.safe_dump(self.model_dump(mode="json", exclude=NOT_RESULTS),
                              sort_keys=False)

    def hash(self) -> str:
        """SHA-256 of the canonical config and of every data file it reads.

        Where the results are computed (``cluster``) is not part of it.
        """
        h = hashlib.sha256(json.dumps(self.model_dump(mode="json", exclude=NOT_RESULTS),
                                      sort_keys=True).encode())
        for f in self.data_files():
            h.update(Path(f).read_bytes())
        return h.hexdigest()

    def data_files(self) -> list[Path]:
        """Every data file the config reads (the ones the loader checks exist)."""
        return [self.resolve(rel) for _, rel in _file_keys(self)]

    def with_overrides(self, overrides: dict[str, Any]) -> "Config":
        """A new validated config with dotted keys replaced: ``{"run.paths": 10}``."""
        data = self.model_dump(mode="json")
        for key, value in overrides.items():
            node = data
            parts = key.split(".")
            for part in parts[:-1]:
                if isinstance(node, list):
                    node = node[int(part)]
                else:
                    if part not in node or not isinstance(node[part], (dict, list)):
                        raise ConfigError(key, "no such config section")
                    node = node[part]
            node[parts[-1]] = value
        cfg = _validate(data, self._source, self._base_dir)
        cfg._scenario = self._scenario
        return cfg


# ----------------------------------------------------------------- loading
def _union_tags(*unions) -> frozenset[str]:
    """The ``kind`` values of the models of tagged unions (``Annotated[Union[...], ...]``)."""
    return frozenset(get_args(model.model_fields["kind"].annotation)[0]
                     for union in unions for model in get_args(get_args(union)[0]))


_TAGS = _union_tags(Market, Population, Layer)


def _key_path(loc: tuple) -> str:
    # Drop the discriminator tags pydantic inserts for tagged unions
    # ('market', 'merton', 'sigma') and the 'function-after' wrappers.
    out = []
    for part in loc:
        if isinstance(part, str) and (part in _TAGS or part.startswith("function-")):
            continue
        if isinstance(part, str) and part in {"str", "list[TierRow]"}:
            continue
        out.append(str(part))
    return ".".join(out)


_MESSAGES = {
    "extra_forbidden": "unknown key",
    "missing": "required key is missing",
    "union_tag_invalid": "unknown kind",
}


def _from_validation_error(err: ValidationError, source: str | None) -> ConfigError:
    first = err.errors(include_url=False)[0]
    loc = first["loc"]
    ctx = first.get("ctx") or {}
    inner = ctx.get("error")
    if isinstance(inner, ConfigError):  # raised by a model validator deep in the tree
        prefix = _key_path(loc)
        key = ".".join(p for p in (prefix, inner.key) if p)
        return ConfigError(key, inner.message, inner.value, source)
    msg = _MESSAGES.get(first["type"], first["msg"])
    if first["type"] == "union_tag_invalid":
        msg = f"unknown kind, expected one of {ctx.get('expected_tags')}"
        loc = tuple(loc) + ("kind",)
        value = ctx.get("tag")
    elif first["type"] == "missing":
        return ConfigError(_key_path(loc), msg, source=source)
    else:
        value = first.get("input")
        if first["type"] == "extra_forbidden":
            value = None
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if value is None and first["type"] == "extra_forbidden":
        return ConfigError(_key_path(loc), msg, source=source)
    return ConfigError(_key_path(loc), msg[:1].lower() + msg[1:], value, source)


def _validate(data: Any, source: str | None, base_dir: Path) -> Config:
    if not isinstance(data, dict):
        raise ConfigError("", "the config must be a YAML mapping with sections "
                              "run, market, population, exchange, fund, policies",
                          source=source)
    try:
        data = _apply_preset(data)
        cfg = Config.model_validate(data)
    except ValidationError as err:
        raise _from_validation_error(err, source) from None
    except ConfigError as err:
        raise err.with_source(source) if source else err
    cfg._base_dir = base_dir
    cfg._source = source
    _check_files(cfg)
    return cfg


def _apply_preset(data: dict) -> dict:
    """Lay ``exchange.preset``'s settings under the exchange keys the config sets itself."""
    ex = data.get("exchange")
    if not isinstance(ex, dict) or ex.get("preset") is None:
        return data
    from stress.exchange.presets import load_preset
    merged = _deep_merge(load_preset(ex["preset"]), ex)
    return {**data, "exchange": merged}


def _deep_merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _check_files(cfg: Config) -> None:
    for key, rel in _file_keys(cfg):
        p = cfg.resolve(rel)
        if not p.is_file():
            raise ConfigError(key, "file not found", rel, cfg.source)


def _file_keys(cfg: Config):
    if isinstance(cfg.market, ReplayMarket):
        yield "market.path", cfg.market.path
    if isinstance(cfg.population, CSVPopulation):
        yield "population.path", cfg.population.path
    t = cfg.exchange.tiers
    if isinstance(t, str) and (t.endswith(".csv") or "/" in t):
        yield "exchange.tiers", t


def load_config(path: str | Path) -> Config:
    """Read and validate a YAML config.

    Raises
    ------
    ConfigError
        With the file, the key path and the value, for any invalid input.
    """
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise ConfigError("", "config file not found", source=source)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError("", f"invalid YAML: {where}{problem}", source=source) from None
    return _validate(data, source, path.resolve().parent)


def config_from_dict(data: dict, base_dir: str | Path | None = None) -> Config:
    """Validate a config given as a Python mapping (paths relative to ``base_dir``)."""
    return _validate(data, None, Path(base_dir) if base_dir else Path.cwd())


# ------------------------------------------------------------ documentation
_DOC_SECTIONS = (
    ("run", RunConfig, None),
    ("market (kind: gbm)", GBMMarket, "market"),
    ("market (kind: merton)", MertonMarket, "market"),
    ("market (kind: kou)", KouMarket, "market"),
    ("market (kind: hawkes)", HawkesMarket, "market"),
    ("market.up, market.down (kind: hawkes)", HawkesSide, "market.{up,down}"),
    ("market (kind: replay)", ReplayMarket, "market"),
    ("market.noise (kind: replay)", ReplayNoise, "market.noise"),
    ("market (kind: shock)", ShockMarket, "market"),
    ("population (kind: synthetic)", SyntheticPopulation, "population"),
    ("population.leverage", LeverageMix, "population.leverage"),
    ("population.notional", NotionalLaw, "population.notional"),
    ("population.stop_loss", StopLossBehaviour, "population.stop_loss"),
    ("population.top_up", TopUpBehaviour, "population.top_up"),
    ("population (kind: csv)", CSVPopulation, "population"),
    ("exchange", ExchangeConfig, None),
    ("exchange.tiers (inline rows)", TierRow, "exchange.tiers[]"),
    ("exchange.funding", FundingConfig, "exchange.funding"),
    ("liquidity (optional)", LiquidityConfig, "liquidity"),
    ("liquidity.gaps", GapEvents, "liquidity.gaps"),
    ("liquidity.events (list)", LiquidityEvent, "liquidity.events[]"),
    ("fund", FundConfig, None),
    ("policies (list)", PolicyConfig, "policies[]"),
    ("policies[].layers (insurance_fund options)", InsuranceFundLayer,
     "policies[].layers[].insurance_fund"),
    ("policies[].layers (adl options)", AdlLayer, "policies[].layers[].adl"),
    ("policies[].layers (socialised options)", SocialisedLayer,
     "policies[].layers[].socialised"),
    ("cluster (optional; kind: slurm or pbs)", ClusterConfig, "cluster"),
)


def _default_text(field) -> str:
    from pydantic_core import PydanticUndefined
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    if field.default_factory is not None:
        value = field.default_factory()
        if isinstance(value, BaseModel):
            if any(f.is_required() for f in type(value).model_fields.values()):
                # Its own table says "required": show this field's default inline.
                return f"`{json.dumps(value.model_dump(mode='json'))}`"
            return "see below"
        if isinstance(value, list) and value and isinstance(value[0], BaseModel):
            return "the three mission policies"
    else:
        value = field.default
    return f"`{json.dumps(value)}`" if not isinstance(value, float) or value != math.inf \
        else "`inf`"


def reference_markdown() -> str:
    """The config reference of the README, generated from the models' descriptions."""
    lines = []
    for title, model, prefix in _DOC_SECTIONS:
        prefix = prefix or title
        lines += [f"**`{title}`**", "", "| key | default | meaning |", "| --- | --- | --- |"]
        for name, field in model.model_fields.items():
            if name == "kind":
                continue
            desc = (field.description or "").replace("|", "\\|")
            lines.append(f"| `{prefix}.{name}` | {_default_text(field)} | {desc} |")
        lines.append("")
    return "\n".join(lines)
