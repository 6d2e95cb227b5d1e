"""Plain-Python reference of the liquidation step and the loss waterfalls.

Written for reading, not speed: every step asks every account what happens
to it at the mark (no thresholds), and each rule is spelled out once. The
numba kernel (:mod:`stress.exchange.kernels`) must give the same numbers;
:class:`VectorisedEngine` swaps only the per-step scan for numpy and is the
baseline of ``benchmarks/bench_kernel.py``. Positions are linear (an inverse
book is passed in ``1/P``, see :mod:`stress.exchange.contracts`).

Rules of one step at mark price ``P``:

1. The requirement of a position is its maintenance margin (tier table, on
   the notional at ``P``, or at entry with ``mm_entry``) plus ``req_fee`` × its
   notional at ``P``. Equity is collateral plus uPnL at ``P``.
2. Each account, in account order, is liquidated if equity ≤ requirement;
   else its stop-loss fires if ``P`` crossed it; else, if its margin ratio
   (requirement / equity) reached its next alert level, the alert is counted
   and it may top up (see :meth:`ReferenceEngine.alert`). Alerts are handled
   first; stops and liquidations are the round's orders.
3. The orders of a round fill at ``X = P·(1 − s·(slippage + gap + impact))``
   (``s`` = +1 long, −1 short), the impact from the round's planned volume per
   side. A stop closes the whole position, with no fee. A liquidation closes it
   in full, or (``partial``) a fraction / (``stepwise``) what exceeds the next
   lower tier's cap, re-checking at ``P`` after each part, until healthy or
   the rest must go. On a full close the equity at ``X`` pays the liquidation
   fee (as far as it goes); the rest, if positive, is surplus for the fund (or
   the trader's); if negative, it is the shortfall.
4. All surpluses and fees of the round reach the fund before any shortfall of
   the round is paid. Shortfalls then go down the policy's waterfall in
   account order.
5. ``insurance_fund`` pays what it holds. ``adl`` closes ``U / |BP − X|`` units
   of opposite-side winners (ranked by PnL% × effective leverage at ``P``) at
   the bankruptcy price ``BP``. ``socialised`` defers to the end of the step,
   when the pot is charged to accounts with positive uPnL, pro rata, each at
   most its uPnL; what it cannot cover continues down the waterfall.
   ``platform`` absorbs everything. What is left is ``residual``.
6. The ADL queue of each side is ranked once per round, at the mark, when
   first needed, and consumed in order: the account at its head is closed
   until the need is met or it is exhausted (closed, or its margin spent). A
   socialised haircut changes scores, so the queues are ranked again after it.
"""

from __future__ import annotations

import math

import numpy as np

from stress.exchange import margin
from stress.exchange.tiers import TierTable
from stress.policies import adl as adl_rules
from stress.runner.variables import ADL_RANKINGS, INDEX, N_METRICS

_PHI = 0.6180339887498949
_MAX_PARTIAL_STEPS = 64

DEFAULTS = {"impact_k": 0.0, "impact_gamma": 1.0, "permanent": 0.0, "permanent_decay": 1.0,
            "used_decay": 1.0, "depth_floor": 0.0, "max_rounds": 50, "funding_every": 0,
            "funding_mode": 0, "funding_rate": 0.0, "funding_interest": 0.0,
            "funding_clamp": 0.0, "funding_cap": 1.0, "req_fee": 0.0, "mm_entry": 0,
            "liq_style": 0, "partial_fraction": 0.5, "partial_min_tier": 1,
            "surplus_to_trader": 0, "topup_prob": 0.0, "topup_target": 0.0, "inverse": 0,
            "alerts": (), "fund_cap": math.inf, "adl_ranking": 0, "settle_every": 1,
            "record_every": 0}
RANKINGS = {code: name for name, code in ADL_RANKINGS.items()}


