"""Everything a shard needs, built once from a validated config.

Building reads the data files and makes the cross-section checks (leverage
against the tier table, replay length against ``run.steps``), so a config
that builds will run. Nothing is written.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stress.config import Config, CSVPopulation, ReplayMarket
from stress.errors import ConfigError
from stress.exchange.tiers import TierTable, load_tiers
from stress.market.replay import load_replay
from stress.population import Book, csv_book, synthetic_book, validate_synthetic
from stress.runner.seeding import population_rng
from stress.runner.variables import LAYER_CODES


@dataclass
class Prepared:
    config: Config
    tiers: TierTable
    layers: list[np.ndarray]  # per policy
    s0: float
    replay: np.ndarray | None
    book: Book | None  # None when the book is redrawn per path
    config_hash: str
    # The config as YAML for every shard file's attributes, serialised once (it was a
    # third of the driver's time per shard), by prepare(): not lazily, since the
    # object is pickled to workers while the driver runs.
    config_yaml: str

    @property
    def policy_names(self) -> list[str]:
        return [p.name for p in self.config.policies]

    @property
    def topups(self) -> bool:
        """Whether accounts can top up (a budget and alert levels): the paths then
        draw each account's uniform for its top-up decisions."""
        if not self.config.exchange.margin_alerts:
            return False
        pop = self.config.population
        if isinstance(pop, CSVPopulation):
            return bool(self.book is not None and np.any(self.book.topup_budget > 0))
        return pop.top_up.adoption > 0

    def book_for_path(self, path_index: int) -> Book:
        if self.book is not None:
            return self.book
        return synthetic_book(self.config.population, self.tiers, self.s0,
                              population_rng(self.config.run.seed, path_index),
                              exchange=self.config.exchange)


def prepare(cfg: Config) -> Prepared:
    """Read data files and cross-check the config; raise :class:`ConfigError` if invalid."""
    src = cfg.source
    try:
        tiers = load_tiers(cfg)
        replay = None
        if isinstance(cfg.market, ReplayMarket):
            replay = load_replay(cfg.market, cfg.resolve, src)
            if len(replay) < cfg.run.steps + 1:
                raise ConfigError("run.steps", f"the replay has only {len(replay)} prices "
                                               f"({len(replay) - 1} steps)", cfg.run.steps, src)
            s0 = float(replay[0])
        else:
            s0 = float(cfg.market.s0)
        pop = cfg.population
        if isinstance(pop, CSVPopulation):
            book = csv_book(pop, tiers, source=src, base=cfg, exchange=cfg.exchange)
        else:
            validate_synthetic(pop, tiers, src, exchange=cfg.exchange, s0=s0)
            book = None if pop.redraw_per_path else synthetic_book(
                pop, tiers, s0, population_rng(cfg.run.seed), exchange=cfg.exchange)
    except ConfigError as e:
        raise e.with_source(src) if src else e
    layers = [np.asarray([LAYER_CODES[name] for name in p.layer_names], dtype=np.int64)
              for p in cfg.policies]
    return Prepared(cfg, tiers, layers, s0, replay, book, cfg.hash(), cfg.to_yaml())
