"""Margin arithmetic of perpetual-futures positions, in plain Python.

These are the reference formulas: the kernels in :mod:`stress.exchange.kernels`
compute the same quantities and the tests check both against each other and
against the exchanges' published examples (:mod:`stress.exchange.conformance`).

The first group of functions (``unrealized_pnl`` to ``adl_score``) covers the
simulator's case: a linear (quote-margined) isolated position, ``qty`` signed
(+ long, − short) in base units, prices and money in quote units.

The second group generalises them to what the venues publish:

* **Contracts.** ``linear``: ``qty`` in base units, PnL, collateral and
  margin in quote. ``inverse`` (coin-margined): ``qty`` in contracts of
  ``contract_multiplier`` USD each, ``Q = |qty|·contract_multiplier`` USD; PnL,
  collateral and margin in coin, notional ``Q/price`` in coin.
* **Collateral.** Isolated: the position margin. Cross:
  ``C = wallet_balance − other_positions_mm + other_positions_upnl``.
* **Requirement** (:class:`MarginRule`): maintenance margin
  ``MM(n) = n·mmr − maint_amount`` with the tier holding ``n``, on the notional at
  the price (``mm_basis="mark"``) or at entry (``"entry"``), plus a taker fee
  ``fee_rate`` on the notional at the price (``fee_basis="price"``), at entry,
  or at the bankruptcy price (Bybit inverse).

An inverse position is a linear one in ``u = 1/price``: its equity
``C + s·Q·(1/E − u)`` and coin notional ``Q·u`` are those of a linear position
of side ``−s``, size ``Q`` and entry ``1/E``. The solvers work in ``u`` (``u = price``
for linear contracts), where every equation is linear within a tier.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from typing import NamedTuple

from stress.exchange.tiers import TierTable


def side(qty: float) -> float:
    """+1 for a long, −1 for a short, 0 for no position."""
    return (qty > 0) - (qty < 0)


def unrealized_pnl(qty: float, entry_price: float, mark_price: float) -> float:
    """``qty·(mark − entry)`` in quote."""
    return qty * (mark_price - entry_price)


def equity(qty: float, entry_price: float, collateral: float, mark_price: float) -> float:
    """Isolated position equity (margin balance): collateral plus unrealised PnL."""
    return collateral + unrealized_pnl(qty, entry_price, mark_price)


def initial_margin(qty: float, price: float, leverage: float) -> float:
    return abs(qty) * price / leverage


def roe(qty: float, entry_price: float, mark_price: float, leverage: float) -> float:
    """Return on the initial margin ``|qty|·entry/leverage``."""
    return unrealized_pnl(qty, entry_price, mark_price) / initial_margin(qty, entry_price, leverage)


def maintenance_margin(notional: float, tiers: TierTable | None = None, mmr: float | None = None,
                       maint_amount: float = 0.0) -> float:
    """``notional·mmr − maint_amount``, with the tier holding ``notional`` if tiers are given."""
    if tiers is not None:
        return tiers.maintenance_margin(notional)
    return notional * mmr - maint_amount


def is_liquidatable(qty: float, entry_price: float, collateral: float, mark_price: float,
                    tiers: TierTable) -> bool:
    """The liquidation trigger: equity ≤ maintenance margin at the mark."""
    if qty == 0:
        return False
    mm = tiers.maintenance_margin(abs(qty) * mark_price)
    return equity(qty, entry_price, collateral, mark_price) <= mm


def margin_ratio(maintenance_margin: float, margin_balance: float) -> float:
    """Maintenance margin / margin balance (≥ 1 means liquidation)."""
    return maintenance_margin / margin_balance if margin_balance > 0 else math.inf


def bankruptcy_price(qty: float, entry_price: float, collateral: float) -> float:
    """The price at which the position's equity is exactly zero."""
    return entry_price - collateral / qty


