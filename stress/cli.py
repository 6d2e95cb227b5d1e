"""The ``stress`` command.

User errors (bad config, bad data) print one line and exit with code 2; heavy
imports happen inside the commands so that ``stress --help`` is instant.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from stress import __version__
from stress.runner.sweep_cli import (BACKEND_OPTION, CLUSTER_OPTION, SCHEDULER_OPTION,
                                     announce_compiles)

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Monte Carlo stress tests of a perpetual-futures venue's insurance fund, "
                       "ADL, socialised loss and negative-balance protection.")

EXIT_USER_ERROR = 2


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(EXIT_USER_ERROR)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"stress {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """stress: bad debt of leveraged perpetual futures under crash scenarios."""


SCENARIO_HELP = "Named scenario to lay over the config (see `stress scenarios`)."


@app.command()
def validate(
    config: Path = typer.Argument(..., help="YAML config file."),
    scenario: Optional[str] = typer.Option(None, "--scenario", help=SCENARIO_HELP),
) -> None:
    """Check a config (and the files it reads); exit 0 if valid, 2 if not."""
    from stress.config import CSVPopulation
    from stress.errors import StressError
    from stress.runner.prepare import prepare
    from stress.runner.run import resolve_config
    try:
        cfg = resolve_config(config, {}, scenario)
        if not isinstance(cfg.population, CSVPopulation):  # (its check runs the kernel)
            from stress._jit import skip_blas_probe
            skip_blas_probe()
        prepare(cfg)
    except StressError as e:
        _fail(str(e))
    with_scenario = f" with scenario {scenario}" if scenario is not None else ""
    typer.echo(f"{config}{with_scenario}: valid ({cfg.run.paths} paths × {cfg.run.steps} "
               f"steps, {len(cfg.policies)} policies)")


@app.command()
def scenarios() -> None:
    """List the named scenarios for --scenario, with their descriptions."""
    from stress.errors import StressError
    from stress.scenarios import list_scenarios
    try:
        found = list_scenarios()
    except StressError as e:
        _fail(str(e))
    if not found:
        typer.echo("no scenarios found (looked in ./scenarios and the repository's scenarios/)")
        return
    width = max(len("scenario"), *(len(n) for n in found))
    typer.echo(f"{'scenario'.ljust(width)}  description")
    for name, description in found.items():
        typer.echo(f"{name.ljust(width)}  {description}")


@app.command()
def run(
    config: Path = typer.Argument(..., help="YAML config file."),
    workers: Optional[int] = typer.Option(None, "--workers", "-w", min=1,
                                          help="Parallel worker processes (default: all cores)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o",
                                       help="Output folder (default: results/<run.name>)."),
    no_progress: bool = typer.Option(
        False, "--no-progress", help="No progress bar (terminal) or per-shard lines (logs)."),
    scenario: Optional[str] = typer.Option(None, "--scenario", help=SCENARIO_HELP),
    resume: bool = typer.Option(
        False, "--resume", help="Keep the finished shards of an interrupted run of the same "
                                "config in the output folder and run only the rest."),
    backend: str = BACKEND_OPTION,
    scheduler: Optional[str] = SCHEDULER_OPTION,
    cluster: Optional[str] = CLUSTER_OPTION,
) -> None:
    """Run a stress test, write results/<name>/results.nc and print a summary.

    Progress goes to stderr: a bar on a terminal, one line per shard otherwise
    (logs, CI), nothing with --no-progress.
    """
    import time

    from rich.console import Console

    from stress.errors import StressError
    from stress.report.summary import read_summary_data, summary_table
    from stress.runner.run import Throughput, plan, resolve_config, run_folder
    from stress.runner.store import RESULTS_FILE

    console = Console(stderr=False)
    try:
        cfg = resolve_config(config, {}, scenario)
    except StressError as e:
        _fail(str(e))
    announce_compiles()
    t0 = time.perf_counter()
    bar = not no_progress and sys.stderr.isatty()
    where = dict(backend=backend, scheduler=scheduler, cluster=cluster, resume=resume)
    progress = Throughput(cfg.run.paths, len(plan(cfg.run.paths, cfg.run.shard_size)))
    try:
        if bar:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn,
                                       TextColumn, TimeElapsedColumn)
            from rich.text import Text

            class Live(ProgressColumn):
                """Rate and time left of the paths computed in this run (resumed
                shards fill the bar but do not count into the rate)."""

                def __init__(self, text):
                    super().__init__()
                    self.text = text

                def render(self, task) -> Text:
                    return Text(self.text(), style="progress.remaining")

            with Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                          MofNCompleteColumn(), TextColumn("paths"), TimeElapsedColumn(),
                          Live(progress.eta_text), Live(progress.rate_text),
                          console=Console(stderr=True), transient=True) as shown:
                task = shown.add_task(cfg.run.name, total=cfg.run.paths)

                def advance(done):
                    progress.add(done)
                    shown.update(task, completed=progress.paths_done)

                run_dir = run_folder(cfg, workers=workers, out=out, on_shard=advance, **where)
        elif not no_progress:
            def log(done):
                progress.add(done)
                typer.echo(progress.line(done), err=True)

            run_dir = run_folder(cfg, workers=workers, out=out, on_shard=log, **where)
        else:
            run_dir = run_folder(cfg, workers=workers, out=out, **where)
    except StressError as e:
        _fail(str(e))
    # Read with netCDF4 alone: a small run need not wait for xarray, pandas and dask.
    results = read_summary_data(run_dir / RESULTS_FILE)
    console.print(summary_table(results))
    accounts = results.attrs["accounts"]
    elapsed = time.perf_counter() - t0
    console.print(f"{cfg.run.paths} paths × {cfg.run.steps} steps × {accounts} "
                  f"accounts × {len(cfg.policies)} policies in {elapsed:.1f} s → "
                  f"{run_dir / RESULTS_FILE}")


@app.command()
def calibrate(
    csv_file: Path = typer.Argument(..., metavar="CSV",
                                    help="Price CSV with a time column and a price column."),
    model: str = typer.Option(..., "--model", "-m", help="merton, kou or hawkes."),
    column: str = typer.Option("close", "--column", help="Price column."),
    time_column: Optional[str] = typer.Option(
        None, "--time-column", help="Time column (default: the first of timestamp, date, unix, "
                                    "open_time, time)."),
    freq: Optional[str] = typer.Option(
        None, "--freq", help="Resample to this step (1h, 1d, 15min): last price per bin. "
                             "Default: the data as they are, step = median time difference."),
    start: Optional[str] = typer.Option(None, "--start", help="First date kept (ISO, UTC)."),
    end: Optional[str] = typer.Option(None, "--end", help="Dates before this one are kept."),
    bootstrap: int = typer.Option(0, "--bootstrap", min=0,
                                  help="Block-bootstrap samples for standard errors (refits)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap."),
    out: Optional[Path] = typer.Option(None, "--out", "-o",
                                       help="Also write the market: YAML block to this file."),
    no_progress: bool = typer.Option(False, "--no-progress", help="Do not show a spinner."),
) -> None:
    """Fit a jump-diffusion to a price CSV by maximum likelihood; print a market: block."""
    import contextlib
    import math

    import numpy as np
    from rich.console import Console
    from rich.table import Table

    from stress.errors import StressError
    from stress.market import calibrate as cal

    if model not in cal.MODELS:
        _fail(f"unknown model {model!r}, expected one of {', '.join(cal.MODELS)}")
    console = Console()
    try:
        times, prices = cal.load_prices(csv_file, column, time_column, start=start, end=end)
        notes = []
        if freq is not None:
            step = cal.parse_freq(freq)
            times, prices, filled = cal.resample_last(times, prices, step)
            if filled:
                notes.append(f"{filled} empty {freq} bins carry the previous price forward "
                             f"(zero returns)")
        else:
            step = cal.median_step_seconds(times)
            gaps = np.diff(times.astype(np.int64)) != round(step * 1000)
            if gaps.any():
                notes.append(f"{int(gaps.sum())} of {gaps.size} time steps differ from the "
                             f"median step; each return counts as one step (use --freq to "
                             f"resample)")
        dt = step / cal.YEAR_SECONDS
        if prices.size - 1 < cal.MIN_RETURNS:
            _fail(f"{csv_file.name}: {prices.size - 1} returns; at least {cal.MIN_RETURNS} are "
                  f"needed")
        show = not no_progress and sys.stderr.isatty()
        status = (Console(stderr=True).status(f"fitting {model} to {prices.size - 1} returns")
                  if show else contextlib.nullcontext())
        with status:
            res = cal.fit(prices, dt, model, is_returns=False, bootstrap=bootstrap, seed=seed)
    except StressError as e:
        _fail(str(e))

    def num(v: float) -> str:
        return "n/a" if not math.isfinite(v) else f"{v:.4g}"

    def when(t) -> str:
        return str(t)[:16].replace("T", " ")

    console.print(f"{model} fit to {res.n} log returns of {csv_file.name} ({column}), "
                  f"{when(times[0])} to {when(times[-1])}, step {cal.format_step(dt)}",
                  highlight=False, markup=False)
    table = Table()
    table.add_column("parameter")
    table.add_column("estimate", justify="right")
    table.add_column("std. error", justify="right")
    if res.bootstrap_stderr is not None:
        table.add_column(f"bootstrap s.e. ({res.bootstrap_samples})", justify="right")
    for name, v in res.params.items():
        row = [name, num(v), num(res.stderr[name])]
        if res.bootstrap_stderr is not None:
            row.append(num(res.bootstrap_stderr[name]))
        table.add_row(*row)
    console.print(table)
    console.print(f"log-likelihood {res.loglik:.2f}, n = {res.n}, k = {res.k}, "
                  f"AIC {res.aic:.2f}, BIC {res.bic:.2f}", highlight=False)
    console.print(f"KS test of the returns against the fitted model (PIT): "
                  f"D = {res.ks_stat:.4f}, p = {res.ks_pvalue:.3g}", highlight=False)
    for note in notes + res.notes:
        console.print(f"note: {note}", highlight=False, markup=False)
    block = res.to_yaml(float(prices[-1]))
    typer.echo("")
    typer.echo(block, nl=False)
    if out is not None:
        try:
            out.write_text(block)
        except OSError as e:
            _fail(f"{out}: cannot write: {e.strerror or e}")
        typer.echo(f"wrote {out}")


@app.command()
def conformance(
    files: list[Path] = typer.Argument(..., metavar="FILE.json",
                                       help="Golden-vector files ({\"cases\": [...]} or a list); "
                                            "tier paths resolve relative to each file's folder."),
) -> None:
    """Check the margin formulas against golden test vectors; exit 0 if all pass, 1 if not."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from stress.errors import StressError
    from stress.exchange.conformance import check, load_cases

    results, n_cases = [], 0
    for f in files:
        try:
            for case in load_cases(f):
                results.extend(check(case, base_dir=f.parent))
                n_cases += 1
        except StressError as e:
            _fail(str(e) if getattr(e, "source", None) else f"{f}: {e}")

    def show(v) -> str:
        if isinstance(v, float):
            return f"{v:.10g}"
        if isinstance(v, list):
            return ", ".join(map(str, v))
        return str(v)

    console = Console()
    if not console.is_terminal:  # keep ids on one line in logs and pipes
        console = Console(width=max(console.width, 160))
    table = Table()
    for name in ("id", "kind", "venue", "output"):
        table.add_column(name)
    table.add_column("expected", justify="right")
    table.add_column("got", justify="right")
    table.add_column("result")
    for r in results:
        verdict = Text("PASS", style="green") if r.passed else Text("FAIL", style="bold red")
        table.add_row(*(Text(show(v)) for v in (r.id, r.kind, r.venue, r.key, r.expected,
                                                 r.got)), verdict)
    console.print(table)
    failed = sum(not r.passed for r in results)
    console.print(f"{len(results) - failed} of {len(results)} outputs passed, {failed} failed "
                  f"({n_cases} cases in {len(files)} file{'s' if len(files) != 1 else ''})",
                  highlight=False)
    if failed:
        raise typer.Exit(1)