class ReferenceEngine:
    """One path, one book, one policy; ``run()`` returns the metrics array.

    ``liquidity`` is a :class:`stress.market.liquidity.PathLiquidity` (None: the
    mark is the index, depth is infinite, no gaps); ``stop``, ``budget`` and
    ``u`` are the accounts' stop prices (NaN = none), top-up budgets and uniform
    draws; ``params`` are the keywords of
    :func:`stress.exchange.kernels.make_params` beyond the ones named here.
    """

    def __init__(self, prices, qty, entry, collateral, tiers: TierTable, layers: list[str],
                 fund_initial: float, fee_rate: float = 0.0, fee_share: float = 1.0,
                 slippage: float = 0.0, step_minutes: float = 1.0,
                 adl_pnl_basis: str = "collateral", liquidity=None, stop=None, budget=None,
                 u=None, **params):
        self.prices = [float(p) for p in prices]
        n = len(self.prices)
        if liquidity is None:
            self.mark0, self.gap_bid, self.gap_ask = list(self.prices), [0.0] * n, [0.0] * n
            self.depth_bid = self.depth_ask = [math.inf] * n
        else:
            self.mark0 = [float(v) for v in liquidity.mark]
            self.depth_bid = [float(v) for v in liquidity.depth_bid]
            self.depth_ask = [float(v) for v in liquidity.depth_ask]
            self.gap_bid = [float(v) for v in liquidity.gap_bid]
            self.gap_ask = [float(v) for v in liquidity.gap_ask]
        self.qty = [float(q) for q in qty]
        k = len(self.qty)
        self.entry = [float(e) for e in entry]
        self.collateral = [float(c) for c in collateral]
        self.stop = [math.nan] * k if stop is None else [float(s) for s in stop]
        self.budget = [0.0] * k if budget is None else [float(b) for b in budget]
        self.u = [0.0] * k if u is None else [float(v) for v in u]
        self.alert_next = [0] * k
        self.decisions = [0] * k
        self.tiers = tiers
        self.layers = list(layers)
        self.fund = float(fund_initial)
        self.fee_rate = fee_rate
        self.fee_share = fee_share
        self.slippage = slippage
        self.step_minutes = step_minutes
        self.adl_pnl_basis = adl_pnl_basis
        unknown = set(params) - set(DEFAULTS)
        if unknown:
            raise TypeError(f"unknown parameters {sorted(unknown)}")
        self.p = {**DEFAULTS, **params}
        self.alerts = [float(a) for a in self.p["alerts"]]
        self.m = {name: 0.0 for name in INDEX}
        self.m["time_to_depletion"] = math.nan
        self.m["haircut_rate_max"] = math.nan
        self.m["fund_min"] = self.fund
        self.ranking = RANKINGS[int(self.p["adl_ranking"])]
        self.pending = []  # socialised losses waiting for the settlement
        # The fund's asks and inflows, for fund_need.
        self.cum_in = self.cum_out = self.need = 0.0
        # Socialised settlement periods: each account's equity at the period start.
        self.period = 0
        self.period_mark = self.mark0[0]
        self.snapshot = {}  # account -> (period, equity at the period start)
        # Who bore what: per account, in the order they became eligible.
        self.eligible = {}  # account -> [loss, adl loss, equity before the first ADL]
        self.eligible_profit = 0.0
        self.trajectory = [self.fund] if self.p["record_every"] else []
        self.cash0 = math.fsum(self.collateral)

    # ---------------------------------------------------------------- margin
    def requirement(self, i: int, mark: float) -> float:
        q, e = abs(self.qty[i]), self.entry[i]
        notional = q * (e if self.p["mm_entry"] else mark)
        return float(self.tiers.maintenance_margin(notional)) + self.p["req_fee"] * q * mark

    def equity(self, i: int, mark: float) -> float:
        return margin.equity(self.qty[i], self.entry[i], self.collateral[i], mark)

    def breached(self, i: int, mark: float, level: float = 1.0) -> bool:
        """Margin ratio (requirement / equity) ≥ ``level``: equity ≤ requirement / level."""
        return (self.qty[i] != 0
                and self.equity(i, mark) <= (1.0 / level) * self.requirement(i, mark))

    def action(self, i: int, mark: float) -> str | None:
        q = self.qty[i]
        if q == 0:
            return None
        if self.breached(i, mark):
            return "liquidate"
        stop = self.stop[i]
        if not math.isnan(stop) and (mark <= stop if q > 0 else mark >= stop):
            return "stop"
        a = self.alert_next[i]
        if a < len(self.alerts) and self.breached(i, mark, self.alerts[a]):
            return "alert"
        return None

    def candidates(self, mark: float) -> list[int]:
        return [i for i in range(len(self.qty)) if self.action(i, mark) is not None]

    # ------------------------------------------------------------------- step
    def run(self) -> np.ndarray:
        p = self.p
        disp = 1.0  # the mark's displacement by the permanent impact of forced orders
        used = {1.0: 0.0, -1.0: 0.0}  # depth consumed, by the side of the closed positions
        premiums = []
        for t in range(1, len(self.prices)):
            if disp != 1.0:
                disp = 1.0 + (disp - 1.0) * p["permanent_decay"]
            used = {k: v * p["used_decay"] for k, v in used.items()}
            mark = self.mark0[t] * disp
            if p["funding_every"] and t % int(p["funding_every"]) == 0:
                premium = sum(premiums) / len(premiums) if premiums else 0.0
                self.pay_funding(self.funding_rate(premium), mark)
                premiums = []
            start = mark
            rounds = 0
            platform_before = self.m["platform_loss"]
            while True:
                acts = [(i, self.action(i, mark)) for i in self.candidates(mark)]
                for i, a in acts:
                    if a == "alert":
                        self.alert(i, mark)
                orders = [(i, a) for i, a in acts if a != "alert"]
                if not orders:
                    break
                if rounds == p["max_rounds"]:
                    self.m["cascade_cap_hits"] += 1
                    break
                rounds += 1
                impact = {}
                fills = {}
                for s, depth, gap in ((1.0, self.depth_bid[t], self.gap_bid[t]),
                                      (-1.0, self.depth_ask[t], self.gap_ask[t])):
                    flow = sum(self.planned(i, a, mark) * mark for i, a in orders
                               if margin.side(self.qty[i]) == s)
                    left = max(depth - used[s], p["depth_floor"])
                    if flow <= 0 or p["impact_k"] == 0:
                        impact[s] = 0.0
                    elif left <= 0:
                        impact[s] = 0.99
                    else:
                        impact[s] = min(p["impact_k"] * (flow / left) ** p["impact_gamma"], 0.99)
                    away = self.slippage + gap + impact[s]
                    fills[s] = mark * (1.0 - min(away, 0.99)) if s > 0 else mark * (1.0 + away)
                    used[s] += flow
                self.step(t, mark, orders, fills)
                move = 1.0 - p["permanent"] * impact[1.0] + p["permanent"] * impact[-1.0]
                if move == 1.0:
                    break
                mark *= move
                disp *= move
            self.m["cascade_rounds"] = max(self.m["cascade_rounds"], rounds)
            self.m["cascade_move"] = max(self.m["cascade_move"], abs(mark / start - 1.0))
            premiums.append(mark / self.prices[t] - 1.0)
            self.m["mark_index_gap"] = max(self.m["mark_index_gap"], abs(premiums[-1]))
            boundary = t % max(int(p["settle_every"]), 1) == 0 or t == len(self.prices) - 1
            if boundary:
                self.settle_socialised(t, mark)
                self.period += 1
                self.period_mark = mark
            self.m["fund_min"] = min(self.m["fund_min"], self.fund)
            self.m["platform_max_step"] = max(self.m["platform_max_step"],
                                              self.m["platform_loss"] - platform_before)
            if p["record_every"] and t % int(p["record_every"]) == 0:
                self.trajectory.append(self.fund)
        self.m["fund_final"] = self.fund
        self.finish()
        out = np.empty(N_METRICS)
        for name, k in INDEX.items():
            out[k] = self.m[name]
        return out

    def funding_rate(self, premium: float) -> float:
        p = self.p
        if p["funding_mode"] == 1:
            f = p["funding_rate"]
        else:
            c = p["funding_clamp"]
            f = premium + min(max(p["funding_interest"] - premium, -c), c)
        return min(max(f, -p["funding_cap"]), p["funding_cap"])

    def pay_funding(self, f: float, mark: float) -> None:
        """Payers (longs if f > 0) pay f × notional; receivers share it pro rata."""
        notional = {s: sum(abs(q) * mark for q in self.qty if margin.side(q) == s)
                    for s in (1.0, -1.0)}
        if f == 0 or notional[1.0] == 0 or notional[-1.0] == 0:
            return
        payer = 1.0 if f > 0 else -1.0
        total = abs(f) * notional[payer]
        for i, q in enumerate(self.qty):
            if q == 0:
                continue
            n = abs(q) * mark
            self.snap(i)
            if margin.side(q) == payer:
                self.collateral[i] -= abs(f) * n
            else:
                self.collateral[i] += total * (n / notional[-payer])
        self.m["funding_volume"] += total

    def alert(self, i: int, mark: float) -> None:
        """Count the alert levels crossed; maybe top up (the k-th decision of an account
        tops up when ``frac(u + k·φ) < topup_prob``) to the target margin ratio, at most
        the budget left; then re-arm the alerts above the new ratio."""
        level = 0.0
        while (self.alert_next[i] < len(self.alerts)
               and self.breached(i, mark, self.alerts[self.alert_next[i]])):
            level = self.alerts[self.alert_next[i]]
            self.m["n_margin_alerts"] += 1
            self.alert_next[i] += 1
        prob = self.p["topup_prob"]
        if self.budget[i] <= 0 or prob <= 0 or level <= 0:
            return
        v = self.u[i] + self.decisions[i] * _PHI
        v -= math.floor(v)
        self.decisions[i] += 1
        if v >= prob:
            return
        target = self.p["topup_target"] or 0.5 * level
        req, equity = self.requirement(i, mark), self.equity(i, mark)
        add = min(req / target - equity, self.budget[i])
        if add <= 0:
            return
        self.snap(i)
        self.snapshot[i] = (self.period, self.snapshot[i][1] + add)  # a deposit: no profit
        self.collateral[i] += add
        self.budget[i] -= add
        self.m["n_topups"] += 1
        self.m["topup_volume"] += add
        # Re-armed on the equity after the top-up (as the sum: a ratio landing exactly on
        # a level counts as crossing it, and the rounding must be the kernel's).
        equity += add
        self.alert_next[i] = 0
        while (self.alert_next[i] < len(self.alerts)
               and equity <= (1.0 / self.alerts[self.alert_next[i]]) * req):
            self.alert_next[i] += 1

    def planned(self, i: int, act: str, mark: float) -> float:
        """Quantity the first order of account ``i`` in a round closes."""
        q = abs(self.qty[i])
        style = self.p["liq_style"]
        if act != "liquidate" or style == 0:
            return q
        k = self.tiers.index(q * mark)
        if style == 1:
            return q if k + 1 < self.p["partial_min_tier"] else self.p["partial_fraction"] * q
        return q if k == 0 else q - float(self.tiers.cap[k - 1]) / mark

    def step(self, t: int, mark: float, orders: list, fills: dict) -> None:
        """One round at ``mark``: close or reduce, credit, then pay shortfalls."""
        shortfalls = []
        for i, act in orders:
            x = fills[margin.side(self.qty[i])]
            if act == "liquidate" and self.p["liq_style"] != 0 and self.reduce(i, mark, x):
                continue
            shortfalls.append(self.close(i, mark, x, act))
        self.queues = {1.0: None, -1.0: None}  # ranked at this mark on first use
        for sf in shortfalls:
            if sf is not None:
                self.m["shortfall"] += sf["amount"]
                self.m["shortfall_quote"] += (sf["amount"] / mark if self.p["inverse"]
                                              else sf["amount"])
                self.m["n_shortfalls"] += 1
                self.waterfall(t, mark, sf, sf["amount"], 0, self.pending)

    def reduce(self, i: int, mark: float, x: float) -> bool:
        """Partial or stepwise liquidation at fill ``x``; True if the account is healthy
        after it, False if the rest is to be closed."""
        for _ in range(_MAX_PARTIAL_STEPS):
            q = self.qty[i]
            dq = self.planned(i, "liquidate", mark)
            if dq >= abs(q):
                return False
            fee = self.fee_rate * dq * x
            if margin.equity(q, self.entry[i], self.collateral[i], x) - fee <= 0:
                return False
            s = margin.side(q)
            self.snap(i)
            self.collateral[i] += s * dq * (x - self.entry[i]) - fee
            self.qty[i] = q - s * dq
            self.m["market_pnl"] += s * dq * (x - self.entry[i])
            self.pay_fee(fee)
            self.m["n_partial_liquidations"] += 1
            self.m["liquidated_notional"] += dq * mark
            if not self.breached(i, mark):
                return True
        return False

    def close(self, i: int, mark: float, x: float, act: str) -> dict | None:
        """Close account ``i`` at fill ``x``. The account keeps its cash; a liquidation
        pays the fee from it and hands the surplus to the fund (unless it goes to the
        trader). Returns its shortfall, if any: the negative cash, written off."""
        q, e, c = self.qty[i], self.entry[i], self.collateral[i]
        s = margin.side(q)
        self.snap(i)
        self.m["market_pnl"] += q * (x - e)
        cash = margin.equity(q, e, c, x)
        if act == "stop":
            self.m["n_stops"] += 1
            self.m["stop_notional"] += abs(q) * mark
        else:
            if cash > 0:
                fee_paid = min(self.fee_rate * abs(q) * x, cash)
                self.pay_fee(fee_paid)
                cash -= fee_paid
                if not self.p["surplus_to_trader"] and cash > 0:
                    self.fund_in(cash)
                    cash = 0.0
            self.m["n_liquidations"] += 1
            self.m["liquidated_notional"] += abs(q) * mark
        self.qty[i] = 0.0
        self.collateral[i] = max(cash, 0.0)
        if cash >= 0:
            return None
        return {"amount": -cash, "side": s, "bp": margin.bankruptcy_price(q, e, c), "x": x}

    def settle_socialised(self, t: int, mark: float) -> None:
        """End of a settlement period: charge the socialised pot; the rest goes on down
        the waterfall (with the ADL queues ranked at this mark)."""
        if not self.pending:
            return
        pot = sum(p[0] for p in self.pending)
        charged = self.socialise(pot, mark)
        self.m["socialised_loss"] += charged
        left = (pot - charged) / pot
        if left > 0 or charged > 0:
            self.queues = {1.0: None, -1.0: None}
        if left > 0:
            for amount, sf, nxt in self.pending:
                self.waterfall(t, mark, sf, amount * left, nxt, [])
        self.pending = []

    # ------------------------------------------------------------- the fund
    def fund_in(self, amount: float) -> None:
        """Inflow to the fund; above its cap the excess goes to the platform."""
        self.fund += amount
        self.cum_in += amount
        self.m["fund_inflow"] += amount
        if self.fund > self.p["fund_cap"]:
            self.m["fund_overflow"] += self.fund - self.p["fund_cap"]
            self.fund = self.p["fund_cap"]

    def pay_fee(self, fee: float) -> None:
        to_fund = fee * self.fee_share
        self.m["fee_revenue"] += fee - to_fund
        self.fund_in(to_fund)

    # ------------------------------------------------- settlement periods
    def snap(self, i: int) -> None:
        """Before account ``i`` changes: keep its equity at the period's start."""
        if self.snapshot.get(i, (None,))[0] != self.period:
            self.snapshot[i] = (self.period, margin.equity(self.qty[i], self.entry[i],
                                                          self.collateral[i], self.period_mark))

    def period_profit(self, i: int, mark: float) -> float:
        """Profit over the settlement period: equity now minus at the period start."""
        period, start = self.snapshot.get(i, (None, 0.0))
        if period != self.period:
            return self.qty[i] * (mark - self.period_mark)
        return margin.equity(self.qty[i], self.entry[i], self.collateral[i], mark) - start

    def mark_eligible(self, i: int) -> None:
        self.eligible.setdefault(i, [0.0, 0.0, 0.0])

    # ---------------------------------------------------------------- layers
    def waterfall(self, t, mark, sf, remaining, start, pending) -> None:
        for li in range(start, len(self.layers)):
            if remaining <= 0:
                break
            layer = self.layers[li]
            if layer == "insurance_fund":
                self.cum_out += remaining
                self.need = max(self.need, self.cum_out - self.cum_in)
                pay = min(remaining, self.fund)
                if remaining > self.fund and not self.m["fund_depleted"]:
                    self.m["fund_depleted"] = 1.0
                    self.m["time_to_depletion"] = t * self.step_minutes
                self.fund -= pay
                remaining -= pay
                self.m["fund_paid"] += pay
                self.m["fund_min"] = min(self.m["fund_min"], self.fund)
            elif layer == "adl":
                covered = self.adl(sf, remaining, mark)
                self.m["adl_cost"] += covered
                remaining -= covered
            elif layer == "socialised":
                pending.append((remaining, sf, li + 1))
                remaining = 0.0
            elif layer == "platform":
                self.m["platform_loss"] += remaining
                remaining = 0.0
        if remaining > 0:
            self.m["residual"] += remaining

    def winners(self, bside: float, mark: float) -> list[int]:
        """Opposite-side accounts of a bankrupt ``bside`` position in profit at ``mark``,
        in account order; they become eligible to bear the loss."""
        found = [i for i, q in enumerate(self.qty)
                 if q * bside < 0 and margin.unrealized_pnl(q, self.entry[i], mark) > 0]
        for i in found:
            self.mark_eligible(i)
        return found

    def adl_queue(self, bside: float, mark: float) -> list[int]:
        """Winners by the queue ranking, highest first, ties in account order."""
        ranked = []
        for i in self.winners(bside, mark):
            q, e, c = self.qty[i], self.entry[i], self.collateral[i]
            if self.ranking == "leverage":
                eq = margin.equity(q, e, c, mark)
                key = abs(q) * mark / eq if eq > 0 else math.inf
            else:
                key = margin.adl_score(q, e, c, mark, self.adl_pnl_basis)
            ranked.append((-key, i))
        ranked.sort()
        return [i for _, i in ranked]

    def adl_cap(self, i: int, bp: float) -> float:
        """Units of ``i`` closable at ``bp`` without making it bankrupt."""
        q, e, c = self.qty[i], self.entry[i], self.collateral[i]
        per_unit = margin.side(q) * (bp - e)
        if per_unit >= 0:
            return abs(q)
        return 0.0 if c <= 0 else min(abs(q), c / -per_unit)

    def adl(self, sf: dict, need: float, mark: float) -> float:
        unit_cost = abs(sf["bp"] - sf["x"])
        if unit_cost <= 0 or need <= 0:
            return 0.0
        need_qty = need / unit_cost
        if self.ranking in ("pro_rata", "risk_based"):
            who = self.winners(sf["side"], mark)
            size = np.array([abs(self.qty[i]) for i in who])
            profit = np.array([margin.unrealized_pnl(self.qty[i], self.entry[i], mark)
                               for i in who])
            equity = np.array([margin.equity(self.qty[i], self.entry[i], self.collateral[i],
                                             mark) for i in who])
            cap = np.array([self.adl_cap(i, sf["bp"]) for i in who])
            takes = adl_rules.allocate(self.ranking, size, profit, equity, cap,
                                       np.zeros(len(who)), mark, need_qty)
            covered = sum(self.adl_close(i, float(k), sf, mark)
                          for i, k in zip(who, takes) if k > 0)
            return need if cap.sum() >= need_qty or covered > need else covered
        if self.queues[sf["side"]] is None:
            self.queues[sf["side"]] = self.adl_queue(sf["side"], mark)
        queue = self.queues[sf["side"]]
        covered = 0.0
        while queue:
            i = queue[0]
            if self.qty[i] == 0:
                queue.pop(0)
                continue
            cap = self.adl_cap(i, sf["bp"])
            if cap >= need_qty:
                # The need is met; the account stays at the head for the next loss.
                self.adl_close(i, need_qty, sf, mark)
                return need
            if cap > 0:
                covered += self.adl_close(i, cap, sf, mark)
                need_qty -= cap
            queue.pop(0)
        return min(covered, need)

    def adl_close(self, i: int, take: float, sf: dict, mark: float) -> float:
        """Close ``take`` units of ``i`` at the bankruptcy price; returns its loss against
        the market fill."""
        q, e, c = self.qty[i], self.entry[i], self.collateral[i]
        s = margin.side(q)
        self.snap(i)
        record = self.eligible[i]
        if record[1] == 0:
            record[2] = margin.equity(q, e, c, mark)
        realised = s * take * (sf["bp"] - e)
        if realised < 0 and c + realised < 0:
            realised = -c  # margin-capped: exactly its margin (rounding)
        self.collateral[i] = c + realised
        self.m["market_pnl"] += s * take * (sf["x"] - e)
        cost = take * abs(sf["bp"] - sf["x"])
        record[0] += cost
        record[1] += cost
        self.qty[i] = 0.0 if take >= abs(q) else q - s * take
        self.m["n_adl"] += 1
        self.m["adl_notional"] += take * sf["bp"]
        return cost

    def socialise(self, pot: float, mark: float) -> float:
        """Charge ``pot`` pro rata to the period's profits, each at most its profit."""
        profits = [(i, self.period_profit(i, mark)) for i in range(len(self.qty))]
        winners = [(i, p) for i, p in profits if p > 0]
        total = sum(p for _, p in winners)
        if total <= 0:
            return 0.0
        for i, p in winners:
            charge = p if pot >= total else pot * (p / total)
            self.mark_eligible(i)
            self.collateral[i] -= charge
            self.eligible[i][0] += charge
        charged = total if pot >= total else pot
        self.eligible_profit += total
        rate = charged / total
        if not self.m["haircut_rate_max"] >= rate:
            self.m["haircut_rate_max"] = rate
        return charged

    def finish(self) -> None:
        """End of path: fund need, haircut rate, fairness, the traders' cash change."""
        self.m["fund_need"] = self.need if "insurance_fund" in self.layers else math.nan
        self.m["haircut_rate"] = (self.m["socialised_loss"] / self.eligible_profit
                                  if self.eligible_profit > 0 else math.nan)
        losses = [r[0] for r in self.eligible.values()]
        self.m["n_accounts_hit"] = sum(1 for v in losses if v > 0)
        self.m["adl_max_loss_fraction"] = max(
            [r[1] / r[2] if r[2] > 0 else math.inf for r in self.eligible.values() if r[1] > 0],
            default=0.0)
        self.m["loss_gini"] = gini(losses)
        self.m["trader_balance_change"] = math.fsum(self.collateral) - self.cash0


