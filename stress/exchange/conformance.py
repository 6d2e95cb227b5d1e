"""Conformance with the venues' golden test vectors.

A *case* (schema in ``tests/golden/README.md``) names a ``kind`` of quantity
(``liquidation_price``, ``funding_payment``, ...), a ``venue``, a ``contract``
(``linear`` or ``inverse``), ``inputs`` and ``expected`` outputs with a
``tolerance``. :func:`evaluate` computes the outputs from the inputs with the
reference formulas of :mod:`stress.exchange.margin`; :func:`check` compares
them with the expected values::

    from stress.exchange.conformance import check, evaluate, load_cases

    for case in load_cases("tests/golden/okx.json"):
        for r in check(case, base_dir="tests/golden"):
            print(r.id, r.key, r.expected, r.got, r.passed)

    evaluate({"id": "x", "kind": "liquidation_price", "venue": "generic",
              "contract": "linear", "inputs": {"side": "long", "qty": 1,
              "entry_price": 100, "collateral": 10, "mmr": 0.005},
              "expected": {"liquidation_price": None}})

The venue only sets defaults that the README leaves open (the margin-ratio
convention is OKX's for ``okx_linear``) and the contract when a case omits it;
every formula follows from the inputs. A case that cannot be computed as
stated (unknown kind, venue, contract or expected key; a missing or malformed
input) raises :class:`ConformanceError` naming the case and the input, never a
wrong number. A bad tier table raises :class:`stress.errors.ConfigError`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable

from stress.errors import StressError
from stress.exchange import margin
from stress.exchange.margin import MarginRule, Position
from stress.exchange.tiers import TierTable, read_tier_csv

VENUES = ("generic", "binance_usdm", "binance_coinm", "bybit_linear", "bybit_inverse",
          "okx_linear", "gate_linear", "bitmex_inverse", "hyperliquid", "dydx_v4")
INVERSE_VENUES = ("binance_coinm", "bybit_inverse", "bitmex_inverse")

#: Outputs each kind computes; ``expected`` may name only these.
OUTPUTS: dict[str, tuple[str, ...]] = {
    "unrealized_pnl": ("upnl",),
    "roe": ("roe", "upnl"),
    "initial_margin": ("initial_margin",),
    "maintenance_margin": ("maintenance_margin", "mmr"),
    "margin_ratio": ("margin_ratio",),
    "liquidation_price": ("liquidation_price", "liquidation_price_tick_rounded", "mmr"),
    "bankruptcy_price": ("bankruptcy_price", "bankruptcy_price_tick_rounded"),
    "funding_payment": ("payment",),
    "adl_rank": ("scores", "ranking"),
    "tier_lookup": ("tier", "mmr", "maint_amount", "max_leverage", "maintenance_margin"),
    "maint_amount": ("maint_amount",),
    "tier_reduction": ("current_tier", "target_tier", "remaining_qty", "close_qty"),
}

DEFAULT_TOLERANCE = {"rel": 1e-8, "abs": 1e-9}

# Spellings of the fee basis: on the notional at the price in question (the default),
# at entry, or at the bankruptcy price.
_FEE_BASES = {"price": "price", "mark": "price", "mark_price": "price",
              "liquidation_price": "price", "entry": "entry", "entry_price": "entry",
              "bankruptcy_price": "bankruptcy_price"}

_REQUIRED = object()


class ConformanceError(StressError):
    """A golden-vector case that cannot be evaluated as stated (names the case and input).

    Parameters
    ----------
    message : str
        What is wrong, starting with the case id and the input or key.
    source : str, optional
        The file the case comes from; prefixed to the message.
    """

    def __init__(self, message: str, source: str | None = None):
        self.message = message
        self.source = source
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"{self.source}: {self.message}" if self.source else self.message


@dataclass(frozen=True)
class Result:
    """One compared output of one case (a dict output gives one result per entry)."""

    id: str
    kind: str
    venue: str
    key: str
    expected: Any
    got: Any
    passed: bool


class _Fields:
    """Typed access to a mapping of inputs; errors name the case and the field."""

    def __init__(self, case_label: str, kind: str, values: dict, prefix: str):
        self.case_label = case_label
        self.kind = kind
        self.values = values
        self.prefix = prefix

    def error(self, name: str, message: str) -> ConformanceError:
        return ConformanceError(f"{self.case_label}: {self.prefix}.{name}: {message}")

    def has(self, name: str) -> bool:
        return self.values.get(name) is not None

    def number(self, name: str, default: Any = _REQUIRED, *, positive: bool = False,
               nonnegative: bool = False) -> float:
        v = self.values.get(name)
        if v is None:
            if default is _REQUIRED:
                raise self.error(name, f"missing (required by kind {self.kind})")
            return default
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise self.error(name, f"must be a number, got {v!r}")
        v = float(v)
        if not math.isfinite(v):
            raise self.error(name, f"must be finite, got {v!r}")
        if positive and not v > 0:
            raise self.error(name, f"must be > 0, got {v!r}")
        if nonnegative and v < 0:
            raise self.error(name, f"must be >= 0, got {v!r}")
        return v

    def choice(self, name: str, options, default: Any = _REQUIRED) -> str:
        v = self.values.get(name)
        if v is None:
            if default is _REQUIRED:
                raise self.error(name, f"missing (required by kind {self.kind})")
            return default
        if v not in options:
            raise self.error(name, f"must be one of {', '.join(map(str, options))}, got {v!r}")
        return v

    def side(self) -> float:
        return 1.0 if self.choice("side", ("long", "short")) == "long" else -1.0


class _Case(_Fields):
    """A validated case: kind, venue, contract and expected keys checked up front."""

    def __init__(self, case: Any, base_dir: str | Path | None):
        if not isinstance(case, dict):
            raise ConformanceError(f"a case must be an object, got {type(case).__name__}")
        self.id = case.get("id")
        if not isinstance(self.id, str) or not self.id:
            raise ConformanceError(f"case {self.id!r}: id: must be a non-empty string")
        label = f"case {self.id!r}"
        kind = case.get("kind")
        if kind not in OUTPUTS:
            raise ConformanceError(f"{label}: kind: unknown kind {kind!r} (known: "
                                   f"{', '.join(OUTPUTS)})")
        self.venue = case.get("venue", "generic")
        if self.venue not in VENUES:
            raise ConformanceError(f"{label}: venue: unknown venue {self.venue!r} (known: "
                                   f"{', '.join(VENUES)})")
        contract = case.get("contract")
        if contract is None:
            contract = margin.INVERSE if self.venue in INVERSE_VENUES else margin.LINEAR
        if contract not in margin.CONTRACTS:
            raise ConformanceError(f"{label}: contract: unknown contract {contract!r} (known: "
                                   f"{', '.join(margin.CONTRACTS)})")
        self.contract = contract
        inputs = case.get("inputs", {})
        if not isinstance(inputs, dict):
            raise ConformanceError(f"{label}: inputs: must be an object")
        super().__init__(label, kind, inputs, "inputs")
        if inputs.get("contract") not in (None, contract):
            raise self.error("contract", f"{inputs['contract']!r} contradicts the case's "
                                         f"contract {contract!r}")
        expected = case.get("expected", {})
        if not isinstance(expected, dict):
            raise ConformanceError(f"{label}: expected: must be an object")
        for key in expected:
            if key not in OUTPUTS[kind]:
                raise ConformanceError(f"{label}: expected.{key}: unknown output for kind "
                                       f"{kind} (known: {', '.join(OUTPUTS[kind])})")
        self.expected = expected
        self.base_dir = Path(base_dir) if base_dir is not None else None

    def wants(self, key: str) -> bool:
        return key in self.expected

    @property
    def inverse(self) -> bool:
        return self.contract == margin.INVERSE

    def multiplier(self) -> float:
        m = self.number("contract_multiplier", 1.0, positive=True)
        if not self.inverse and m != 1.0:
            raise self.error("contract_multiplier", f"applies to inverse contracts only (qty of "
                                                    f"a linear contract is in base units), "
                                                    f"got {m!r}")
        return m

    def collateral(self, qty: float, entry_price: float) -> tuple[float, float]:
        """``(C, other_positions_mm)``: isolated collateral (default: IM at ``leverage``) or
        the cross collateral."""
        if self.choice("margin_mode", ("isolated", "cross"), "isolated") == "cross":
            omm = self.number("other_positions_mm", 0.0)
            c = margin.cross_collateral(self.number("wallet_balance"), omm,
                                        self.number("other_positions_upnl", 0.0))
            return c, omm
        if self.has("collateral") or not self.has("leverage"):
            return self.number("collateral"), 0.0
        return margin.position_initial_margin(
            qty, entry_price, self.number("leverage", positive=True), contract=self.contract,
            contract_multiplier=self.multiplier()), 0.0

    def position(self, with_collateral: bool = True) -> tuple[Position, float]:
        s = self.side()
        qty = self.number("qty", positive=True)
        entry = self.number("entry_price", positive=True)
        c, omm = self.collateral(qty, entry) if with_collateral else (0.0, 0.0)
        return Position(s * qty, entry, c, self.contract, self.multiplier()), omm

    def tiers(self) -> TierTable:
        spec = self.values["tiers"]
        key = f"{self.case_label}: inputs.tiers"
        if isinstance(spec, list):
            for i, row in enumerate(spec):
                if not isinstance(row, dict):
                    raise self.error(f"tiers.{i}", "a tier row must be an object with the "
                                                   "tier CSV's column names")
            return TierTable.from_rows(spec, key=key)
        if not isinstance(spec, str) or not spec:
            raise self.error("tiers", f"must be a CSV file name or a list of rows, got {spec!r}")
        return _read_tiers(spec, self.base_dir, key, self.error)

    def rule(self, with_fee: bool = True) -> MarginRule:
        tiers, mmr, amount = None, 0.0, 0.0
        if self.has("tiers"):
            tiers = self.tiers()
        elif self.has("mmr"):
            mmr = self.number("mmr", nonnegative=True)
            amount = self.number("maint_amount", 0.0)
        elif self.has("max_leverage"):
            mmr = margin.hyperliquid_mmr(self.number("max_leverage", positive=True))
            amount = self.number("maint_amount", 0.0)
        else:
            raise self.error("mmr", f"missing (kind {self.kind} needs mmr, tiers or "
                                    f"max_leverage)")
        fee_rate, fee_basis = 0.0, "price"
        if with_fee:
            fee_rate = self.number("fee_rate", 0.0)
            fee_basis = _FEE_BASES[self.choice("fee_basis", tuple(_FEE_BASES), "price")]
        return MarginRule(tiers, mmr, amount, self.choice("mm_basis", margin.MM_BASES, "mark"),
                          fee_rate, fee_basis)

    def price(self, *names: str) -> float:
        """The first of ``names`` given (all must be positive); missing: names the first."""
        for name in names:
            if self.has(name):
                return self.number(name, positive=True)
        return self.number(names[0], positive=True)


def _read_tiers(spec: str, base_dir: Path | None, key: str,
                error: Callable[[str, str], ConformanceError]) -> TierTable:
    """Resolve a tier file: absolute path, relative to ``base_dir``, relative to the current
    directory, then the bundled ``stress/data/tiers/<basename>``."""
    path = Path(spec)
    candidates = [path] if path.is_absolute() else []
    if not path.is_absolute():
        if base_dir is not None:
            candidates.append(base_dir / path)
        candidates.append(Path.cwd() / path)
    for p in candidates:
        if p.is_file():
            return read_tier_csv(p, key=key, source=str(p))
    bundled = resources.files("stress.data").joinpath("tiers", path.name)
    if bundled.is_file():
        with resources.as_file(bundled) as p:
            return read_tier_csv(Path(p), key=key, source=f"bundled tiers/{path.name}")
    looked = ", ".join(str(p) for p in candidates)
    raise error("tiers", f"tier file {spec!r} not found (looked in {looked} and the bundled "
                         f"stress/data/tiers)")


# ---------------------------------------------------------------------------
# One function per kind: case -> outputs
# ---------------------------------------------------------------------------

def _unrealized_pnl(c: _Case) -> dict:
    pos, _ = c.position(with_collateral=False)
    return {"upnl": pos.pnl(c.number("mark_price", positive=True))}


def _roe(c: _Case) -> dict:
    pos, _ = c.position(with_collateral=False)
    mark = c.number("mark_price", positive=True)
    lev = c.number("leverage", positive=True)
    return {"upnl": pos.pnl(mark),
            "roe": margin.position_roe(pos.qty, pos.entry_price, mark, lev, pos.contract,
                                       pos.contract_multiplier)}


def _initial_margin(c: _Case) -> dict:
    qty = c.number("qty", positive=True)
    price = c.price("price", "entry_price", "mark_price")
    if c.has("imf"):
        im = margin.position_initial_margin(qty, price, imf=c.number("imf", positive=True),
                                            contract=c.contract,
                                            contract_multiplier=c.multiplier())
    else:
        # Without a chosen leverage, the initial margin at the maximum (Hyperliquid's
        # maintenance margin is half of it).
        name = "max_leverage" if not c.has("leverage") and c.has("max_leverage") else "leverage"
        im = margin.position_initial_margin(qty, price, c.number(name, positive=True),
                                            contract=c.contract,
                                            contract_multiplier=c.multiplier())
    return {"initial_margin": im}


def _notional(c: _Case) -> float:
    """``notional`` as given (quote, or coin for inverse), else ``qty`` at the price."""
    if c.has("notional"):
        return c.number("notional", nonnegative=True)
    names = ("entry_price", "price", "mark_price") if c.values.get("mm_basis") == "entry" \
        else ("price", "mark_price")
    price = c.price(*names)
    return margin.position_notional(c.number("qty", positive=True), price, c.contract,
                                    c.multiplier())


def _maintenance_margin(c: _Case) -> dict:
    rule = c.rule(with_fee=False)
    n = _notional(c)
    return {"maintenance_margin": rule.maintenance_margin(n), "mmr": rule.rate(n)[0]}


def _margin_ratio(c: _Case) -> dict:
    default = "equity_over_mm_plus_fee" if c.venue == "okx_linear" else "mm_over_equity"
    convention = c.choice("convention", margin.MARGIN_RATIO_CONVENTIONS, default)
    if c.has("maintenance_margin") or c.has("margin_balance"):
        ratio = margin.margin_ratio_as(c.number("maintenance_margin"),
                                       c.number("margin_balance"), convention)
    else:
        pos, omm = c.position()
        ratio = margin.position_margin_ratio(pos, c.number("mark_price", positive=True),
                                             c.rule(), convention, omm)
    return {"margin_ratio": ratio}


def _tick_rounded(c: _Case, key: str, price: float, side: float) -> dict:
    if not (c.wants(key) or c.has("tick_size")):
        return {}
    return {key: margin.round_to_tick(price, c.number("tick_size", positive=True), up=side > 0)}


def _liquidation_price(c: _Case) -> dict:
    pos, _ = c.position()
    rule = c.rule()
    lp = margin.position_liquidation_price(pos, rule)
    out = {"liquidation_price": lp.price, "mmr": rule.brackets()[lp.tier][2]}
    out.update(_tick_rounded(c, "liquidation_price_tick_rounded", lp.price, pos.side))
    return out


def _bankruptcy_price(c: _Case) -> dict:
    pos, _ = c.position()
    bp = margin.position_bankruptcy_price(pos, c.number("fee_rate", 0.0))
    out = {"bankruptcy_price": bp}
    out.update(_tick_rounded(c, "bankruptcy_price_tick_rounded", bp, pos.side))
    return out


def _funding_payment(c: _Case) -> dict:
    qty = c.side() * c.number("qty", positive=True)
    return {"payment": margin.funding_payment(qty, c.price("mark_price", "price"),
                                              c.number("funding_rate"), c.contract,
                                              c.multiplier())}


def _adl_rank(c: _Case) -> dict:
    mark = c.number("mark_price", positive=True)
    rows = c.values.get("positions")
    if not isinstance(rows, list) or not rows:
        raise c.error("positions", "missing or empty (a list of {id, side, qty, entry_price, "
                                   "collateral})")
    scores: dict[str, float] = {}
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise c.error(f"positions.{i}", "must be an object")
        p = _Fields(c.case_label, c.kind, row, f"inputs.positions.{i}")
        pid = row.get("id")
        if not isinstance(pid, (str, int)) or isinstance(pid, bool) or str(pid) in scores:
            raise p.error("id", f"must be a unique string, got {pid!r}")
        qty = p.side() * p.number("qty", positive=True)
        entry = p.number("entry_price", positive=True)
        mult = c.multiplier()
        if p.has("collateral") or not p.has("leverage"):
            coll = p.number("collateral")
        else:
            coll = margin.position_initial_margin(qty, entry, p.number("leverage", positive=True),
                                                  contract=c.contract, contract_multiplier=mult)
        scores[str(pid)] = margin.position_adl_score(
            Position(qty, entry, coll, c.contract, mult), mark)
    # sorted() is stable: equal scores keep their input order.
    return {"scores": scores, "ranking": sorted(scores, key=lambda k: -scores[k])}


def _tier_lookup(c: _Case) -> dict:
    if not c.has("tiers"):
        raise c.error("tiers", f"missing (required by kind {c.kind})")
    t = c.tiers()
    n = _notional(c)
    k = t.index(n)
    return {"tier": k + 1, "mmr": float(t.mmr[k]), "maint_amount": float(t.maint_amount[k]),
            "max_leverage": float(t.max_leverage[k]), "maintenance_margin": t.maintenance_margin(n)}


def _maint_amount(c: _Case) -> dict:
    return {"maint_amount": margin.next_maint_amount(
        c.number("notional_floor", nonnegative=True), c.number("mmr", nonnegative=True),
        c.number("prev_mmr", nonnegative=True), c.number("prev_maint_amount", 0.0))}


def _tier_reduction(c: _Case) -> dict:
    if not c.has("tiers"):
        raise c.error("tiers", f"missing (required by kind {c.kind})")
    t = c.tiers()
    s = c.side() if c.has("side") else 1.0
    r = margin.tier_reduction(s * c.number("qty", positive=True),
                              c.price("mark_price", "price"), t, c.contract, c.multiplier())
    return {"current_tier": r.current_tier + 1, "target_tier": r.target_tier + 1,
            "remaining_qty": abs(r.remaining_qty), "close_qty": r.close_qty}


_KINDS: dict[str, Callable[[_Case], dict]] = {
    "unrealized_pnl": _unrealized_pnl,
    "roe": _roe,
    "initial_margin": _initial_margin,
    "maintenance_margin": _maintenance_margin,
    "margin_ratio": _margin_ratio,
    "liquidation_price": _liquidation_price,
    "bankruptcy_price": _bankruptcy_price,
    "funding_payment": _funding_payment,
    "adl_rank": _adl_rank,
    "tier_lookup": _tier_lookup,
    "maint_amount": _maint_amount,
    "tier_reduction": _tier_reduction,
}


def _plain(v: Any) -> Any:
    """numpy scalars to Python numbers, recursively."""
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_plain(x) for x in v]
    if hasattr(v, "item"):
        return v.item()
    return v


# ---------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------

def evaluate(case: dict, base_dir: str | Path | None = None) -> dict:
    """Compute the outputs of one golden-vector case from its inputs.

    Parameters
    ----------
    case : dict
        A case in the golden-vector schema. ``expected`` may hold only the wanted
        keys, with any values (``null`` included): only its keys are read.
    base_dir : path, optional
        Folder that relative tier-file names are resolved against first (then the
        current directory, then the bundled ``stress/data/tiers``).

    Returns
    -------
    dict
        Output name → value: at least every key of ``expected``. For ``adl_rank``,
        ``scores`` maps position id → score and ``ranking`` lists the ids, highest
        score first (ties in input order). Tiers are 1-based.

    Raises
    ------
    ConformanceError
        Unknown kind, venue, contract or expected key; a missing or malformed input.
    stress.errors.ConfigError
        An invalid tier table.
    """
    c = _Case(case, base_dir)
    try:
        out = _plain(_KINDS[c.kind](c))
    except (ValueError, ArithmeticError) as e:  # a formula's own domain check
        if isinstance(e, StressError):
            raise
        raise ConformanceError(f"{c.case_label}: {e}") from None
    missing = [k for k in c.expected if k not in out]
    if missing:  # pragma: no cover - every kind computes its outputs or raises
        raise ConformanceError(f"{c.case_label}: expected.{missing[0]}: not computed")
    return out


def close(got: Any, expected: Any, tolerance: dict | None = None) -> bool:
    """The README's rule: ``abs(got − exp) <= max(abs_tol, rel_tol·abs(exp))``.

    Numbers are compared with the tolerance; anything else (strings) must be equal.
    """
    tol = DEFAULT_TOLERANCE if tolerance is None else tolerance
    numeric = (int, float)
    if isinstance(expected, numeric) and not isinstance(expected, bool):
        if not isinstance(got, numeric) or isinstance(got, bool):
            return False
        if math.isinf(expected) or math.isinf(got):
            return got == expected
        return abs(got - expected) <= max(tol.get("abs", 0.0), tol.get("rel", 0.0) * abs(expected))
    return got == expected


def _tolerance(case: dict, label: str) -> dict:
    tol = case.get("tolerance", DEFAULT_TOLERANCE)
    if not isinstance(tol, dict) or set(tol) - {"rel", "abs"}:
        raise ConformanceError(f"{label}: tolerance: must be an object with rel and/or abs")
    for k, v in tol.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
            raise ConformanceError(f"{label}: tolerance.{k}: must be a number >= 0, got {v!r}")
    return tol


def check(case: dict, base_dir: str | Path | None = None) -> list[Result]:
    """Evaluate a case and compare every expected output with the case's tolerance.

    A dict output (ADL ``scores``) gives one :class:`Result` per expected entry
    (key ``scores.<id>``); a list output (``ranking``) must match exactly.

    Raises
    ------
    ConformanceError
        As :func:`evaluate`, and for an expected value that is ``null`` or a
        malformed tolerance.
    """
    got = evaluate(case, base_dir)
    cid, kind, venue = case["id"], case["kind"], case.get("venue", "generic")
    label = f"case {cid!r}"
    tol = _tolerance(case, label)
    results = []
    for key, exp in case.get("expected", {}).items():
        if exp is None:
            raise ConformanceError(f"{label}: expected.{key}: no value to compare with")
        value = got[key]
        if isinstance(exp, dict):
            for sub, e in exp.items():
                g = value.get(str(sub)) if isinstance(value, dict) else None
                results.append(Result(cid, kind, venue, f"{key}.{sub}", e, g,
                                      g is not None and close(g, e, tol)))
        elif isinstance(exp, list):
            results.append(Result(cid, kind, venue, key, exp, value, list(value) == exp))
        else:
            results.append(Result(cid, kind, venue, key, exp, value, close(value, exp, tol)))
    return results


def load_cases(path: str | Path) -> list[dict]:
    """The cases of a golden-vector file: ``{"cases": [...]}`` or a bare list.

    Raises
    ------
    ConformanceError
        The file is missing or unreadable, not JSON, or not a list of case objects.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConformanceError("file not found", source=str(path)) from None
    except (OSError, UnicodeDecodeError) as e:
        reason = getattr(e, "strerror", None) or str(e)
        raise ConformanceError(f"cannot read: {reason}", source=str(path)) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConformanceError(f"invalid JSON: line {e.lineno} column {e.colno}: {e.msg}",
                               source=str(path)) from None
    cases = data.get("cases") if isinstance(data, dict) else data
    if not isinstance(cases, list):
        raise ConformanceError('expected {"cases": [...]} or a list of cases', source=str(path))
    for i, case in enumerate(cases):
        if not isinstance(case, dict):
            raise ConformanceError(f"cases.{i}: a case must be an object", source=str(path))
    return cases
