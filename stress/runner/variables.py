"""Registry of result variables: each name is defined once, with dims, units
and long name. The kernel writes per-path metrics by the indices below."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Variable:
    name: str
    units: str
    long_name: str
    dims: tuple[str, ...] = ("policy", "path")
    integer: bool = False


# Order matters: the kernel fills ``out[k]`` with the k-th metric.
PATH_METRICS: tuple[Variable, ...] = (
    Variable("shortfall", "quote", "bad debt: sum of negative balances left by liquidations "
                                   "filled past the bankruptcy price"),
    Variable("fund_paid", "quote", "shortfall paid by the insurance fund"),
    Variable("adl_cost", "quote", "shortfall borne by auto-deleveraged traders (closed at the "
                                  "bankruptcy price instead of the execution price)"),
    Variable("socialised_loss", "quote", "shortfall charged pro rata to profitable accounts"),
    Variable("platform_loss", "quote", "shortfall absorbed by the platform (negative-balance "
                                       "protection)"),
    Variable("residual", "quote", "shortfall no layer of the policy covered"),
    Variable("n_liquidations", "1", "number of liquidations", integer=True),
    Variable("n_shortfalls", "1", "number of liquidations that left a shortfall", integer=True),
    Variable("liquidated_notional", "quote", "notional of liquidated positions at the mark price"),
    Variable("fund_inflow", "quote", "liquidation surplus and fees paid into the insurance fund"),
    Variable("fund_final", "quote", "insurance fund at the end of the path"),
    Variable("fund_min", "quote", "lowest insurance fund balance on the path"),
    Variable("fund_depleted", "1", "1 if the insurance fund was asked for more than it held",
             integer=True),
    Variable("time_to_depletion", "min", "time from the path start until the fund first ran dry "
                                         "(NaN when it never did)"),
    Variable("n_adl", "1", "number of counterparty positions auto-deleveraged", integer=True),
    Variable("adl_notional", "quote", "notional closed by auto-deleveraging, at the bankruptcy "
                                      "price"),
    Variable("cascade_rounds", "1", "most liquidation rounds within one step (a round's forced "
                                    "orders move the mark and breach more accounts)",
             integer=True),
    Variable("cascade_cap_hits", "1", "steps whose cascade stopped at the round cap",
             integer=True),
    Variable("cascade_move", "1", "largest move of the mark within one step caused by forced "
                                  "orders (fraction of the step's starting mark)"),
    Variable("funding_volume", "quote", "total funding transferred from payers to receivers"),
    Variable("mark_index_gap", "1", "largest end-of-step gap between mark and index, "
                                    "|mark/index − 1| (smoothing and forced-order impact)"),
    Variable("shortfall_quote", "quote", "bad debt valued in quote at the mark of the step it "
                                         "arose (equals shortfall for linear contracts)"),
    Variable("n_partial_liquidations", "1", "partial or stepwise liquidation steps (position "
                                            "reductions short of a full close)", integer=True),
    Variable("n_stops", "1", "stop-loss orders triggered", integer=True),
    Variable("stop_notional", "quote", "notional closed by stop-loss orders at the mark price"),
    Variable("n_margin_alerts", "1", "margin-ratio alert levels crossed (all accounts)",
             integer=True),
    Variable("n_topups", "1", "margin top-ups made at alerts", integer=True),
    Variable("topup_volume", "quote", "collateral added by margin top-ups"),
    Variable("fund_need", "quote", "smallest initial insurance fund that would never have run "
                                   "dry on this path: the largest cumulative excess of what the "
                                   "fund was asked to pay over its inflows (NaN without an "
                                   "insurance_fund layer)"),
    Variable("fund_overflow", "quote", "insurance fund above its cap, paid out to the platform"),
    Variable("platform_max_step", "quote", "largest platform loss within one step"),
    Variable("n_accounts_hit", "1", "distinct accounts that bore part of the loss (ADL'd or "
                                    "haircut)", integer=True),
    Variable("adl_max_loss_fraction", "1", "largest ADL loss of one account as a fraction of its "
                                           "equity at the mark before its first ADL"),
    Variable("haircut_rate", "1", "socialised loss / eligible profit, over the settlements that "
                                  "charged a loss (NaN when none did)"),
    Variable("haircut_rate_max", "1", "largest haircut rate of one settlement (NaN when none "
                                      "charged a loss)"),
    Variable("loss_gini", "1", "Gini coefficient of the losses borne (ADL and haircuts) across "
                               "the profitable accounts eligible to bear them (NaN when no "
                               "trader bore a loss)"),
    Variable("market_pnl", "quote", "PnL traders realised against the market at the fill prices "
                                    "(money entering or leaving the venue through trades)"),
    Variable("fee_revenue", "quote", "the platform's share of liquidation fees"),
    Variable("trader_balance_change", "quote", "change of the traders' total cash balance over "
                                               "the path (realised; open positions at cost)"),
)

INDEX = {v.name: k for k, v in enumerate(PATH_METRICS)}
N_METRICS = len(PATH_METRICS)

# Module-level integer constants: numba treats them as compile-time constants.
SHORTFALL = INDEX["shortfall"]
FUND_PAID = INDEX["fund_paid"]
ADL_COST = INDEX["adl_cost"]
SOCIALISED_LOSS = INDEX["socialised_loss"]
PLATFORM_LOSS = INDEX["platform_loss"]
RESIDUAL = INDEX["residual"]
N_LIQUIDATIONS = INDEX["n_liquidations"]
N_SHORTFALLS = INDEX["n_shortfalls"]
LIQUIDATED_NOTIONAL = INDEX["liquidated_notional"]
FUND_INFLOW = INDEX["fund_inflow"]
FUND_FINAL = INDEX["fund_final"]
FUND_MIN = INDEX["fund_min"]
FUND_DEPLETED = INDEX["fund_depleted"]
TIME_TO_DEPLETION = INDEX["time_to_depletion"]
N_ADL = INDEX["n_adl"]
ADL_NOTIONAL = INDEX["adl_notional"]
CASCADE_ROUNDS = INDEX["cascade_rounds"]
CASCADE_CAP_HITS = INDEX["cascade_cap_hits"]
CASCADE_MOVE = INDEX["cascade_move"]
FUNDING_VOLUME = INDEX["funding_volume"]
MARK_INDEX_GAP = INDEX["mark_index_gap"]
SHORTFALL_QUOTE = INDEX["shortfall_quote"]
N_PARTIAL = INDEX["n_partial_liquidations"]
N_STOPS = INDEX["n_stops"]
STOP_NOTIONAL = INDEX["stop_notional"]
N_ALERTS_HIT = INDEX["n_margin_alerts"]
N_TOPUPS = INDEX["n_topups"]
TOPUP_VOLUME = INDEX["topup_volume"]
FUND_NEED = INDEX["fund_need"]
FUND_OVERFLOW = INDEX["fund_overflow"]
PLATFORM_MAX_STEP = INDEX["platform_max_step"]
N_ACCOUNTS_HIT = INDEX["n_accounts_hit"]
ADL_MAX_LOSS_FRACTION = INDEX["adl_max_loss_fraction"]
HAIRCUT_RATE = INDEX["haircut_rate"]
HAIRCUT_RATE_MAX = INDEX["haircut_rate_max"]
LOSS_GINI = INDEX["loss_gini"]
MARKET_PNL = INDEX["market_pnl"]
FEE_REVENUE = INDEX["fee_revenue"]
TRADER_BALANCE_CHANGE = INDEX["trader_balance_change"]

# Who bore the loss: the ``bearer`` coordinate of ``loss_share`` and the metric of each.
BEARERS = {"fund": "fund_paid", "adl": "adl_cost", "socialised": "socialised_loss",
           "platform": "platform_loss", "residual": "residual"}

# Kernel parameters, packed in one float64 array in this order.
PARAMS = ("fund_initial", "fee_rate", "fee_share", "slippage", "step_minutes", "adl_basis",
          "impact_k", "impact_gamma", "permanent", "permanent_decay", "used_decay",
          "depth_floor", "max_rounds", "funding_every", "funding_mode", "funding_rate",
          "funding_interest", "funding_clamp", "funding_cap", "req_fee", "mm_entry",
          "liq_style", "partial_fraction", "partial_min_tier", "surplus_to_trader",
          "topup_prob", "topup_target", "inverse", "n_alerts", "alert0", "alert1", "alert2",
          "alert3", "fund_cap", "adl_ranking", "settle_every", "record_every",
          "detect")
MAX_ALERTS = 4
P = {name: k for k, name in enumerate(PARAMS)}
N_PARAMS = len(PARAMS)
FUNDING_MODES = {"none": 0, "constant": 1, "premium": 2}

# Loss-policy layer codes shared by the kernel and the reference.
LAYER_CODES = {"insurance_fund": 0, "adl": 1, "socialised": 2, "platform": 3}
ADL_BASIS_CODES = {"collateral": 0, "entry_value": 1}
ADL_RANKINGS = {"score": 0, "pro_rata": 1, "leverage": 2, "risk_based": 3}
LIQUIDATION_STYLES = {"full": 0, "partial": 1, "stepwise": 2}


def variables_markdown() -> str:
    """The README's table of output variables."""
    rows = ["| variable | units | meaning |", "| --- | --- | --- |"]
    rows += [f"| `{v.name}` | {v.units} | {v.long_name} |" for v in PATH_METRICS]
    return "\n".join(rows) + "\n"