def gini(values) -> float:
    """Gini coefficient: the mean absolute difference over twice the mean,
    ``Σ_i Σ_j |x_i − x_j| / (2 n Σ x)``, computed on the sorted sample as
    ``Σ_i (2i − n − 1) x_(i) / (n Σ x)``; NaN for an empty or all-zero sample."""
    x = sorted(values)
    n, total = len(x), sum(x)
    if n == 0 or total <= 0:
        return math.nan
    return sum((2 * i - n - 1) * v for i, v in enumerate(x, start=1)) / (n * total)


class VectorisedEngine(ReferenceEngine):
    """The same rules with the per-step scan vectorised in numpy.

    The straightforward way to write this model in numpy: every step computes
    every account's equity and requirement (and its stop and alert tests);
    only the accounts flagged are then handled one by one. Baseline of the
    benchmark.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.e_arr = np.asarray(self.entry)
        self.s_arr = np.asarray(self.stop)
        self._sync()

    def candidates(self, mark: float) -> list[int]:
        q, e, c = self.q_arr, self.e_arr, self.c_arr
        aq = np.abs(q)
        basis = aq * e if self.p["mm_entry"] else aq * mark
        req = self.tiers.maintenance_margin_array(basis) + self.p["req_fee"] * aq * mark
        equity = c + q * (mark - e)
        flag = equity <= req
        with np.errstate(invalid="ignore"):
            flag |= np.where(q > 0, mark <= self.s_arr, mark >= self.s_arr)
        if self.alerts:
            a = np.asarray(self.alert_next)
            levels = np.asarray(self.alerts + [np.inf])[np.minimum(a, len(self.alerts))]
            flag |= (a < len(self.alerts)) & (equity <= (1.0 / levels) * req)
        hit = np.flatnonzero((q != 0) & flag)
        return [i for i in hit.tolist() if self.action(i, mark) is not None]

    def step(self, t, mark, orders, fills):
        super().step(t, mark, orders, fills)
        self._sync()

    def alert(self, i, mark):
        super().alert(i, mark)
        self._sync()

    def settle_socialised(self, t, mark):
        had = bool(self.pending)
        super().settle_socialised(t, mark)
        if had:
            self._sync()

    def pay_funding(self, f, mark):
        super().pay_funding(f, mark)
        self._sync()

    def _sync(self):
        # Keep the arrays in step with the lists the shared rules update.
        self.q_arr = np.asarray(self.qty)
        self.c_arr = np.asarray(self.collateral)
