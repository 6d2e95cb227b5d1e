"""Parameter sweeps: one config run over the Cartesian grid of swept keys.

Every grid point runs with the same ``run.seed`` and the same paths, so path
*i* sees the same prices (and, for a synthetic book, the same accounts) at
every point: differences between points come from the swept keys, not from
sampling noise (common random numbers). Each point is an ordinary run in
``OUT/points/<k>/``; ``OUT/sweep.nc`` stacks them with one extra dimension per
swept key, placed first.

Every point's config is built, validated and prepared (data files read,
cross-field rules checked) before the first shard runs or any file is written.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import shutil
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import numpy as np
import xarray as xr
import yaml

from stress.config import Config, fund_record_steps
from stress.errors import ConfigError, StressError

SWEEP_FILE = "sweep.nc"
POINTS_DIR = "points"
RUNTIME_OPTIONS = ("workers", "out", "progress", "scenario", "backend", "scheduler", "cluster",
                   "resume", "on_shard", "on_point")

# Keys whose change would misalign the points (or break common random numbers),
# with the reason given to the user. Other misalignments (policy names, the
# fund's time axis, money units) are found by comparing the built configs.
FIXED_KEYS = {
    "run.name": "it names the sweep's output folder (each point runs in OUT/points/<k>/)",
    "run.paths": "every point runs the same paths (common random numbers); set it in the config",
    "run.steps": "every point needs the same steps, so that the fund's time axis aligns; set it "
                 "in the config",
    "run.seed": "every point uses the same seed (common random numbers); for more paths raise "
                "run.paths",
    "run.shard_size": "results do not depend on it; set it in the config",
    "exchange.preset": "a preset's settings are laid under the config when it is loaded, so "
                       "changing the name afterwards changes nothing else; sweep the keys it "
                       "sets, or run one sweep per preset",
}

# Names a swept dimension must not take: the dims, coordinates and variables of a
# run's results, and the coordinates the sweep adds.
_SWEEP_COORDS = ("point", "config_hash")


def _reserved_names() -> set[str]:
    from stress.runner.variables import PATH_METRICS
    return {v.name for v in PATH_METRICS} | {
        "loss_share", "fund", "policy", "layers", "fund_initial", "fund_cap", "path", "bearer",
        "time", "quantile", *_SWEEP_COORDS}


# ------------------------------------------------------------- value syntax
_BOOL = "tag:yaml.org,2002:bool"
_FLOAT = "tag:yaml.org,2002:float"
_NULL = "tag:yaml.org,2002:null"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"


class _ValueLoader(yaml.SafeLoader):
    """YAML scalars as a user means them on a command line (close to YAML 1.2's
    core schema): ``1e6`` and ``5e-3`` are numbers, ``none`` is null, only
    ``true``/``false`` are booleans (``yes``, ``on``, dates stay strings)."""


_ValueLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_BOOL, _TIMESTAMP)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_ValueLoader.add_implicit_resolver(
    _BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_ValueLoader.add_implicit_resolver(
    _FLOAT, re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))
_ValueLoader.add_implicit_resolver(_NULL, re.compile(r"^(?:none|None|NONE)$"), list("nN"))


def parse_value(text: str) -> Any:
    """One ``--set`` value: a YAML scalar or flow collection (``[2, 5]``, ``{a: 1}``).

    ``1e6`` → ``1000000.0``, ``10`` → ``10``, ``null``/``none`` → ``None``,
    ``true``/``false`` → bool, anything else that is not YAML syntax → the string.
    Raises ``ValueError`` when the text is not valid YAML.
    """
    try:
        return yaml.load(text, Loader=_ValueLoader)
    except yaml.YAMLError as e:
        raise ValueError(getattr(e, "problem", None) or "not a valid YAML value") from None


def split_values(text: str) -> list[str]:
    """Split ``V1,V2,...`` on the commas outside brackets, braces and quotes."""
    parts, cur, depth, quote = [], [], 0, None
    for ch in text:
        if quote is not None:
            cur.append(ch)
            if ch == quote:
                quote = None
            continue
        before = "".join(cur).rstrip()
        if ch in "'\"" and (not before or before[-1] in "[{,:"):
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
            if depth < 0:
                raise ValueError(f"unbalanced {ch!r}")
        elif ch == "," and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
            continue
        cur.append(ch)
    if quote is not None:
        raise ValueError(f"unclosed quote {quote}")
    if depth:
        raise ValueError("unclosed bracket")
    parts.append("".join(cur).strip())
    return parts


def parse_assignment(text: str) -> tuple[str, list[Any], list[str]]:
    """``KEY=V1,V2,...`` → ``(key, values, value texts)``; raises :class:`ConfigError`."""
    where = f"--set {text}"
    expected = "expected KEY=V1,V2,... (a dotted config key and its values)"
    if "=" not in text:
        raise ConfigError(where, f"no '=': {expected}")
    key, _, rhs = text.partition("=")
    key = key.strip()
    if not key:
        raise ConfigError(where, f"empty key: {expected}")
    if not rhs.strip():
        raise ConfigError(where, f"no values: {expected}")
    try:
        raw = split_values(rhs)
    except ValueError as e:
        raise ConfigError(where, str(e)) from None
    values = []
    for i, piece in enumerate(raw, 1):
        if not piece:
            raise ConfigError(where, f"value {i} is empty")
        try:
            values.append(parse_value(piece))
        except ValueError as e:
            raise ConfigError(where, f"cannot read value {piece!r}: {e}") from None
    return key, values, raw


# ------------------------------------------------------------------- plan
@dataclass(frozen=True)
class Point:
    """One grid point: its index (folder ``points/<index>``), values and config."""
    index: int
    values: dict[str, Any]
    labels: dict[str, str]
    config: Config
    config_hash: str


@dataclass(frozen=True)
class SweepPlan:
    """A validated sweep: the base config, the swept keys in order (the first
    varies slowest), their values and dimension names, and every point."""
    base: Config
    keys: list[str]
    values: dict[str, list[Any]]
    labels: dict[str, list[str]]
    dims: dict[str, str]
    points: list[Point]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(self.values[k]) for k in self.keys)

    @property
    def paths_total(self) -> int:
        return len(self.points) * self.base.run.paths


def _label(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def dim_names(keys: Sequence[str]) -> dict[str, str]:
    """Each swept key's dimension: its last component if that is unique among the
    swept keys (and a free identifier), else the key with ``.`` → ``__``."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    reserved = _reserved_names()
    return {k: name if last.count(name) == 1 and name.isidentifier() and name not in reserved
            else k.replace(".", "__") for k, name in zip(keys, last)}


