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

# Loss-policy layer codes shared by the kernel and the reference.
LAYER_CODES = {"insurance_fund": 0, "adl": 1, "socialised": 2, "platform": 3}
ADL_BASIS_CODES = {"collateral": 0, "entry_value": 1}
