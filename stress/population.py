"""Account populations (books) as struct-of-arrays.

Synthetic books draw leverage from a mix, notional from a Pareto law capped
at a maximum (a few whales), the side, and an entry price around the start
price; collateral is entry notional over leverage. Behaviour (cross margin,
stop-loss orders, top-up budgets) is drawn afterwards, only for the features
a config enables, so that a book without them is the same, draw for draw, as
before they existed. A snapshot book is read from CSV.

Units. Linear contracts: ``qty`` in base units, prices in quote per base,
money (collateral, free balance, top-up budget) in quote. Inverse
(coin-margined) contracts: ``qty`` is the signed USD face value (contracts ×
contract size), prices are still quote per coin, money is in coin. The
notional that selects a tier is in the margin currency: ``|qty|·price``
(linear) or ``|qty|/price`` (inverse).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from stress._csv import CSVTable
from stress.errors import ConfigError
from stress.exchange.tiers import TierTable

MARGIN_MODES = ("isolated", "cross")


@dataclass(frozen=True)
class Book:
    """Positions of a book: signed quantity, entry price, collateral and behaviour.

    ``free`` is the wallet balance beyond the position's collateral (margin
    currency, ≥ 0): it backs the position only for a ``cross`` account.
    ``stop`` is the stop-loss trigger price (quote per base, NaN = none);
    ``topup_budget`` what the account may add at margin alerts (margin
    currency). Omitted behaviour arrays default to none (0, False, NaN, 0).
    """

    qty: np.ndarray
    entry: np.ndarray
    collateral: np.ndarray
    leverage: np.ndarray  # nominal leverage (notional at entry / collateral) or as given
    free: np.ndarray = field(default=None)  # type: ignore[assignment]
    cross: np.ndarray = field(default=None)  # type: ignore[assignment]
    stop: np.ndarray = field(default=None)  # type: ignore[assignment]
    topup_budget: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self):
        n = len(self.qty)
        defaults = {"free": (0.0, np.float64), "cross": (False, np.bool_),
                    "stop": (math.nan, np.float64), "topup_budget": (0.0, np.float64)}
        for name, (fill, dtype) in defaults.items():
            value = getattr(self, name)
            arr = np.full(n, fill, dtype=dtype) if value is None else np.asarray(value, dtype)
            if arr.shape != (n,):  # a scalar given for every account
                arr = np.broadcast_to(arr, (n,)).copy()
            object.__setattr__(self, name, arr)

    def __len__(self) -> int:
        return len(self.qty)

    @property
    def notional(self) -> np.ndarray:
        """Entry notional of linear positions, quote (``|qty|·entry``)."""
        return np.abs(self.qty) * self.entry

    def margin_notional(self, price, inverse: bool = False) -> np.ndarray:
        """Notional at ``price`` in the margin currency: ``|qty|·price`` or ``|qty|/price``."""
        return notional_at(self.qty, price, inverse)

    @property
    def margin_balance(self) -> np.ndarray:
        """Money backing each position: collateral, plus the free balance if cross."""
        return self.collateral + np.where(self.cross, self.free, 0.0)

    @classmethod
    def from_arrays(cls, qty, entry, collateral, leverage=None, free=None, cross=None,
                    stop=None, topup_budget=None) -> "Book":
        """A book from array-likes; ``leverage`` defaults to the nominal linear one."""
        qty = np.asarray(qty, dtype=np.float64)
        entry = np.asarray(entry, dtype=np.float64)
        collateral = np.asarray(collateral, dtype=np.float64)
        if leverage is None:
            with np.errstate(divide="ignore", invalid="ignore"):
                leverage = np.abs(qty) * entry / collateral
        return cls(qty, entry, collateral, np.asarray(leverage, dtype=np.float64),
                   free, cross, stop, topup_budget)


def _inverse(exchange) -> bool:
    return exchange is not None and exchange.contract == "inverse"


def notional_at(qty, price, inverse: bool = False):
    """Notional in the margin currency: ``|qty|·price`` (linear) or ``|qty|/price`` (inverse)."""
    return np.abs(qty) / price if inverse else np.abs(qty) * price


def breached_at(book: Book, price: float, tiers: TierTable, exchange=None) -> np.ndarray:
    """Mask of open accounts whose equity ≤ maintenance requirement at ``price``.

    ``exchange`` (an :class:`stress.config.ExchangeConfig`; default: linear, MM on
    the mark notional, no fee in the requirement) sets the contract type,
    ``mm_basis`` and ``requirement_fee_rate``; a cross account's free balance
    counts. The kernel's own trigger (:func:`stress.exchange.kernels.is_breached`).
    """
    from stress.exchange.kernels import breached_mask
    acct, tt, params, inverse = _kernel_view(book, tiers, exchange)
    return breached_mask(acct, 1.0 / price if inverse else float(price), tt, params)


def _kernel_view(book: Book, tiers: TierTable, exchange=None):
    """The book, tier table and margin rules in the kernel's terms:
    ``(acct, tt, params, inverse)`` (inverse books in ``1/P``)."""
    from stress.config import ExchangeConfig
    from stress.exchange.contracts import kernel_accounts
    from stress.exchange.kernels import make_params, tier_array
    ex = exchange if exchange is not None else ExchangeConfig()
    inverse = _inverse(ex)
    params = make_params(req_fee=ex.requirement_fee_rate, mm_entry=ex.mm_basis == "entry")
    return kernel_accounts(book, inverse), tier_array(tiers), params, inverse


def synthetic_book(cfg, tiers: TierTable, s0: float, rng: np.random.Generator,
                   exchange=None) -> Book:
    """Draw a synthetic book (see :class:`stress.config.SyntheticPopulation`).

    Leverage is capped at the maximum the tier of the position's notional
    allows (the exchange would refuse more) and at ``exchange.max_leverage``. An account whose draw would be
    liquidatable at the start price does not exist on a live book; its entry
    move is mirrored (``entry → s0²/entry``) so that it starts in profit.

    Inverse contracts (``exchange.contract``): the notional law is in USD face
    value, ``qty = side·notional``, collateral ``notional/entry/leverage`` coin,
    and the leverage cap is the tier's at the coin notional ``notional/entry``.

    Behaviour draws follow the four draws of the positions and happen only for
    enabled features, in this order: cross margin (``cross_fraction``), stops,
    top-up budgets. With none enabled the book is the same as one drawn before
    these features existed.
    """
    from stress.config import ExchangeConfig

    exchange = ExchangeConfig() if exchange is None else exchange
    inverse = exchange.contract == "inverse"
    n = cfg.accounts
    values = np.asarray(cfg.leverage.values, dtype=np.float64)
    if cfg.leverage.weights is None:
        p = np.full(len(values), 1.0 / len(values))
    else:
        w = np.asarray(cfg.leverage.weights, dtype=np.float64)
        p = w / w.sum()
    leverage = values[rng.choice(len(values), size=n, p=p)]
    notional = np.minimum(cfg.notional.minimum * (1.0 + rng.pareto(cfg.notional.alpha, n)),
                          cfg.notional.maximum)
    side = np.where(rng.random(n) < cfg.long_fraction, 1.0, -1.0)
    entry = s0 * np.exp(cfg.entry_spread * rng.standard_normal(n))

    # Behaviour draws (after the position draws, so that books without them keep
    # their numbers).
    if cfg.cross_fraction is not None:
        cross = rng.random(n) < cfg.cross_fraction
    else:
        cross = np.full(n, exchange.margin_mode == "cross")
    has_stop = rng.random(n) < cfg.stop_loss.adoption if cfg.stop_loss.adoption > 0 else None
    has_topup = rng.random(n) < cfg.top_up.adoption if cfg.top_up.adoption > 0 else None

    venue_cap = np.inf if exchange.max_leverage is None else exchange.max_leverage

    def positions(entry, leverage):
        if inverse:
            leverage = np.minimum(leverage, tiers.max_leverage_array(notional / entry))
            leverage = np.minimum(leverage, venue_cap)
            return side * notional, notional / entry / leverage, leverage
        return side * notional / entry, notional / leverage, leverage

    def book_of(entry, leverage):
        qty, collateral, leverage = positions(entry, leverage)
        return Book(qty, entry, collateral, leverage, cfg.free_balance * collateral, cross)

    if not inverse:
        leverage = np.minimum(np.minimum(leverage, tiers.max_leverage_array(notional)),
                               venue_cap)
    book = book_of(entry, leverage)
    bad = breached_at(book, s0, tiers, exchange)
    if bad.any():
        entry = np.where(bad, s0 * s0 / entry, entry)
        book = book_of(entry, book.leverage)
        bad = breached_at(book, s0, tiers, exchange)
        if bad.any():  # tier edge cases: open at the start price
            entry = np.where(bad, s0, entry)
            book = book_of(entry, book.leverage)
    if has_stop is None and has_topup is None:
        return book
    stop = None
    if has_stop is not None:
        stop = np.where(has_stop, book.entry * (1.0 - side * cfg.stop_loss.distance), np.nan)
    budget = None
    if has_topup is not None:
        budget = np.where(has_topup, cfg.top_up.budget * book.collateral, 0.0)
    return Book(book.qty, book.entry, book.collateral, book.leverage, book.free, book.cross,
                stop, budget)


def csv_book(cfg, tiers: TierTable, key: str = "population.path",
             source: str | None = None, base=None, exchange=None) -> Book:
    """Read a snapshot CSV.

    Columns ``account_id, qty, entry_price, collateral`` and optional ``leverage,
    margin_mode`` (isolated | cross; empty = ``exchange.margin_mode``),
    ``wallet_balance`` (≥ collateral; empty = collateral), ``stop_price`` (> 0;
    empty = none) and ``topup_budget`` (≥ 0; empty = 0). A row above
    ``exchange.max_leverage`` is opened at the cap: its collateral is raised to
    notional / cap (the wallet's free balance is unchanged). Every error names the
    row and the column. Inverse contracts: ``qty`` is the USD face value and
    leverage and caps are checked on the coin notional ``|qty|/entry_price``.
    """
    from stress.config import ExchangeConfig

    exchange = ExchangeConfig() if exchange is None else exchange
    inverse = exchange.contract == "inverse"
    path = base.resolve(cfg.path) if base is not None else cfg.path
    table = CSVTable(path, key, source, ("account_id", "qty", "entry_price", "collateral"))
    ids = table.strings("account_id")
    seen: dict[str, int] = {}
    for i, a in enumerate(ids):
        if a in seen:
            raise table.error(i, "account_id", f"duplicate of row {seen[a] + 1}", a)
        seen[a] = i
    n = len(ids)
    qty = table.floats("qty")
    entry = table.floats("entry_price", positive=True)
    collateral = table.floats("collateral", nonnegative=True)

    def optional(column, **kw):
        return table.floats(column, optional=True, **kw) if column in table.columns \
            else [math.nan] * n

    lev = optional("leverage")
    wallet = optional("wallet_balance")
    stop = optional("stop_price", positive=True)
    budget = optional("topup_budget", nonnegative=True)
    modes = table.choices("margin_mode", MARGIN_MODES, default=exchange.margin_mode) \
        if "margin_mode" in table.columns else [exchange.margin_mode] * n
    for i in range(n):
        notional = abs(qty[i]) / entry[i] if inverse else abs(qty[i]) * entry[i]
        if not math.isnan(lev[i]):
            if lev[i] < 1:
                raise table.error(i, "leverage", "must be >= 1", lev[i])
            cap = tiers.max_leverage_for(notional)
            if lev[i] > cap:
                raise table.error(i, "leverage", f"above the tier table's max leverage {cap:g} "
                                                 f"for notional {notional:g}", lev[i])
        if qty[i] != 0 and collateral[i] <= 0:
            raise table.error(i, "collateral", "an open position needs collateral > 0",
                              collateral[i])
        if notional > tiers.cap[-1]:
            raise table.error(i, "qty", f"notional {notional:g} exceeds the tier table's last "
                                        f"cap {tiers.cap[-1]:g}", qty[i])
        if not math.isnan(wallet[i]) and wallet[i] < collateral[i]:
            raise table.error(i, "wallet_balance", f"must be >= the collateral {collateral[i]:g}",
                              wallet[i])
    qty_a = np.asarray(qty, dtype=np.float64)
    entry_a = np.asarray(entry, dtype=np.float64)
    coll_a = np.asarray(collateral, dtype=np.float64)
    lev_a = np.asarray(lev, dtype=np.float64)
    nominal = np.divide(notional_at(qty_a, entry_a, inverse), coll_a,
                        out=np.full(n, np.inf), where=coll_a > 0)
    lev_a = np.where(np.isnan(lev_a), nominal, lev_a)
    wallet_a = np.asarray(wallet, dtype=np.float64)
    free = np.where(np.isnan(wallet_a), 0.0, wallet_a - coll_a)
    budget_a = np.asarray(budget, dtype=np.float64)
    if exchange.max_leverage is not None:
        # The venue's cap: the same position, with the collateral the cap asks for.
        cap = exchange.max_leverage
        need = notional_at(qty_a, entry_a, inverse) / cap
        over = lev_a > cap
        coll_a = np.where(over, np.maximum(coll_a, need), coll_a)
        lev_a = np.minimum(lev_a, cap)
    return Book(qty_a, entry_a, coll_a, lev_a, free,
                np.asarray([m == "cross" for m in modes], dtype=bool),
                np.asarray(stop, dtype=np.float64), np.where(np.isnan(budget_a), 0.0, budget_a))


def validate_synthetic(cfg, tiers: TierTable, source: str | None, exchange=None,
                       s0: float | None = None) -> None:
    """Cross-checks of a synthetic population against the tier table.

    For inverse contracts the largest notional (USD face value) is compared with the
    last cap in coin at the start price ``s0``.
    """
    top = float(tiers.max_leverage[0])
    for i, v in enumerate(cfg.leverage.values):
        if v > top:
            raise ConfigError(f"population.leverage.values.{i}",
                              f"leverage above the tier table's maximum {top:g}", v, source)
    if _inverse(exchange):
        if s0 is None:
            raise TypeError("validate_synthetic needs s0 for inverse contracts")
        coin = cfg.notional.maximum / s0
        if coin > tiers.cap[-1]:
            raise ConfigError("population.notional.maximum",
                              f"{coin:g} coin at the start price {s0:g} is above the tier "
                              f"table's last cap {tiers.cap[-1]:g}",
                              cfg.notional.maximum, source)
        return
    if cfg.notional.maximum > tiers.cap[-1]:
        raise ConfigError("population.notional.maximum",
                          f"above the tier table's last cap {tiers.cap[-1]:g}",
                          cfg.notional.maximum, source)


def liquidation_prices(book: Book, tiers: TierTable, exchange=None) -> np.ndarray:
    """Each account's liquidation price under the exchange's rules (quote per base;
    NaN for no position, ≤ 0 or inf where none exists).

    Cross accounts count their free balance; the requirement follows
    ``exchange.mm_basis`` and ``exchange.requirement_fee_rate``; inverse
    contracts are solved in ``1/P``. The same trigger as the kernel's.
    """
    from stress.exchange.kernels import liquidation_prices as _kernel_prices
    acct, tt, params, inverse = _kernel_view(book, tiers, exchange)
    lp = _kernel_prices(acct, tt, params)
    if inverse:
        with np.errstate(divide="ignore"):
            lp = 1.0 / lp
    return lp


def liquidation_levels(book: Book, mark: float, tiers: TierTable | None = None, *,
                       exchange=None, bins: int | np.ndarray = 50, span: float = 0.3):
    """Notional that would be liquidated at each price level: the data behind the
    familiar liquidation heat maps.

    Parameters
    ----------
    book : Book
        The positions.
    mark : float
        Current mark price; levels are laid out around it.
    tiers : TierTable, optional
        Tier table (default: the built-in Binance BTCUSDT 2021 table).
    exchange : ExchangeConfig, optional
        Margin rules (mode, MM basis, fee in the requirement, contract).
    bins : int or array
        Number of equal price bins over ``mark·(1 ± span)``, or the bin edges.
    span : float
        Half-width of the price range, as a fraction of the mark.

    Returns
    -------
    xarray.Dataset
        Over ``price`` (bin centres, with ``price_low``/``price_high``):
        ``long_notional`` and ``short_notional`` (quote, at the liquidation price;
        inverse contracts: the USD face value), ``long_accounts``,
        ``short_accounts``, and ``cumulative_long`` / ``cumulative_short``: what
        is liquidated once the price reaches the level from the mark (longs
        below the mark, summed downwards; shorts above, summed upwards).
        Attributes give what is liquidatable at the mark already.
    """
    import xarray as xr

    from stress.exchange.tiers import builtin_tiers
    if not (math.isfinite(mark) and mark > 0):
        raise ConfigError("mark", "must be a positive finite price", mark)
    if tiers is None:
        tiers = builtin_tiers("binance_btcusdt_2021")
    if np.ndim(bins) == 0:
        if int(bins) < 1 or not 0 < span < 1:
            raise ConfigError("bins", "need bins >= 1 and 0 < span < 1", (bins, span))
        edges = np.linspace(mark * (1.0 - span), mark * (1.0 + span), int(bins) + 1)
    else:
        edges = np.asarray(bins, dtype=np.float64)
        if edges.ndim != 1 or len(edges) < 2 or np.any(np.diff(edges) <= 0):
            raise ConfigError("bins", "bin edges must be an ascending 1-D array", bins)
    lp = liquidation_prices(book, tiers, exchange)
    inverse = _inverse(exchange) if exchange is not None else False
    size = np.abs(book.qty) if inverse else np.abs(book.qty) * np.where(np.isfinite(lp), lp, 0)
    long = (book.qty > 0) & np.isfinite(lp) & (lp > 0)
    short = (book.qty < 0) & np.isfinite(lp) & (lp > 0)
    now_long = long & (lp >= mark)
    now_short = short & (lp <= mark)
    k = np.searchsorted(edges, lp, side="right") - 1
    inside = (k >= 0) & (k < len(edges) - 1)
    nb = len(edges) - 1

    def hist(mask, weights):
        return np.bincount(k[mask & inside], weights=weights[mask & inside], minlength=nb)

    ones = np.ones(len(lp))
    ln, sn = hist(long & ~now_long, size), hist(short & ~now_short, size)
    la, sa = hist(long & ~now_long, ones), hist(short & ~now_short, ones)
    # Cumulative from the mark outwards; bins on the wrong side of the mark hold nothing.
    cum_long = np.cumsum(ln[::-1])[::-1]
    cum_short = np.cumsum(sn)
    centre = 0.5 * (edges[:-1] + edges[1:])
    quote = {"units": "quote"}
    return xr.Dataset(
        {"long_notional": ("price", ln, {**quote, "long_name": "long notional liquidated "
                                                               "in the bin"}),
         "short_notional": ("price", sn, {**quote, "long_name": "short notional liquidated "
                                                                 "in the bin"}),
         "long_accounts": ("price", la.astype(np.int64), {"units": "1"}),
         "short_accounts": ("price", sa.astype(np.int64), {"units": "1"}),
         "cumulative_long": ("price", cum_long, {**quote, "long_name": "long notional "
                                                 "liquidated by a fall to the bin"}),
         "cumulative_short": ("price", cum_short, {**quote, "long_name": "short notional "
                                                   "liquidated by a rise to the bin"})},
        coords={"price": ("price", centre, {"units": "quote per base"}),
                "price_low": ("price", edges[:-1]), "price_high": ("price", edges[1:])},
        attrs={"mark": float(mark), "liquidatable_now_long": float(size[now_long].sum()),
               "liquidatable_now_short": float(size[now_short].sum()),
               "outside_long": float(size[long & ~now_long & ~inside].sum()),
               "outside_short": float(size[short & ~now_short & ~inside].sum())})