def _alignment(cfg: Config) -> dict[str, Any]:
    """What every point of a sweep must share, so that its results stack."""
    from stress.exchange.kernels import trajectory_length
    every = fund_record_steps(cfg)
    return {
        "the policy names": [p.name for p in cfg.policies],
        "the fund's time axis (set by run.steps, run.step_minutes and "
        "fund.record_every_minutes)": (every * cfg.run.step_minutes,
                                       trajectory_length(cfg.run.steps, every)),
        "the money units (exchange.contract)": cfg.exchange.contract,
    }


def _build(base: Config, assign: dict[str, Any]) -> Config:
    try:
        return base.with_overrides(assign)
    except StressError:
        raise
    except (LookupError, TypeError, ValueError):  # a list index that is not there, ...
        key = next(iter(assign)) if len(assign) == 1 else ", ".join(assign)
        raise ConfigError(key, "no such config key") from None


def _plain(e: StressError) -> str:
    """The error without the config file's name: the value comes from --set."""
    if isinstance(e, ConfigError):
        return str(ConfigError(e.key, e.message, e.value))
    return str(e)


def plan_sweep(base: Config, grid: Mapping[str, Sequence[Any]],
               labels: Mapping[str, Sequence[str]] | None = None, *,
               prefix: str = "") -> SweepPlan:
    """Validate a sweep and build every point's config; nothing is written.

    Parameters
    ----------
    base : Config
        The validated config every point starts from.
    grid : mapping
        Dotted config key → list of values, in order (the first key varies slowest).
    labels : mapping, optional
        The values as the user wrote them (for messages); default: their text.
    prefix : str
        Put before ``KEY=VALUE`` in messages (``"--set "`` on the command line).

    Raises
    ------
    ConfigError
        Naming ``KEY=VALUE`` (or the whole point) and what is wrong with it.
    """
    from stress.runner.prepare import prepare
    if not grid:
        raise ConfigError("sweep", "nothing to sweep: give at least one key and its values")
    keys = list(grid)
    values = {k: list(grid[k]) for k in keys}
    texts = {k: [str(t) for t in labels[k]] if labels and k in labels
             else [_label(v) for v in values[k]] for k in keys}

    def where(key: str, text: str | None = None) -> str:
        return f"{prefix}{key}={text if text is not None else ','.join(texts[key])}"

    for key in keys:
        if not values[key]:
            raise ConfigError(where(key), "no values")
        for fixed, why in FIXED_KEYS.items():
            if key == fixed:
                raise ConfigError(where(key), f"cannot be swept: {why}")
            if fixed.startswith("run.") and fixed.startswith(key + "."):
                raise ConfigError(where(key), f"it sets {fixed}, which cannot be swept: {why}")
        coord, _ = coordinate(values[key])
        for i in range(len(coord)):
            for j in range(i):
                if coord[i] == coord[j]:
                    raise ConfigError(where(key), f"the value {texts[key][i]} repeats "
                                                  f"{texts[key][j]}")

    points, first = [], None
    for k, combo in enumerate(itertools.product(*(range(len(values[key])) for key in keys))):
        assign = {key: values[key][i] for key, i in zip(keys, combo)}
        point_labels = {key: texts[key][i] for key, i in zip(keys, combo)}
        try:
            cfg = _build(base, assign)
            prep = prepare(cfg)
        except StressError as e:
            raise ConfigError(_culprit(base, keys, assign, point_labels, e, where),
                              _plain(e) + _hint(assign, point_labels)) from None
        shape = _alignment(cfg)
        if first is None:
            first = Point(k, assign, point_labels, cfg, prep.config_hash), shape
        for what, got in shape.items():
            if got != first[1][what]:
                changed = [key for key in keys if assign[key] != first[0].values[key]]
                if len(changed) == 1:
                    key = changed[0]
                    raise ConfigError(where(key, point_labels[key]),
                                      f"changes {what} from its value at "
                                      f"{key}={first[0].labels[key]}; every point of a sweep "
                                      f"must share it")
                raise ConfigError(_name(keys, point_labels, where),
                                  f"changes {what} from its value at the first point; every "
                                  f"point of a sweep must share it")
        points.append(Point(k, assign, point_labels, cfg, prep.config_hash))
        del prep  # a synthetic book can be large: keep only its hash
    return SweepPlan(base, keys, values, texts, dim_names(keys), points)