def liquidation_price(qty: float, entry_price: float, collateral: float,
                      tiers: TierTable) -> float:
    """Price at which equity equals the maintenance margin, the tier taken at that price.

    For a long this is the highest price at which the position is liquidatable,
    for a short the lowest. With a continuous table (maintenance amounts from
    the cumulative rule) it is the unique root of ``equity(p) = MM(|q|·p)``.
    The isolated linear case of :func:`position_liquidation_price`.
    """
    return position_liquidation_price(Position(qty, entry_price, collateral),
                                      MarginRule(tiers=tiers)).price


def adl_score(qty: float, entry_price: float, collateral: float, mark_price: float,
              pnl_basis: str = "collateral") -> float:
    """ADL queue score: profit % times effective leverage (loss % divided by it).

    ``pnl_basis="collateral"`` takes PnL% on the position's margin (the issue's
    ``(uPnL / collateral)·(notional / equity)``); ``"entry_value"`` takes it on the
    entry notional (BitMEX/Bybit/Binance documentation). Effective leverage is
    mark notional over equity. Without margin (collateral or equity ≤ 0) the
    score is ±inf: such a winner is first in the queue.
    """
    upnl = unrealized_pnl(qty, entry_price, mark_price)
    eq = collateral + upnl
    base = collateral if pnl_basis == "collateral" else abs(qty) * entry_price
    if base <= 0 or eq <= 0:
        # No margin left (spent by an earlier ADL or by funding): infinite leverage.
        return math.inf if upnl > 0 else -math.inf
    pnl_pct = upnl / base
    eff_lev = abs(qty) * mark_price / eq
    return pnl_pct * eff_lev if pnl_pct > 0 else pnl_pct / eff_lev


# ---------------------------------------------------------------------------
# Linear and inverse contracts, cross margin, fees, tiers (venue conventions)
# ---------------------------------------------------------------------------

LINEAR = "linear"
INVERSE = "inverse"
CONTRACTS = (LINEAR, INVERSE)
MM_BASES = ("mark", "entry")
FEE_BASES = ("price", "entry", "bankruptcy_price")
MARGIN_RATIO_CONVENTIONS = ("mm_over_equity", "equity_over_mm_plus_fee")


def _check_contract(contract: str) -> None:
    if contract not in CONTRACTS:
        raise ValueError(f"contract must be one of {CONTRACTS}, got {contract!r}")


def contract_size(qty: float, contract: str = LINEAR, contract_multiplier: float = 1.0) -> float:
    """Unsigned size: ``|qty|`` base units (linear) or ``Q = |qty|·contract_multiplier`` USD
    (inverse)."""
    _check_contract(contract)
    return abs(qty) * contract_multiplier if contract == INVERSE else abs(qty)


def position_notional(qty: float, price: float, contract: str = LINEAR,
                      contract_multiplier: float = 1.0) -> float:
    """Position value at ``price``: ``|q|·price`` in quote (linear) or ``Q/price`` in coin
    (inverse)."""
    size = contract_size(qty, contract, contract_multiplier)
    return size / price if contract == INVERSE else size * price


def inverse_unrealized_pnl(qty: float, entry_price: float, mark_price: float,
                           contract_multiplier: float = 1.0) -> float:
    """Unrealised PnL of an inverse position in coin: ``s·Q·(1/E − 1/P)``.

    It is asymmetric in price: a long loses at most its coin value ``Q/E``, a
    short's loss in coin is unbounded.
    """
    return side(qty) * abs(qty) * contract_multiplier * (1.0 / entry_price - 1.0 / mark_price)


def position_pnl(qty: float, entry_price: float, mark_price: float, contract: str = LINEAR,
                 contract_multiplier: float = 1.0) -> float:
    """Unrealised PnL: ``s·q·(P − E)`` in quote (linear), ``s·Q·(1/E − 1/P)`` in coin
    (inverse)."""
    _check_contract(contract)
    if contract == INVERSE:
        return inverse_unrealized_pnl(qty, entry_price, mark_price, contract_multiplier)
    return unrealized_pnl(qty, entry_price, mark_price)


