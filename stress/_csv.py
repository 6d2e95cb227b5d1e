"""Strict CSV reading: every error names the config key, the file, the row and the column."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from stress.errors import ConfigError


class CSVTable:
    """Rows of a CSV file as dicts, with error helpers that locate a cell."""

    def __init__(self, path: Path, key: str, source: str | None, required: tuple[str, ...]):
        self.path = Path(path)
        self.key = key
        self.source = source
        try:
            with open(self.path, newline="", encoding="utf-8-sig") as fh:
                reader = csv.DictReader(fh)
                self.columns = [c.strip() for c in (reader.fieldnames or [])]
                reader.fieldnames = self.columns
                self.rows = list(reader)
        except FileNotFoundError:
            raise ConfigError(key, "file not found", str(path), source) from None
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise ConfigError(key, f"cannot read {self.path.name}: {e}", source=source) from None
        missing = [c for c in required if c not in self.columns]
        if missing:
            raise ConfigError(key, f"{self.path.name}: missing column(s) {', '.join(missing)} "
                                   f"(columns: {', '.join(self.columns) or 'none'})",
                              source=source)
        if not self.rows:
            raise ConfigError(key, f"{self.path.name}: no data rows", source=source)

    def error(self, i: int, column: str, message: str, value: object) -> ConfigError:
        """Error at data row ``i`` (0-based); rows are reported 1-based with the file line."""
        return ConfigError(self.key, f"{self.path.name} row {i + 1} (line {i + 2}), "
                                     f"column {column}: {message}", value, self.source)

    def floats(self, column: str, *, positive: bool = False, nonnegative: bool = False,
               optional: bool = False) -> list[float]:
        out = []
        for i, row in enumerate(self.rows):
            raw = row.get(column)
            if raw is None or raw.strip() == "":
                if optional:
                    out.append(math.nan)
                    continue
                raise self.error(i, column, "missing value", raw)
            try:
                v = float(raw)
            except ValueError:
                raise self.error(i, column, "not a number", raw) from None
            if not math.isfinite(v):
                raise self.error(i, column, "must be a finite number", raw)
            if positive and v <= 0:
                raise self.error(i, column, "must be > 0", v)
            if nonnegative and v < 0:
                raise self.error(i, column, "must be >= 0", v)
            out.append(v)
        return out

    def choices(self, column: str, allowed: tuple[str, ...], *, default: str) -> list[str]:
        """Values of ``column`` from ``allowed``; an empty cell is ``default``."""
        out = []
        for i, row in enumerate(self.rows):
            raw = (row.get(column) or "").strip()
            if raw == "":
                out.append(default)
                continue
            if raw not in allowed:
                raise self.error(i, column, f"must be one of {', '.join(allowed)}", raw)
            out.append(raw)
        return out

    def strings(self, column: str) -> list[str]:
        out = []
        for i, row in enumerate(self.rows):
            raw = row.get(column)
            if raw is None or raw.strip() == "":
                raise self.error(i, column, "missing value", raw)
            out.append(raw.strip())
        return out