def _name(keys: Sequence[str], labels: Mapping[str, str], where: Callable) -> str:
    return " ".join(where(key, labels[key]) for key in keys)


def _culprit(base: Config, keys: Sequence[str], assign: Mapping[str, Any],
             labels: Mapping[str, str], error: StressError, where: Callable) -> str:
    """Which ``KEY=VALUE`` a point's error is due to: a key that fails the same way
    alone on the base config, else the whole point (the keys interact)."""
    if len(keys) > 1:
        message = _plain(error)
        for key in keys:
            try:
                _build(base, {key: assign[key]})
            except StressError as e:
                if _plain(e) == message:
                    return where(key, labels[key])
    return _name(keys, labels, where)


def _hint(assign: Mapping[str, Any], labels: Mapping[str, str]) -> str:
    """``none`` reads as null: say how to get the word when a point with it fails."""
    words = [k for k, v in assign.items() if v is None and labels[k].lower() == "none"]
    if not words:
        return ""
    return f" (none reads as null; for the text write {words[0]}=\"'none'\")"


def coordinate(values: Sequence[Any]) -> tuple[np.ndarray, bool]:
    """A swept key's coordinate values and whether they were turned into text.

    Numbers stay numbers (ints, or floats if any is a float), booleans stay
    booleans; anything else (strings, null, lists, mappings, a mix) becomes
    its text: ``[2, 5]`` → ``"[2, 5]"``.
    """
    if all(isinstance(v, bool) for v in values):
        return np.asarray(values, dtype=bool), False
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        arr = np.asarray(values)
        if arr.dtype.kind in "if":
            return arr, False
    return np.asarray([v if isinstance(v, str) else str(v) for v in values], dtype=object), \
        not all(isinstance(v, str) for v in values)