def cross_collateral(wallet_balance: float, other_positions_mm: float = 0.0,
                     other_positions_upnl: float = 0.0) -> float:
    """Collateral available to one position in cross margin (Binance's one-way formula).

    ``C = wallet_balance − other_positions_mm + other_positions_upnl`` (Binance's
    ``WB − TMM1 + UPNL1``): the wallet, less what the account's other positions
    must keep as maintenance margin, plus their unrealised PnL.
    """
    return wallet_balance - other_positions_mm + other_positions_upnl


def hyperliquid_mmr(max_leverage: float) -> float:
    """Hyperliquid's maintenance margin rate: half the initial margin at maximum leverage,
    ``mmr = 1/(2·max_leverage)``."""
    return 1.0 / (2.0 * max_leverage)


def dydx_initial_margin(qty: float, price: float, imf: float) -> float:
    """dYdX initial margin requirement ``|q|·price·imf`` (initial margin fraction)."""
    return abs(qty) * price * imf


def position_initial_margin(qty: float, price: float, leverage: float | None = None, *,
                            imf: float | None = None, contract: str = LINEAR,
                            contract_multiplier: float = 1.0) -> float:
    """Initial margin: notional at ``price`` over ``leverage``, or times ``imf`` (dYdX).

    ``|q|·price/leverage`` in quote (linear) or ``Q/price/leverage`` in coin (inverse);
    with ``imf`` the notional times the initial margin fraction.
    """
    value = position_notional(qty, price, contract, contract_multiplier)
    if imf is not None:
        return value * imf
    if leverage is None:
        raise ValueError("give leverage or imf")
    return value / leverage


def position_roe(qty: float, entry_price: float, mark_price: float, leverage: float,
                 contract: str = LINEAR, contract_multiplier: float = 1.0) -> float:
    """Return on equity: unrealised PnL over the initial margin at entry,
    ``upnl / (notional(E)/leverage)`` (both in quote, or both in coin for inverse)."""
    return (position_pnl(qty, entry_price, mark_price, contract, contract_multiplier)
            / position_initial_margin(qty, entry_price, leverage, contract=contract,
                                      contract_multiplier=contract_multiplier))


def funding_payment(qty: float, price: float, funding_rate: float, contract: str = LINEAR,
                    contract_multiplier: float = 1.0) -> float:
    """Funding **received** by the position in one interval (negative: paid).

    ``−s·notional·rate`` with the notional at ``price`` (the mark, or the oracle
    price on Hyperliquid): ``|q|·P`` in quote (linear) or ``Q/P`` in coin
    (inverse). A positive rate makes longs pay shorts.
    """
    return -side(qty) * position_notional(qty, price, contract, contract_multiplier) * funding_rate


def next_maint_amount(notional_floor: float, mmr: float, prev_mmr: float,
                      prev_maint_amount: float) -> float:
    """Maintenance amount of a tier from the one below (Binance ``cum``, Bybit/Hyperliquid
    deduction): ``floor·(mmr − prev_mmr) + prev_maint_amount``.

    This keeps ``MM(n) = n·mmr − maint_amount`` continuous at the tier floor, and
    equal to the gradient sum (each tier's rate on the part of the notional inside it).
    """
    return notional_floor * (mmr - prev_mmr) + prev_maint_amount


class TierReduction(NamedTuple):
    """One step of stepwise liquidation; tiers are 0-based indices into the table."""

    current_tier: int
    target_tier: int
    remaining_qty: float
    close_qty: float