@app.command()
def levels(
    config: Path = typer.Argument(..., help="YAML config file (its book and exchange rules)."),
    mark: Optional[float] = typer.Option(None, "--mark",
                                         help="Mark price (default: the market's start price)."),
    bins: int = typer.Option(20, "--bins", min=1, help="Price bins."),
    span: float = typer.Option(0.2, "--span", min=0.0, max=1.0,
                               help="Half-width of the price range, fraction of the mark."),
    out: Optional[Path] = typer.Option(None, "--out", "-o",
                                       help="Also write the levels as netCDF (.nc) or CSV."),
    scenario: Optional[str] = typer.Option(None, "--scenario", help=SCENARIO_HELP),
) -> None:
    """Notional liquidated at each price level around the mark (a liquidation map)."""
    from rich.console import Console
    from rich.table import Table

    from stress._files import replace_atomically
    from stress.errors import ConfigError, StressError
    from stress.population import liquidation_levels
    from stress.runner.prepare import prepare
    from stress.runner.run import resolve_config
    from stress.runner.store import write_atomic

    try:
        cfg = resolve_config(config, {}, scenario)
        prep = prepare(cfg)
        price = prep.s0 if mark is None else mark
        if not 0 < span < 1:
            raise ConfigError("--span", "must be in (0, 1)", span)
        ds = liquidation_levels(prep.book_for_path(0), price, prep.tiers,
                                exchange=cfg.exchange, bins=bins, span=span)
    except StressError as e:
        _fail(str(e))
    table = Table(title=f"liquidation levels of {cfg.run.name} at mark {price:,.6g}")
    for name in ("price from", "price to", "long notional", "cum. long", "short notional",
                 "cum. short"):
        table.add_column(name, justify="right")
    for k in range(ds.sizes["price"]):
        table.add_row(*(f"{float(ds[v][k]):,.6g}" for v in (
            "price_low", "price_high", "long_notional", "cumulative_long", "short_notional",
            "cumulative_short")))
    console = Console()
    console.print(table)
    console.print(f"liquidatable at the mark already: long {ds.attrs['liquidatable_now_long']:,.6g}"
                  f", short {ds.attrs['liquidatable_now_short']:,.6g}; beyond the range: long "
                  f"{ds.attrs['outside_long']:,.6g}, short {ds.attrs['outside_short']:,.6g} "
                  f"(quote)", highlight=False)
    if out is not None:
        try:
            if out.suffix == ".csv":
                replace_atomically(out, ds.to_dataframe().to_csv)
            else:
                write_atomic(ds, out)
        except OSError as e:
            _fail(f"{out}: cannot write: {e.strerror or e}")
        typer.echo(f"wrote {out}")


