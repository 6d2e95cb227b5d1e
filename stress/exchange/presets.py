"""Venue presets: the exchange settings of a venue's BTC perpetual.

Each preset is ``stress/data/presets/<name>.yaml``: an ``exchange:`` mapping
(tier table, fees, liquidation style, margin conventions) with the source of
every number beside it. A config's own ``exchange`` keys override the preset.
"""

from __future__ import annotations

from importlib import resources

import yaml

from stress.errors import ConfigError

PRESETS = ("binance_usdm", "bybit_linear", "okx", "gate", "hyperliquid")


def load_preset(name: str) -> dict:
    """The ``exchange`` settings of preset ``name`` (a new dict)."""
    if name not in PRESETS:
        raise ConfigError("exchange.preset", f"unknown preset, expected one of {list(PRESETS)}",
                          name)
    text = resources.files("stress.data").joinpath("presets", f"{name}.yaml").read_text()
    data = yaml.safe_load(text)
    return dict(data["exchange"])
