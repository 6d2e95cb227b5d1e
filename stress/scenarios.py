"""Named market stress scenarios, laid over a config.

A scenario is ``scenarios/<name>.yaml``: a one-line ``description`` and config
sections. ``market`` replaces the config's market section entirely; every
other section (``run``, ``liquidity``, ...) is merged into the config's key by
key (nested mappings recursively; lists and values replaced). File paths in a
scenario are relative to the scenario file.

Scenarios are looked up in ``./scenarios`` under the working directory first,
then in the repository's ``scenarios/`` folder beside the package.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml

from stress.config import Config, _validate
from stress.errors import ConfigError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_SUFFIX = ".yaml"


def scenario_dirs() -> list[Path]:
    """Folders searched for scenarios, first match wins: ``./scenarios``, then the repository's."""
    import stress
    repository = Path(stress.__file__).resolve().parents[1]
    candidates = [Path.cwd() / "scenarios", repository / "scenarios"]
    out, seen = [], set()
    for d in candidates:
        if d.is_dir() and d.resolve() not in seen:
            seen.add(d.resolve())
            out.append(d)
    return out


def scenario_files() -> dict[str, Path]:
    """Scenario name → file, sorted by name; a name in ``./scenarios`` hides the repository's."""
    found: dict[str, Path] = {}
    for d in scenario_dirs():
        for f in sorted(d.glob(f"*{_SUFFIX}")):
            if f.is_file() and _NAME.match(f.stem):
                found.setdefault(f.stem, f)
    return dict(sorted(found.items()))


def _find(name: str) -> Path:
    files = scenario_files()
    if not isinstance(name, str) or name not in files:
        known = ", ".join(files) or "none"
        raise ConfigError("scenario", f"unknown scenario {name!r} (known: {known})")
    return files[name]


def _read(path: Path) -> dict:
    source = str(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError("", f"invalid YAML: {where}{problem}", source=source) from None
    except OSError as err:
        raise ConfigError("", f"cannot read the scenario: {err.strerror}", source=source) from None
    if not isinstance(data, dict):
        raise ConfigError("", "a scenario must be a YAML mapping with a description and "
                              "config sections", source=source)
    sections = set(Config.model_fields)
    for key in data:
        if key != "description" and key not in sections:
            raise ConfigError(str(key), f"unknown key (a scenario holds description and the "
                                        f"sections {', '.join(Config.model_fields)})",
                              source=source)
        if key != "description" and key not in ("market", "policies") \
                and not isinstance(data[key], dict):
            raise ConfigError(str(key), "must be a mapping (merged into the config's section)",
                              data[key], source)
    desc = data.get("description")
    if not isinstance(desc, str) or not desc.strip() or "\n" in desc.strip():
        raise ConfigError("description", "required: a one-line text", desc, source)
    if "market" in data and not isinstance(data["market"], dict):
        raise ConfigError("market", "must be a mapping (replaces the config's market)",
                          data["market"], source)
    return data


def _absolute(data: dict, folder: Path) -> dict:
    """The scenario with its relative file paths made absolute (they are relative to its file)."""
    data = copy.deepcopy(data)

    def fix(section: str, key: str, only_files: bool = False) -> None:
        node = data.get(section)
        if not isinstance(node, dict) or not isinstance(node.get(key), str):
            return
        value = node[key]
        if only_files and not (value.endswith(".csv") or "/" in value):
            return  # a built-in tier table's name
        p = Path(value).expanduser()
        node[key] = str(p if p.is_absolute() else (folder / p).resolve())

    fix("market", "path")
    fix("population", "path")
    fix("exchange", "tiers", only_files=True)
    return data


def list_scenarios() -> dict[str, str]:
    """Scenario name → one-line description, sorted by name."""
    return {name: _read(path)["description"].strip() for name, path in scenario_files().items()}


def load_scenario(name: str) -> dict:
    """A scenario's mapping: ``description`` and its config sections.

    File paths are returned absolute (in the file they are relative to the
    scenario file).

    Raises
    ------
    ConfigError
        For an unknown name (listing the known ones) or an invalid file.
    """
    path = _find(name)
    return _absolute(_read(path), path.parent)


def _merge(base: Any, over: Any) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for k, v in over.items():
            out[k] = _merge(base.get(k), v) if k in base else copy.deepcopy(v)
        return out
    return copy.deepcopy(over)


def _blame_scenario(key: str, scenario: dict) -> bool:
    """Whether a config error at ``key`` comes from a key the scenario sets."""
    parts = key.split(".") if key else []
    if not parts or parts[0] not in scenario:
        return False
    node = scenario[parts[0]]
    if parts[0] == "market" or len(parts) == 1 or not isinstance(node, dict):
        return True
    return parts[1] in node


def apply_scenario(config: Config | dict, name: str,
                   base_dir: str | Path | None = None) -> Config:
    """Lay the scenario ``name`` over a config and validate the result.

    Parameters
    ----------
    config : Config or dict
        A validated config, or a config mapping (its file paths relative to
        ``base_dir``, default the working directory).
    name : str
        Scenario name (a file ``scenarios/<name>.yaml``).

    Returns
    -------
    Config
        The merged config; ``cfg.scenario`` is ``name``. Unless the scenario
        sets ``run.name``, the run is named ``<run.name>-<name>`` so that its
        results do not overwrite the plain config's.

    Raises
    ------
    ConfigError
        Naming the scenario file (or the config) and the key.
    """
    path = _find(name)
    scenario = load_scenario(name)
    if isinstance(config, Config):
        data = config.model_dump(mode="json")
        folder, source = config._base_dir, config.source
    elif isinstance(config, dict):
        data = copy.deepcopy(config)
        folder, source = Path(base_dir) if base_dir else Path.cwd(), None
    else:
        raise ConfigError("", "the config must be a Config or a mapping", type(config).__name__)
    for section, value in scenario.items():
        if section == "description":
            continue
        if section == "market":
            data["market"] = copy.deepcopy(value)
        else:
            data[section] = _merge(data.get(section), value)
    run = data.get("run")
    if isinstance(run, dict) and isinstance(run.get("name"), str) \
            and "name" not in (scenario.get("run") or {}) \
            and len(run["name"]) + 1 + len(name) <= 100:
        run["name"] = f"{run['name']}-{name}"
    try:
        cfg = _validate(data, None, folder)
    except ConfigError as err:
        err.source = str(path) if _blame_scenario(err.key, scenario) else source
        raise err from None
    cfg._source = f"{source} with scenario {path}" if source else str(path)
    cfg._scenario = name
    return cfg