@app.command()
def compare(
    run_dir: Path = typer.Argument(..., metavar="RUN_DIR",
                                   help="Run folder (results/<name>) or a results .nc file."),
    q: float = typer.Option(0.99, "--q", help="Level of the VaR and expected shortfall of bad "
                                              "debt, in (0, 1)."),
    ruin: float = typer.Option(0.001, "--ruin", help="Target ruin probability of the required "
                                                     "insurance fund, in (0, 1)."),
    csv: Optional[Path] = typer.Option(None, "--csv", help="Write the full table here "
                                                           "(default: RUN_DIR/compare.csv)."),
) -> None:
    """Compare a run's policies: VaR, expected shortfall, ruin, required fund, who bore the loss."""
    import math

    from rich.console import Console
    from rich.table import Table

    from stress.analysis import BEARERS, compare as compare_policies, write_csv
    from stress.errors import ConfigError, StressError
    from stress.runner.store import open_results

    try:
        for key, value in (("--q", q), ("--ruin", ruin)):
            if not 0 < value < 1:
                raise ConfigError(key, "must be in (0, 1)", value)
        if not run_dir.exists():
            raise StressError(f"{run_dir}: no such run folder or results file")
        ds = open_results(run_dir)
        df = compare_policies(ds, q=q, ruin=ruin)
    except StressError as e:
        _fail(str(e))
    except OSError as e:
        _fail(f"{run_dir}: cannot read results: {e.strerror or e}")
    out = csv if csv is not None else (run_dir.parent if run_dir.is_file() else run_dir) / \
        "compare.csv"

    def money(v: float) -> str:
        if math.isnan(v):
            return "n/a"
        if math.isinf(v):
            return "∞" if v > 0 else "-∞"
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"

    def prob(v: float) -> str:
        if math.isnan(v):
            return "n/a"
        return f"{v:.2e}" if 0 < v < 1e-3 else f"{v:.4f}"

    level = f"q{100 * q:g}"
    index = list(df.columns[:df.columns.get_loc("layers" if "layers" in df else "n_paths")])
    table = Table(title=f"{ds.attrs.get('run_name', run_dir.name)}: policies over "
                        f"{int(df['n_paths'].iloc[0])} paths (quote; [{df.attrs['ci']:.0%} "
                        f"interval])")
    for name in index:
        table.add_column(name)
    for name in ("mean shortfall", f"VaR {level}", f"ES {level}", "mean residual",
                 "P(fund depleted)", "P(ruin) at fund", f"fund for P(ruin) ≤ {ruin:g}",
                 "loss borne % fund/adl/soc/plat/resid"):
        table.add_column(name, justify="right")
    for _, row in df.iterrows():
        fund = (f"{money(row['required_fund_quote'])} [{money(row['required_fund_ci_low_quote'])}"
                f", {money(row['required_fund_ci_high_quote'])}]")
        if row["beyond_configured_fund"]:
            fund += " *"
        shares = "/".join("-" if math.isnan(v) else f"{100 * v:.0f}"
                          for v in (row[f"share_{b}"] for b in BEARERS))
        table.add_row(*(str(row[name]) for name in index),
                      money(row["mean_shortfall_quote"]),
                      f"{money(row['var_shortfall_quote'])} "
                      f"[{money(row['var_shortfall_ci_low_quote'])}, "
                      f"{money(row['var_shortfall_ci_high_quote'])}]",
                      money(row["es_shortfall_quote"]), money(row["mean_residual_quote"]),
                      prob(row["p_fund_depleted"]), prob(row["ruin_probability"]), fund, shares)
    console = Console()
    if not console.is_terminal:  # keep rows on one line in logs and pipes
        console = Console(width=max(console.width, 180))
    console.print(table)
    if df["beyond_configured_fund"].any():
        console.print("* above the configured fund: fund_need is exact only up to it, confirm "
                      "with a run with a larger fund", highlight=False)
    if math.inf in df["required_fund_ci_high_quote"].values:
        console.print(f"∞: {int(df['n_paths'].iloc[0])} paths cannot bound the fund from above "
                      f"at this confidence; {df.attrs['min_paths_for_finite_ci_high']} are needed",
                      highlight=False)
    if df.attrs["missing_variables"]:
        console.print(f"note: the results lack {', '.join(df.attrs['missing_variables'])}; "
                      f"their columns are n/a", highlight=False)
    try:
        write_csv(df, out)
    except OSError as e:
        _fail(f"{out}: cannot write: {e.strerror or e}")
    console.print(f"wrote {out}", highlight=False, markup=False)


from stress.runner.sweep_cli import sweep  # noqa: E402  (a command of its own module)

app.command()(sweep)


def main() -> None:  # console-script entry point
    try:
        app()
        code = 0
    except SystemExit as e:
        code = e.code
    _leave(code)


# Modules whose worker pools or threads must wind down the usual way.
_POOLS = ("joblib", "loky", "distributed")


def _leave(code) -> None:
    """End the process with ``code`` (as ``sys.exit`` takes it).

    The interpreter's teardown of numba and LLVM takes ≈ 0.3 s, a large share
    of a small run. When no worker pool was started and no other thread runs,
    the exit handlers run, the streams are flushed, and the process ends
    without it (every file the command wrote is already closed); otherwise it
    exits the usual way.
    """
    import atexit
    import os
    import threading
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    if threading.active_count() > 1 or any(m in sys.modules for m in _POOLS):
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more to say
            pass
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    main()