def tier_reduction(qty: float, mark_price: float, tiers: TierTable, contract: str = LINEAR,
                   contract_multiplier: float = 1.0) -> TierReduction:
    """One step of stepwise (tiered) liquidation, a modelling convention of this project.

    The position's tier ``k`` holds its notional at the mark; the target is
    ``k − 1`` (the first tier stays). The position keeps
    ``min(|q|, cap(target)/P)`` (linear) or ``min(|q|, cap(target)·P/multiplier)``
    contracts (inverse, cap in coin) and closes the rest. ``remaining_qty`` carries
    the sign of ``qty``; ``close_qty`` is unsigned.
    """
    k = tiers.index(position_notional(qty, mark_price, contract, contract_multiplier))
    target = max(k - 1, 0)
    cap = float(tiers.kernel_cap[target])
    if contract == INVERSE:
        fits = cap * mark_price / contract_multiplier
    else:
        fits = cap / mark_price
    keep = min(abs(qty), fits)
    return TierReduction(k, target, math.copysign(keep, qty), abs(qty) - keep)


def round_to_tick(price: float, tick_size: float, up: bool) -> float:
    """Round ``price`` to a multiple of ``tick_size``: up (a long's prices) or down (a
    short's), i.e. always in the direction that is safe for the venue.

    A price already on the tick (up to float noise) stays where it is. The
    result has no more decimals than the tick (``0.1`` ticks give ``1234.5``,
    not ``1234.5000000000002``).
    """
    if not (tick_size > 0 and math.isfinite(tick_size)):
        raise ValueError(f"tick size must be a positive number, got {tick_size!r}")
    if not math.isfinite(price):
        return price
    n = price / tick_size
    nearest = round(n)
    if abs(n - nearest) <= 1e-10 * max(1.0, abs(n)):
        k = nearest
    else:
        k = math.ceil(n) if up else math.floor(n)
    decimals = max(0, -Decimal(repr(tick_size)).normalize().as_tuple().exponent)
    return round(k * tick_size, decimals)


def margin_ratio_as(maintenance_margin: float, margin_balance: float,
                    convention: str = "mm_over_equity") -> float:
    """Margin ratio in either convention.

    ``"mm_over_equity"`` (Binance, Bybit): ``requirement / margin balance``; ≥ 1
    means liquidation; ``inf`` when the balance is ≤ 0.
    ``"equity_over_mm_plus_fee"`` (OKX): ``margin balance / requirement``; ≤ 1
    means liquidation; ``inf`` when nothing is required. ``maintenance_margin`` is
    the whole requirement (with the closing fee where the venue counts it).
    """
    if convention == "mm_over_equity":
        return margin_ratio(maintenance_margin, margin_balance)
    if convention == "equity_over_mm_plus_fee":
        return margin_balance / maintenance_margin if maintenance_margin > 0 else math.inf
    raise ValueError(f"convention must be one of {MARGIN_RATIO_CONVENTIONS}, got {convention!r}")


@dataclass(frozen=True)
class Position:
    """A position for the general formulas.

    Parameters
    ----------
    qty : float
        Signed size, + long, − short: base units (linear) or contracts (inverse).
    entry_price : float
        Quote per base.
    collateral : float
        Isolated position margin (incl. extra margin) or the cross collateral of
        :func:`cross_collateral`; quote (linear) or coin (inverse).
    contract : str
        ``"linear"`` or ``"inverse"``.
    contract_multiplier : float
        USD face value of one inverse contract (ignored for linear).
    """

    qty: float
    entry_price: float
    collateral: float = 0.0
    contract: str = LINEAR
    contract_multiplier: float = 1.0

    def __post_init__(self):
        _check_contract(self.contract)

    @property
    def side(self) -> float:
        return side(self.qty)

    @property
    def size(self) -> float:
        """``|q|`` (linear) or ``Q`` in USD (inverse)."""
        return contract_size(self.qty, self.contract, self.contract_multiplier)

    def notional(self, price: float) -> float:
        return position_notional(self.qty, price, self.contract, self.contract_multiplier)

    def pnl(self, price: float) -> float:
        return position_pnl(self.qty, self.entry_price, price, self.contract,
                            self.contract_multiplier)

    def equity(self, price: float) -> float:
        """``C + uPnL(price)``, quote (linear) or coin (inverse)."""
        return self.collateral + self.pnl(price)