def _long_name(base: Config, key: str) -> str:
    """The config field's description (first sentence), else the key."""
    parts = key.split(".")
    try:
        node: Any = base
        for part in parts[:-1]:
            node = node[int(part)] if isinstance(node, (list, tuple)) else getattr(node, part)
        field = type(node).model_fields[parts[-1]]
    except (AttributeError, IndexError, KeyError, TypeError, ValueError):
        return f"config key {key}"
    text = (field.description or "").replace("`", "").strip()
    if not text:
        return f"config key {key}"
    first = re.split(r"(?<=\.)\s+(?=[A-Z])", text, maxsplit=1)[0]
    return first


# -------------------------------------------------------------------- run
class PointDone(NamedTuple):
    """Reported after each grid point: ``kept`` when ``--resume`` found it finished."""
    point: Point
    run_dir: Path
    seconds: float
    kept: bool


def _paths_done(done: Any) -> int:
    """Paths covered by one ``on_shard`` report (a named tuple with ``start`` and
    ``stop``; older drivers pass the number of paths)."""
    stop = getattr(done, "stop", None)
    return int(done) if stop is None else int(stop - done.start)


def _finished(run_dir: Path, config_hash: str) -> bool:
    from stress.runner.store import RESULTS_FILE
    f = run_dir / RESULTS_FILE
    if not f.is_file():
        return False
    try:
        with xr.open_dataset(f, engine="netcdf4") as ds:
            return ds.attrs.get("config_hash") == config_hash
    except (OSError, ValueError):
        return False


def execute_sweep(plan: SweepPlan, *, workers: int | None = None,
                  out: str | Path | None = None, backend: str = "joblib",
                  scheduler: str | None = None, cluster: str | None = None,
                  resume: bool = False, on_shard: Callable[[Any], None] | None = None,
                  on_point: Callable[[PointDone], None] | None = None
                  ) -> tuple[xr.Dataset, Path]:
    """Run every point of ``plan`` and stack the results; returns ``(Dataset, OUT)``.

    ``out`` defaults to ``results/<run.name>-sweep``. Point ``k`` runs with
    :func:`stress.runner.run.execute` into ``OUT/points/<k>/``; ``on_shard`` is
    passed on to it. With ``resume`` a point whose ``results.nc`` has the
    point's config hash is kept as it is, and the others keep their finished
    shards. ``OUT/sweep.nc`` is written last, atomically.
    """
    from stress.runner.backends import BACKENDS
    from stress.runner.run import execute
    from stress.runner.store import write_atomic

    # Options checked here too, so that a typo fails before the first point's folder.
    if backend not in BACKENDS:
        raise ConfigError("--backend", f"must be one of {', '.join(BACKENDS)}", backend)
    if workers is not None and int(workers) < 1:
        raise ConfigError("--workers", "must be >= 1", workers)
    out_dir = Path(out) if out is not None else Path("results") / f"{plan.base.run.name}-sweep"
    points_dir = out_dir / POINTS_DIR
    try:
        (out_dir / SWEEP_FILE).unlink(missing_ok=True)
        if points_dir.is_dir():  # points of an earlier, larger grid would mislead
            for stale in points_dir.iterdir():
                if stale.is_dir() and stale.name.isdigit() and int(stale.name) >= len(plan.points):
                    shutil.rmtree(stale)
    except OSError as e:
        raise StressError(f"{out_dir}: cannot write results there: {e.strerror}") from None

    for point in plan.points:
        run_dir = points_dir / str(point.index)
        t0 = time.perf_counter()
        kept = resume and _finished(run_dir, point.config_hash)
        if kept:
            if on_shard is not None:
                on_shard(point.config.run.paths)
        else:
            try:
                execute(point.config, workers=workers, out=run_dir, on_shard=on_shard,
                        backend=backend, scheduler=scheduler, cluster=cluster, resume=resume)
            except ConfigError as e:
                if e.key.startswith("--"):  # an option, not the point's config
                    raise
                raise StressError(f"point {point.index} ({_point_name(plan, point)}): "
                                  f"{_plain(e)}") from None
        if on_point is not None:
            on_point(PointDone(point, run_dir, time.perf_counter() - t0, kept))

    with ExitStack() as stack:
        ds = combine_points(plan, out_dir, stack)
        write_atomic(ds, out_dir / SWEEP_FILE)
    return open_sweep(out_dir), out_dir


def _point_name(plan: SweepPlan, point: Point) -> str:
    return ", ".join(f"{k}={point.labels[k]}" for k in plan.keys)


