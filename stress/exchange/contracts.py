"""Linear and inverse contracts in the kernel's terms.

The kernel simulates linear contracts. An inverse (coin-margined) contract
of face value ``Q`` USD, entered at ``E``, has PnL ``s·Q·(1/E − 1/P)`` coin and
maintenance margin ``mmr·Q/P`` coin: exactly a linear position of ``−s·Q``
units in the price ``x = 1/P`` (coin per USD), with notional ``Q·x`` coin.
So an inverse book runs through the same kernel with prices, entries and
stops inverted and sides flipped; money is then in coin. A long's sell
order in ``P`` is a buy in ``x``: bid-side depth and gaps become ask-side,
and depth converts from quote to coin at the step's mark.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stress.exchange.kernels import E, Q, STOP, book_accounts


@dataclass(frozen=True)
class KernelMarket:
    index: np.ndarray
    mark: np.ndarray
    depth_bid: np.ndarray
    depth_ask: np.ndarray
    gap_bid: np.ndarray
    gap_ask: np.ndarray


def kernel_market(prices: np.ndarray, liq, inverse: bool) -> KernelMarket:
    """The kernel's price and liquidity arrays for a path (``liq``: a PathLiquidity)."""
    if not inverse:
        return KernelMarket(prices, liq.mark, liq.depth_bid, liq.depth_ask, liq.gap_bid,
                            liq.gap_ask)
    return KernelMarket(1.0 / prices, 1.0 / liq.mark, liq.depth_ask / liq.mark,
                        liq.depth_bid / liq.mark, liq.gap_ask, liq.gap_bid)


def kernel_accounts(book, inverse: bool, u: np.ndarray | None = None) -> np.ndarray:
    """The kernel's account array of a :class:`stress.population.Book`.

    A cross-margin account's free balance backs its position (it is added to
    the collateral); an isolated account's stays aside. Inverse books are
    turned into linear positions in ``1/P`` (qty is the signed USD face value).
    """
    acct = book_accounts(book, u)
    if inverse:
        acct[:, Q] = -acct[:, Q]
        acct[:, E] = 1.0 / acct[:, E]
        acct[:, STOP] = 1.0 / acct[:, STOP]
    return acct