@dataclass(frozen=True)
class MarginRule:
    """What a venue requires a position to keep: maintenance margin plus closing fee.

    Parameters
    ----------
    tiers : TierTable, optional
        Tier table, notional in quote (linear) or coin (inverse). Without it, one
        tier of rate ``mmr`` and amount ``maint_amount``.
    mmr, maint_amount : float
        Single-tier rate and maintenance amount (deduction).
    mm_basis : str
        ``"mark"``: ``MM(n)`` with ``n`` the notional at the price in question
        (tier chosen there). ``"entry"``: ``n`` the notional at entry.
    fee_rate : float
        Taker fee rate counted in the requirement.
    fee_basis : str
        The fee is ``fee_rate`` times the notional at the price in question
        (``"price"``), at entry (``"entry"``), or at the bankruptcy price
        (``"bankruptcy_price"``: Bybit inverse, ``Q·fee/BP`` in coin).
    """

    tiers: TierTable | None = None
    mmr: float = 0.0
    maint_amount: float = 0.0
    mm_basis: str = "mark"
    fee_rate: float = 0.0
    fee_basis: str = "price"

    def __post_init__(self):
        if self.mm_basis not in MM_BASES:
            raise ValueError(f"mm_basis must be one of {MM_BASES}, got {self.mm_basis!r}")
        if self.fee_basis not in FEE_BASES:
            raise ValueError(f"fee_basis must be one of {FEE_BASES}, got {self.fee_basis!r}")

    def brackets(self) -> list[tuple[float, float, float, float]]:
        """``(floor, cap, mmr, maint_amount)`` per tier; the last cap is infinite."""
        if self.tiers is None:
            return [(0.0, math.inf, self.mmr, self.maint_amount)]
        t = self.tiers
        cap = t.kernel_cap
        return [(float(t.floor[k]), float(cap[k]), float(t.mmr[k]), float(t.maint_amount[k]))
                for k in range(len(t))]

    def tier_index(self, notional: float) -> int:
        """0-based tier holding ``notional`` (``floor < n ≤ cap``); 0 without a table."""
        return 0 if self.tiers is None else self.tiers.index(notional)

    def rate(self, notional: float) -> tuple[float, float]:
        """``(mmr, maint_amount)`` of the tier holding ``notional``."""
        _, _, m, a = self.brackets()[self.tier_index(notional)]
        return m, a

    def maintenance_margin(self, notional: float) -> float:
        """``MM(n) = n·mmr − maint_amount``, the tier holding ``n``."""
        m, a = self.rate(notional)
        return notional * m - a


class Requirement(NamedTuple):
    """Requirement of a position at a price: maintenance margin, closing fee, tier (0-based)."""

    maintenance_margin: float
    fee: float
    tier: int

    @property
    def total(self) -> float:
        return self.maintenance_margin + self.fee


class LiquidationPrice(NamedTuple):
    """A liquidation price and the 0-based tier in force there."""

    price: float
    tier: int


def _u_space(pos: Position) -> tuple[float, float, float]:
    """Side, size and entry of the position as a linear one in ``u`` (``u = 1/price`` for
    inverse contracts)."""
    if pos.contract == INVERSE:
        return -pos.side, pos.size, 1.0 / pos.entry_price
    return pos.side, pos.size, pos.entry_price


def _price_of(pos: Position, u: float) -> float:
    if pos.contract == LINEAR:
        return u
    return 1.0 / u if 0.0 < u else math.inf


def _u_of(pos: Position, price: float) -> float:
    return price if pos.contract == LINEAR else 1.0 / price


def _bankruptcy_u(s: float, q: float, e: float, collateral: float, fee_rate: float) -> float:
    # C + s·q·(u − e) − fee·q·u = 0
    return (s * q * e - collateral) / (q * (s - fee_rate))