def _open_point(path: Path, stack: ExitStack) -> xr.Dataset:
    """A point's results, lazily with dask when it is installed (nothing large
    is held in memory), else loaded."""
    try:
        import dask  # noqa: F401
    except ImportError:
        with xr.open_dataset(path, engine="netcdf4") as ds:
            return ds.load()
    return stack.enter_context(xr.open_dataset(path, engine="netcdf4", chunks={}))


def combine_points(plan: SweepPlan, out_dir: Path, stack: ExitStack) -> xr.Dataset:
    """Stack ``OUT/points/<k>/results.nc`` into one Dataset with the swept dims first."""
    from stress import __version__
    from stress.runner.store import RESULTS_FILE

    dims = [plan.dims[k] for k in plan.keys]
    coords = {}
    for key in plan.keys:
        values, as_text = coordinate(plan.values[key])
        attrs = {"config_key": key, "long_name": _long_name(plan.base, key),
                 "config_values": json.dumps(plan.values[key], default=str)}
        if as_text:
            attrs["note"] = "values as text; config_values holds them as JSON"
        coords[plan.dims[key]] = (plan.dims[key], values, attrs)

    parts = []
    for point in plan.points:
        ds = _open_point(out_dir / POINTS_DIR / str(point.index) / RESULTS_FILE, stack)
        combo = np.unravel_index(point.index, plan.shape)
        ds = ds.expand_dims({d: [coords[d][1][i]] for d, i in zip(dims, combo)})
        parts.append(ds)

    def nest(items: list, shape: tuple[int, ...]) -> list:
        if len(shape) == 1:
            return items
        step = len(items) // shape[0]
        return [nest(items[i * step:(i + 1) * step], shape[1:]) for i in range(shape[0])]

    ds = xr.combine_nested(nest(parts, plan.shape), concat_dim=dims, data_vars="all",
                           coords="different", compat="equals", join="exact",
                           combine_attrs="drop_conflicts")
    ds = ds.drop_encoding()
    for name, (dim, values, attrs) in coords.items():
        ds[name] = xr.Variable(dim, values, attrs)
    shape = plan.shape
    ds = ds.assign_coords(
        point=(dims, np.arange(len(plan.points), dtype=np.int64).reshape(shape),
               {"long_name": "index of the grid point (its run is in points/<point>/)"}),
        config_hash=(dims, np.asarray([p.config_hash for p in plan.points],
                                      dtype=object).reshape(shape),
                     {"long_name": "SHA-256 of the point's config and data files (as in its "
                                   "results.nc)"}))
    ds = ds.transpose(*dims, ...)
    for name in ("title", "config", "config_hash"):
        ds.attrs.pop(name, None)
    base = plan.base
    ds.attrs.update({
        "title": f"stress sweep {base.run.name}",
        "run_name": base.run.name,
        "config": base.to_yaml(),
        "base_config_hash": base.hash(),
        "sweep_keys": list(plan.keys),
        "sweep_dims": [plan.dims[k] for k in plan.keys],
        "sweep_grid": yaml.safe_dump({k: plan.values[k] for k in plan.keys}, sort_keys=False,
                                     default_flow_style=None),
        "scenario": base.scenario or "",
        "seed": base.run.seed,
        "stress_version": __version__,
        "Conventions": "CF-1.8",
    })
    return ds


def open_sweep(out: str | Path) -> xr.Dataset:
    """Open a finished sweep's ``sweep.nc`` (lazily).

    Parameters
    ----------
    out : path
        The sweep's folder (``results/<run.name>-sweep`` or ``--out``), or its
        ``sweep.nc``.

    ``attrs["sweep_keys"]`` and ``attrs["sweep_dims"]`` are lists even for one key.
    """
    out = Path(out)
    f = out if out.is_file() else out / SWEEP_FILE
    if not f.is_file():
        raise StressError(f"{out}: no {SWEEP_FILE} (the sweep did not finish?)")
    ds = xr.open_dataset(f, engine="netcdf4")
    for name in ("sweep_keys", "sweep_dims"):
        value = ds.attrs.get(name)
        if isinstance(value, str):  # netCDF stores a one-element list as a string
            ds.attrs[name] = [value]
        elif value is not None:
            ds.attrs[name] = [str(v) for v in value]
    return ds


