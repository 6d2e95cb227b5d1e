"""Replay a price path from CSV (historical crash days, hand-built shocks), optionally rescaled
to start at another price. Noise around it is added in :func:`stress.market.paths.price_path`.
"""

from __future__ import annotations

import numpy as np

from stress._csv import CSVTable
from stress.errors import ConfigError


def _timestamps(table: CSVTable, column: str) -> np.ndarray:
    raw = table.strings(column)
    try:
        return np.asarray([float(v) for v in raw])
    except ValueError:
        pass
    out = []
    for i, v in enumerate(raw):
        try:
            out.append(np.datetime64(v.replace(" ", "T").rstrip("Z"), "ns"))
        except ValueError:
            raise table.error(i, column, "not a number or an ISO time stamp", v) from None
    return np.asarray(out)


def load_replay(market, resolve, source: str | None = None,
                key: str = "market.path") -> np.ndarray:
    """Prices of the replay CSV, in file order, after the ``where`` filter.

    Errors (missing file or column, NaN, non-positive price, time stamps that
    do not increase) name the file, the row and the column.
    """
    path = resolve(market.path)
    required = (market.timestamp_column, market.price_column, *market.where)
    table = CSVTable(path, key, source, tuple(dict.fromkeys(required)))
    if market.where:
        keep = [r for r in table.rows
                if all(r.get(c, "").strip() == v for c, v in market.where.items())]
        if not keep:
            raise ConfigError("market.where", f"no row of {path.name} matches", market.where,
                              source)
        table.rows = keep
    prices = np.asarray(table.floats(market.price_column, positive=True))
    ts = _timestamps(table, market.timestamp_column)
    for i in range(1, len(ts)):
        if not ts[i] > ts[i - 1]:
            raise table.error(i, market.timestamp_column, "time stamps must increase",
                              table.rows[i][market.timestamp_column])
    if len(prices) < 2:
        raise ConfigError(key, f"{path.name}: a replay needs at least 2 prices", len(prices),
                          source)
    rescale_to = getattr(market, "rescale_to", None)
    if rescale_to is not None:
        # p/p0 first, so the path starts at rescale_to exactly and keeps its ratios.
        prices = prices / prices[0] * rescale_to
    return prices