def position_bankruptcy_price(pos: Position, fee_rate: float = 0.0) -> float:
    """The price at which equity less the closing fee is zero.

    Linear: ``C + s·q·(p − E) − fee·q·p = 0``, so ``p = (s·q·E − C)/(q·(s − fee))``
    (``E − C/q`` for a long without fee). Inverse, in coin:
    ``C + s·Q·(1/E − 1/p) − fee·Q/p = 0``, so ``p = Q·(s + fee)/(C + s·Q/E)`` (Bybit:
    ``BP = 1.00075·Q/(Q/E + C)`` for a long). An inverse short whose collateral
    covers its coin value is never bankrupt: ``inf``. Without fee this equals
    :func:`bankruptcy_price` for linear positions.
    """
    s, q, e = _u_space(pos)
    return _price_of(pos, _bankruptcy_u(s, q, e, pos.collateral, fee_rate))


def _fee_terms(pos: Position, rule: MarginRule) -> tuple[float, float]:
    """Fee as ``slope·u + constant`` in ``u`` space."""
    s, q, e = _u_space(pos)
    f = rule.fee_rate
    if rule.fee_basis == "price" or f == 0:
        return f * q, 0.0
    if rule.fee_basis == "entry":
        return 0.0, f * q * e
    return 0.0, f * q * _bankruptcy_u(s, q, e, pos.collateral, f)


def position_requirement(pos: Position, price: float, rule: MarginRule) -> Requirement:
    """Maintenance margin and closing fee of ``pos`` at ``price``.

    ``MM = n·mmr − maint_amount`` with ``n`` the notional at ``price``
    (``mm_basis="mark"``) or at entry (``"entry"``), the tier holding ``n``;
    fee ``fee_rate·notional`` at the price, at entry or at the bankruptcy price.
    Quote (linear) or coin (inverse).
    """
    s, q, e = _u_space(pos)
    u = _u_of(pos, price)
    n = q * e if rule.mm_basis == "entry" else q * u
    k = rule.tier_index(n)
    fee_slope, fee_const = _fee_terms(pos, rule)
    return Requirement(rule.maintenance_margin(n), fee_slope * u + fee_const, k)


def position_is_liquidatable(pos: Position, price: float, rule: MarginRule) -> bool:
    """``equity(price) ≤ requirement(price)``."""
    return pos.equity(price) <= position_requirement(pos, price, rule).total


def position_margin_ratio(pos: Position, mark_price: float, rule: MarginRule,
                          convention: str = "mm_over_equity",
                          other_positions_mm: float = 0.0) -> float:
    """Margin ratio at the mark with the requirement of ``rule`` (fee included).

    In cross margin ``pos.collateral`` is :func:`cross_collateral`; the other
    positions' maintenance margin is then added back to both sides: requirement
    ``MM + fee + other_positions_mm`` against the margin balance
    ``wallet_balance + other_positions_upnl + uPnL``. See :func:`margin_ratio_as`.
    """
    req = position_requirement(pos, mark_price, rule)
    return margin_ratio_as(req.total + other_positions_mm,
                           pos.equity(mark_price) + other_positions_mm, convention)