# ---------------------------------------------------------------- summary
def sweep_stats(ds: xr.Dataset) -> xr.Dataset:
    """Per grid point and policy: mean, 99 % and 99.9 % quantile of the shortfall
    (numpy's default, linear, as in the run summary) and P(fund depleted)."""
    sf = ds["shortfall"]
    if sf.chunks:
        sf = sf.chunk({"path": -1})
    q = sf.quantile([0.99, 0.999], dim="path")
    stats = xr.Dataset({
        "mean shortfall": sf.mean("path"),
        "shortfall q99": q.sel(quantile=0.99, drop=True),
        "shortfall q99.9": q.sel(quantile=0.999, drop=True),
        "P(fund depleted)": ds["fund_depleted"].mean("path"),
    })
    return stats.compute()


def sweep_table(ds: xr.Dataset):
    """A Rich table of :func:`sweep_stats`: one row per grid point × policy."""
    from rich.table import Table
    dims = list(ds.attrs["sweep_dims"])
    stats = sweep_stats(ds).transpose(*dims, "policy")
    units = ds["shortfall"].attrs.get("units", "quote")
    table = Table(title=f"{ds.attrs.get('run_name', '')}: sweep of {len(dims)} key"
                        f"{'s' if len(dims) != 1 else ''} ({ds.sizes['path']} paths per point, "
                        f"{units})")
    for d in dims:
        table.add_column(d, justify="right")
    table.add_column("policy")
    names = list(stats.data_vars)
    for name in names:
        table.add_column(name, justify="right")
    arrays = {name: stats[name].values for name in names}
    coords = [ds[d].values for d in dims]
    policies = [str(p) for p in ds["policy"].values]
    for idx in np.ndindex(*stats[names[0]].shape[:-1]):
        for j, pol in enumerate(policies):
            cells = [_show(coords[a][i]) for a, i in enumerate(idx)] + [pol]
            for name in names:
                v = float(arrays[name][idx + (j,)])
                cells.append("n/a" if math.isnan(v) else
                             f"{v:.4f}" if name.startswith("P(") else f"{v:,.0f}")
            table.add_row(*cells)
    return table


def _show(v: Any) -> str:
    if isinstance(v, (float, np.floating)):
        return f"{float(v):g}"
    return str(v)


# ------------------------------------------------------------- Python API
def sweep(config: str | Path | Config, grid: Mapping[str, Sequence[Any]],
          **overrides: Any) -> xr.Dataset:
    """Run a config over the Cartesian grid of ``grid`` with common random numbers.

    Parameters
    ----------
    config : path or Config
        A YAML config file or a validated :class:`stress.config.Config`.
    grid : mapping
        Dotted config key → list of values, e.g.
        ``{"fund.initial": [1e6, 5e6], "exchange.slippage": [0.001, 0.002]}``;
        the first key varies slowest.
    **overrides
        As in :func:`stress.run`: ``workers``, ``out`` (default
        ``results/<run.name>-sweep``), ``scenario``, ``backend``, ``scheduler``,
        ``cluster``, ``resume``, ``on_shard`` (given each point's shard reports, see
        :func:`stress.runner.run.execute`), ``on_point`` (given a :class:`PointDone`
        per finished point), any ``run`` field (``paths=200``) or a nested key with
        ``__`` (``market__sigma=0.9``), applied to the base config before the grid.

    Returns
    -------
    xarray.Dataset
        ``OUT/sweep.nc`` (opened lazily): the run variables with one leading
        dimension per swept key, coordinates ``point`` and ``config_hash`` over
        those dimensions.
    """
    from stress.runner.run import resolve_config
    runtime = {k: overrides.pop(k) for k in RUNTIME_OPTIONS if k in overrides}
    if not isinstance(grid, Mapping):
        raise ConfigError("grid", "must be a mapping of dotted config keys to lists of values",
                          grid)
    for key, values in grid.items():
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
            raise ConfigError(key, "give a list of values", values)
    base = resolve_config(config, overrides, scenario=runtime.get("scenario"))
    plan = plan_sweep(base, grid)
    ds, _ = execute_sweep(plan, workers=runtime.get("workers"), out=runtime.get("out"),
                          backend=runtime.get("backend", "joblib"),
                          scheduler=runtime.get("scheduler"), cluster=runtime.get("cluster"),
                          resume=bool(runtime.get("resume", False)),
                          on_shard=runtime.get("on_shard"), on_point=runtime.get("on_point"))
    return ds
