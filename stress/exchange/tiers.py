"""Tier tables (risk limits): notional bracket → maintenance margin rate,
maintenance amount and maximum leverage.

A notional ``n`` belongs to the tier with ``floor < n <= cap``; the first
tier also holds 0, and the last one extends to infinity for margin purposes
(a position can grow past the last cap through price moves). Maintenance
margin is ``MM = n·mmr − maint_amount``.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from stress.errors import ConfigError

COLUMNS = ("notional_floor", "notional_cap", "mmr", "maint_amount", "max_leverage")


def builtin_names() -> tuple[str, ...]:
    """Names of the bundled tier tables: ``stress/data/*.csv`` and ``stress/data/tiers/*.csv``."""
    root = resources.files("stress.data")
    names = [f.name[:-4] for f in root.iterdir() if f.name.endswith(".csv")]
    tiers = root.joinpath("tiers")
    if tiers.is_dir():
        names += [f.name[:-4] for f in tiers.iterdir() if f.name.endswith(".csv")]
    return tuple(sorted(set(names)))


@dataclass(frozen=True)
class TierTable:
    """Tier table as float64 arrays (struct of arrays, kernel-ready)."""

    floor: np.ndarray
    cap: np.ndarray  # last tier's cap as given (inf if none)
    mmr: np.ndarray
    maint_amount: np.ndarray
    max_leverage: np.ndarray

    def __len__(self) -> int:
        return len(self.floor)

    @property
    def kernel_cap(self) -> np.ndarray:
        """Caps with the last one set to infinity (the kernel's view)."""
        cap = self.cap.copy()
        cap[-1] = np.inf
        return cap

    def index(self, notional: float) -> int:
        """0-based tier holding ``notional`` (floor < n <= cap; first tier holds 0)."""
        for k in range(len(self) - 1):
            if notional <= self.cap[k]:
                return k
        return len(self) - 1

    def index_array(self, notional: np.ndarray) -> np.ndarray:
        """Vectorised :meth:`index`."""
        return np.searchsorted(self.kernel_cap, notional, side="left")

    def maintenance_margin_array(self, notional: np.ndarray) -> np.ndarray:
        k = self.index_array(notional)
        return notional * self.mmr[k] - self.maint_amount[k]

    def max_leverage_array(self, notional: np.ndarray) -> np.ndarray:
        return self.max_leverage[self.index_array(notional)]

    def max_leverage_for(self, notional: float) -> float:
        return float(self.max_leverage[self.index(notional)])

    def maintenance_margin(self, notional: float) -> float:
        k = self.index(notional)
        return notional * self.mmr[k] - self.maint_amount[k]

    @classmethod
    def from_rows(cls, rows: list[dict], key: str = "exchange.tiers",
                  source: str | None = None, row_offset: int = 0) -> "TierTable":
        """Build and validate a table; errors name the row (1-based) and column."""
        if not rows:
            raise ConfigError(key, "the tier table has no rows", source=source)
        cols = {c: [] for c in COLUMNS}
        for i, row in enumerate(rows):
            where = f"{key}.{i}" if row_offset == 0 else f"{key}: row {i + row_offset}"
            for c in COLUMNS:
                raw = row.get(c)
                if c == "notional_cap" and (raw is None or str(raw).strip() == ""):
                    val = math.inf
                elif c == "maint_amount" and (raw is None or str(raw).strip() == ""):
                    val = 0.0
                else:
                    if raw is None:
                        raise ConfigError(_at(where, c, row_offset), "missing value",
                                          source=source)
                    try:
                        val = float(raw)
                    except (TypeError, ValueError):
                        raise ConfigError(_at(where, c, row_offset), "not a number", raw,
                                          source) from None
                    if math.isnan(val):
                        raise ConfigError(_at(where, c, row_offset), "not a number", raw, source)
                cols[c].append(val)
        table = cls(*(np.asarray(cols[c], dtype=np.float64) for c in COLUMNS))
        table._validate(key, source, row_offset)
        return table

    def _validate(self, key: str, source: str | None, row_offset: int) -> None:
        def err(i, c, msg, v):
            where = f"{key}.{i}" if row_offset == 0 else f"{key}: row {i + row_offset}"
            return ConfigError(_at(where, c, row_offset), msg, v, source)

        if self.floor[0] != 0:
            raise err(0, "notional_floor", "the first tier must start at 0", self.floor[0])
        for i in range(len(self)):
            mmr, lev = self.mmr[i], self.max_leverage[i]
            if not 0 <= mmr < 1:
                raise err(i, "mmr", "maintenance margin rate must be in [0, 1)", mmr)
            if not (lev >= 1 and math.isfinite(lev)):
                raise err(i, "max_leverage", "max leverage must be a finite number >= 1", lev)
            if self.maint_amount[i] < 0 or not math.isfinite(self.maint_amount[i]):
                raise err(i, "maint_amount", "maintenance amount must be finite and >= 0",
                          self.maint_amount[i])
            if not self.cap[i] > self.floor[i]:
                raise err(i, "notional_cap", f"cap must exceed the floor {self.floor[i]}",
                          self.cap[i])
            if 1.0 / lev <= mmr:
                raise err(i, "max_leverage",
                          f"initial margin 1/max_leverage must exceed the maintenance rate "
                          f"{mmr} (else a position opened at max leverage is liquidatable "
                          f"at once)", lev)
            if i > 0:
                if self.floor[i] != self.cap[i - 1]:
                    raise err(i, "notional_floor",
                              f"tiers must be contiguous: floor must equal the previous cap "
                              f"{self.cap[i - 1]}", self.floor[i])
                if mmr < self.mmr[i - 1]:
                    raise err(i, "mmr", f"maintenance rate must not fall with notional "
                                        f"(previous tier {self.mmr[i - 1]})", mmr)
                if lev > self.max_leverage[i - 1]:
                    raise err(i, "max_leverage", f"max leverage must not rise with notional "
                                                 f"(previous tier {self.max_leverage[i - 1]})",
                              lev)
            # MM must stay non-negative at the bottom of the bracket.
            if self.floor[i] * mmr - self.maint_amount[i] < -1e-9 * max(1.0, self.maint_amount[i]):
                raise err(i, "maint_amount",
                          "maintenance margin would be negative at the bracket floor",
                          self.maint_amount[i])


def _at(where: str, column: str, row_offset: int) -> str:
    return f"{where}.{column}" if row_offset == 0 else f"{where}, column {column}"


def read_tier_csv(path: Path, key: str = "exchange.tiers",
                  source: str | None = None) -> TierTable:
    """Read a tier CSV (columns as in :data:`COLUMNS`); errors name row and column."""
    label = source or str(path)
    try:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])
                       and c not in ("maint_amount", "notional_cap")]
            if missing:
                raise ConfigError(key, f"tier CSV {path.name} lacks column(s) {missing}",
                                  source=label)
            rows = list(reader)
    except OSError as e:
        raise ConfigError(key, f"cannot read tier CSV: {e.strerror}", str(path),
                          label) from None
    # Data rows start on line 2 of the file.
    return TierTable.from_rows(rows, key=f"{key} ({path.name})", source=label, row_offset=2)


def builtin_tiers(name: str) -> TierTable:
    ref = resources.files("stress.data").joinpath(f"{name}.csv")
    if not ref.is_file():
        ref = resources.files("stress.data").joinpath("tiers", f"{name}.csv")
    with resources.as_file(ref) as p:
        return read_tier_csv(Path(p), key=f"builtin tier table {name}")


def load_tiers(cfg, key: str = "exchange.tiers") -> TierTable:
    """Tier table named by ``cfg.exchange.tiers`` (built-in, CSV or inline)."""
    spec = cfg.exchange.tiers
    if isinstance(spec, list):
        return TierTable.from_rows([r.model_dump() for r in spec], key=key, source=cfg.source)
    if spec in builtin_names():
        return builtin_tiers(spec)
    if not (spec.endswith(".csv") or "/" in spec):
        raise ConfigError(key, f"unknown built-in tier table (built-ins: "
                               f"{', '.join(builtin_names())}; "
                               f"or give a .csv path)", spec, cfg.source)
    return read_tier_csv(cfg.resolve(spec), key=key, source=cfg.source)