def position_liquidation_price(pos: Position, rule: MarginRule) -> LiquidationPrice:
    """Price at which equity equals the requirement, solved exactly tier by tier.

    Works in ``u`` (``u = p`` linear, ``u = 1/p`` inverse) where, within a tier,
    ``g(u) = equity − requirement = α + β·u`` is linear:

    * ``mm_basis="mark"``, tier ``k`` on ``floor_k < size·u ≤ cap_k``:
      ``β = s·q − q·mmr_k − fee·q`` (fee on the price basis),
      ``α = C − s·q·e + maint_amount_k − fee_const``;
    * ``mm_basis="entry"``: one piece, the tier of the entry notional ``q·e``:
      ``α = C − s·q·e − (q·e·mmr − maint_amount) − fee_const``;

    with ``s, q, e`` the position's side, size and entry in ``u`` (inverse: ``−s``,
    ``Q``, ``1/E``) and ``fee_const`` the fee at entry or at the bankruptcy price.
    The result is the boundary-consistent root: the highest price at which a
    long is liquidatable, the lowest for a short (in ``u``: the supremum of the
    liquidatable set for ``s = +1``, the infimum for ``s = −1``). With a continuous
    table (maintenance amounts from :func:`next_maint_amount`) it is the unique
    root; with a table whose MM jumps at tier edges (OKX) it may be a tier edge.

    A linear long that is never liquidatable (collateral beyond its notional)
    gets the negative root; an inverse short whose collateral covers its coin
    value gets ``inf``.

    Returns
    -------
    LiquidationPrice
        ``price`` and the 0-based ``tier`` in force there: the tier holding the
        notional at the price, or, at a tier edge the solution was clamped to,
        the tier in which the position is liquidatable.
    """
    s, q, e = _u_space(pos)
    c = pos.collateral
    fee_slope, fee_const = _fee_terms(pos, rule)
    pieces = []  # (lo, hi, alpha, beta, tier): g(u) = alpha + beta·u on (lo, hi]
    if rule.mm_basis == "entry":
        n = q * e
        pieces.append((-math.inf, math.inf, c - s * q * e - rule.maintenance_margin(n) - fee_const,
                       s * q - fee_slope, rule.tier_index(n)))
    else:
        brackets = rule.brackets()
        for k, (floor, cap, m, a) in enumerate(brackets):
            lo = -math.inf if k == 0 else floor / q
            hi = math.inf if k == len(brackets) - 1 else cap / q
            pieces.append((lo, hi, c - s * q * e + a - fee_const, s * q - q * m - fee_slope, k))
    best = None  # (u, tier, is_root)
    for lo, hi, alpha, beta, k in pieces:
        # The liquidatable part of the piece, {u in (lo, hi]: alpha + beta·u <= 0}, as
        # its two ends, each flagged by whether it is the root (else a tier edge).
        if beta > 0:  # u <= r
            r = -alpha / beta
            if not r > lo:
                continue
            top = (r, True) if r <= hi else (hi, False)
            bottom = (lo, False)
        elif beta < 0:  # u >= r
            r = -alpha / beta
            if not r <= hi:
                continue
            top = (hi, False)
            bottom = (r, True) if r >= lo else (lo, False)
        else:
            if alpha > 0:
                continue
            top, bottom = (hi, False), (lo, False)
        u, is_root = top if s > 0 else bottom
        if best is None or (u > best[0] if s > 0 else u < best[0]):
            best = (u, k, is_root)
    if best is None:  # never liquidatable
        return LiquidationPrice(_price_of(pos, -math.inf if s > 0 else math.inf), 0)
    u, k, is_root = best
    if is_root and rule.mm_basis == "mark" and math.isfinite(u):
        k = rule.tier_index(q * u)
    return LiquidationPrice(_price_of(pos, u), k)


def position_adl_score(pos: Position, mark_price: float) -> float:
    """ADL score with PnL% on the entry value (BitMEX, Bybit, Binance, Poloniex).

    ``PnL% = uPnL / notional(E)`` and ``EffLev = notional(P) / equity(P)``; the
    score is ``PnL%·EffLev`` for a profit and ``PnL%/EffLev`` for a loss. For a
    linear isolated position this is ``(MV − AEV)/|AEV|`` and ``|MV|/(MV − BV)``
    with the signed values at mark, entry and bankruptcy price, and equals
    :func:`adl_score` with ``pnl_basis="entry_value"``. No margin left: ``±inf``.
    """
    upnl = pos.pnl(mark_price)
    eq = pos.collateral + upnl
    base = pos.notional(pos.entry_price)
    if base <= 0 or eq <= 0:
        return math.inf if upnl > 0 else -math.inf
    pnl_pct = upnl / base
    eff_lev = pos.notional(mark_price) / eq
    return pnl_pct * eff_lev if pnl_pct > 0 else pnl_pct / eff_lev
