"""The paper's experiments as data: one small TOML file per figure, read into frozen dataclasses.

Files live in ``src/mfsched/experiments/paper/`` (package data, so ``mfsched reproduce`` works
from an installed wheel); ``mfsched reproduce --list`` lists them and ``mfsched reproduce NAME``
runs one (:mod:`mfsched.experiments.reproduce`). A path to a ``.toml`` file of the same shape
works too. The report (:mod:`mfsched.report`) reads the experiment stored with its results to
know the kind of figure to draw and the paper's stated numbers to put next to ours.

A file (all keys but the tables are required unless a default is named)::

    description = "one line for --list"
    figure = "Fig. 11"
    kind = "attainment"            # attainment | breakdown | normalized
    scenario = "fattree"           # a registered topology
    models = ["dbrx", ...]         # registered models
    workloads = ["conv"]           # registered synthetic workloads
    rates_per_gpu = [0.1, 0.5]     # requests/s per prefill GPU
    schedulers = ["fs", "mfs"]     # registered schedulers
    reference = true               # default false: add the contention-free reference
    details = false                # default false: store per-request / per-layer values
    normalize_to = "fs"            # kind "normalized" only: the bars' denominator
    seeds = [0, 1, 2]
    warmup = 512                   # warm-up requests per run
    requests = 1024                # evaluated requests per run
    notes = "..."                  # default "": shown in the report
    [config]                       # default {}: other SimConfig fields for every point
    [config.serving]               # ServingConfig fields
    [quick]                        # the reduced grid: any of models, workloads,
                                   # rates_per_gpu, seeds, warmup, requests, schedulers,
                                   # config
    [[claims]]                     # the paper's stated numbers (see Claim)

Every error names the file, the key (with its line when it can be found) and the reason, and is
a :class:`~mfsched.errors.UserError` (one line, exit code 2 on the command line).

(About 550 lines, over the project's 400, for one reason: this is the file format, its
dataclasses and their checks in one place; the checks name keys and lines of the same text the
dataclasses are read from, so apart they would pass the reader's state back and forth.)
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from dataclasses import asdict, dataclass, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..sim.serving import ServingConfig
from .config import SimConfig
from .points import CONTENTION_FREE, Point

__all__ = ["CLAIM_METRICS", "KINDS", "Claim", "Experiment", "Grid", "experiment_digest",
           "experiment_names", "load_experiment", "parse_experiment"]

KINDS = ("attainment", "breakdown", "normalized")

# The metrics a claim can name, with their unit ("x": a ratio, "%": a reduction). The report
# computes each (mfsched.report.claims); a test checks that it implements exactly these.
CLAIM_METRICS: dict[str, str] = {
    "sustainable_rate_ratio": "x",  # numerator / denominator sustainable rate, per model
    "attainment_ratio": "x",  # numerator / denominator attainment (highest over the rates)
    "mean_ratio": "x",  # numerator / denominator of a summary column's mean
    "mean_reduction": "%",  # 1 - numerator / denominator of a summary column's mean
    "nonneg_earliness_reduction": "%",  # 1 - ratio of the mean non-negative P2D earliness
}

# Summary columns a claim may name (RunResult.to_json keys)
CLAIM_COLUMNS = ("slo_attainment", "ttft_mean_s", "ttft_p50_s", "ttft_p99_s",
                 "stage2_cct_mean_s", "p2d_earliness_mean")

# SimConfig fields the grid sets per point; [config] may not set them
_GRID_FIELDS = {"scenario", "model", "workload", "rate_per_gpu", "seed", "warmup", "requests"}
_PACKAGE_DIR = "paper"
# SimConfig's error messages name command-line flags; the fields they stand for
_FLAG_FIELDS = {"slo": "slo_s", "levels": "num_levels", "rate": "rate_per_gpu"}


@dataclass(frozen=True)
class Grid:
    models: tuple[str, ...]
    workloads: tuple[str, ...]
    rates_per_gpu: tuple[float, ...]
    seeds: tuple[int, ...]
    warmup: int
    requests: int
    config: SimConfig  # every other setting of every point
    schedulers: tuple[str, ...] = ()  # empty: the experiment's


@dataclass(frozen=True)
class Claim:
    """A number the paper states, and how to compute ours from the results.

    ``numerator`` and each of ``denominators`` name schedulers (or ``no-contention``);
    ``best-baseline`` as a denominator means the best scheduler other than the numerator, the
    oracle and the reference at each point. ``models`` / ``workload`` / ``rate_per_gpu``
    restrict which points count (None: all). ``paper_low``..``paper_high`` is the paper's range
    (ratios as x, reductions as fractions).
    """

    text: str
    metric: str
    paper_low: float
    paper_high: float
    numerator: str = "mfs"
    denominators: tuple[str, ...] = ("karuna",)
    column: str | None = None
    models: tuple[str, ...] | None = None
    workload: str | None = None
    rate_per_gpu: float | None = None
    threshold: float = 0.5  # sustainable_rate_ratio: the attainment that counts as sustained

    @property
    def unit(self) -> str:
        return CLAIM_METRICS[self.metric]

    def paper_text(self) -> str:
        lo, hi = self.paper_low, self.paper_high
        if self.unit == "%":
            return f"-{100 * lo:.1f}%" if lo == hi else f"-{100 * lo:.1f}% to -{100 * hi:.1f}%"
        return f"{lo:g}x" if lo == hi else f"{lo:g}-{hi:g}x"


@dataclass(frozen=True)
class Experiment:
    name: str
    description: str
    figure: str
    kind: str
    scenario: str
    schedulers: tuple[str, ...]
    reference: bool
    details: bool
    full: Grid
    quick: Grid
    normalize_to: str | None = None
    notes: str = ""
    claims: tuple[Claim, ...] = ()
    source: str = ""  # the file it was read from

    def grid(self, quick: bool) -> Grid:
        return self.quick if quick else self.full

    def schedulers_of(self, quick: bool) -> tuple[str, ...]:
        """The schedulers the grid runs (the quick grid may run fewer)."""
        return self.grid(quick).schedulers or self.schedulers

    def points(self, quick: bool) -> list[Point]:
        """Every (model, workload, rate, seed) of the grid, in that nesting order."""
        g = self.grid(quick)
        out = []
        for model in g.models:
            for workload in g.workloads:
                for rate in g.rates_per_gpu:
                    for seed in g.seeds:
                        cfg = replace(g.config, scenario=self.scenario, model=model,
                                      workload=workload, rate_per_gpu=rate, seed=seed,
                                      warmup=g.warmup, requests=g.requests)
                        key = f"{model}__{workload}__r{rate:g}__s{seed}"
                        out.append(Point(key, cfg, self.schedulers_of(quick),
                                         self.reference, self.details))
        return out

    def with_models(self, models: tuple[str, ...]) -> Experiment:
        """The same experiment on a subset of its models (both grids; order as given).

        A subset is a different grid: its results go to their own directory (its digest
        differs), and the claims about the other models have no points.
        """
        unknown = [m for m in models if m not in self.full.models]
        if unknown or not models:
            raise UserError(f"{self.name} runs the models {', '.join(self.full.models)}; "
                            f"not {', '.join(unknown) or 'an empty list'}", where="--models")
        return replace(self, full=replace(self.full, models=models),
                       quick=replace(self.quick, models=models))

    def to_json(self) -> dict:
        """A JSON-able dict that :func:`from_json` turns back into an equal Experiment."""
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> Experiment:
        def grid(g: dict) -> Grid:
            c = dict(g["config"])
            c["serving"] = ServingConfig(**c["serving"])
            c["policy_options"] = tuple(c["policy_options"])
            return Grid(tuple(g["models"]), tuple(g["workloads"]), tuple(g["rates_per_gpu"]),
                        tuple(g["seeds"]), g["warmup"], g["requests"], SimConfig(**c),
                        tuple(g.get("schedulers", ())))

        claims = tuple(Claim(**dict(c, denominators=tuple(c["denominators"]),
                                    models=None if c["models"] is None else tuple(c["models"])))
                       for c in d["claims"])
        rest = {k: v for k, v in d.items() if k not in ("full", "quick", "claims",
                                                        "schedulers")}
        return cls(**rest, schedulers=tuple(d["schedulers"]), full=grid(d["full"]),
                   quick=grid(d["quick"]), claims=claims)


# --------------------------------------------------------------------------- discovery

def experiment_names() -> list[str]:
    """The experiments shipped with mfsched, sorted by name."""
    folder = resources.files(__package__).joinpath(_PACKAGE_DIR)
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def load_experiment(name_or_path: str) -> Experiment:
    """A shipped experiment by name, or a TOML file by path (``*.toml`` or containing '/')."""
    if name_or_path.endswith(".toml") or "/" in name_or_path:
        path = Path(name_or_path)
        try:
            text = path.read_text()
        except OSError as e:
            raise UserError(f"cannot read experiment file: {e.strerror or e}",
                            where=str(path)) from None
        return parse_experiment(text, str(path), path.stem)
    names = experiment_names()
    if name_or_path not in names:
        raise UserError(f"unknown experiment {name_or_path!r}; known: {', '.join(names)} "
                        "(or a path to a .toml file)")
    res = resources.files(__package__).joinpath(_PACKAGE_DIR, f"{name_or_path}.toml")
    return parse_experiment(res.read_text(), f"{_PACKAGE_DIR}/{name_or_path}.toml",
                            name_or_path)


# --------------------------------------------------------------------------- parsing

class _Reader:
    """Typed access to one TOML table; errors name the file, the key's line and the key."""

    def __init__(self, data: dict, source: str, text: str, table: str = "") -> None:
        self.data, self.source, self.text, self.table = data, source, text, table
        self.used: set[str] = set()

    def fail(self, key: str, reason: str) -> UserError:
        dotted = f"{self.table}.{key}" if self.table else key
        return UserError(f"{dotted}: {reason}", where=self.source,
                         line=_line_of(self.text, self.table, key))

    def has(self, key: str) -> bool:
        return key in self.data

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
        self.used.add(key)
        if key not in self.data:
            if default is ...:
                raise self.fail(key, "missing (required)")
            return default
        value = self.data[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, float)):
            raise self.fail(key, f"expected {_kind_name(kind)}, got {_toml_type(value)}")
        return value

    def names(self, key: str, registry, default: Any = ...) -> tuple[str, ...]:
        values = self.get(key, list, default)
        if values is None:
            return None
        if not values:
            raise self.fail(key, "must not be empty")
        out = []
        for v in values:
            if not isinstance(v, str):
                raise self.fail(key, f"expected a list of names, got {_toml_type(v)} {v!r}")
            if registry is not None and v.lower() not in registry:
                raise self.fail(key, f"unknown {registry.kind} {v!r}; known: "
                                     f"{', '.join(registry.names())}")
            out.append(v.lower())
        if len(set(out)) != len(out):
            raise self.fail(key, "lists a name twice")
        return tuple(out)

    def numbers(self, key: str, kind: type, positive: bool, default: Any = ...) -> tuple:
        values = self.get(key, list, default)
        if values is None:
            return None
        if not values:
            raise self.fail(key, "must not be empty")
        out = []
        for v in values:
            if kind is float and isinstance(v, int) and not isinstance(v, bool):
                v = float(v)
            if not isinstance(v, kind) or isinstance(v, bool):
                raise self.fail(key, f"expected a list of {_kind_name(kind)}s, got "
                                     f"{_toml_type(v)} {v!r}")
            if (positive and not v > 0) or (kind is float and not math.isfinite(v)) or v < 0:
                raise self.fail(key, f"{v!r} is not {'positive' if positive else '>= 0'}")
            out.append(v)
        if len(set(out)) != len(out):
            raise self.fail(key, "lists a value twice")
        return tuple(out)

    def count(self, key: str, minimum: int, default: Any = ...) -> int:
        v = self.get(key, int, default)
        if v is not None and v < minimum:
            raise self.fail(key, f"must be at least {minimum}, got {v}")
        return v

    def check_unknown(self, allowed: set[str]) -> None:
        for key in self.data:
            if key not in allowed:
                raise self.fail(key, f"unknown key; expected one of {', '.join(sorted(allowed))}")


def parse_experiment(text: str, source: str, name: str) -> Experiment:
    """Parse and validate one experiment file's text (``source`` names it in errors)."""
    from ..policy import SCHEDULERS
    from ..sim.topology import TOPOLOGIES
    from ..workload.models import MODELS
    from ..workload.synthetic import WORKLOADS

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"not valid TOML: {e}", where=source) from None
    r = _Reader(data, source, text)
    top = {"description", "figure", "kind", "scenario", "models", "workloads", "rates_per_gpu",
           "schedulers", "reference", "details", "normalize_to", "seeds", "warmup", "requests",
           "notes", "config", "quick", "claims"}
    r.check_unknown(top)
    description = r.get("description", str)
    if not description.strip() or "\n" in description.strip():
        raise r.fail("description", "must be one non-empty line")
    figure = r.get("figure", str)
    kind = r.get("kind", str)
    if kind not in KINDS:
        raise r.fail("kind", f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    scenario = r.get("scenario", str).lower()
    if scenario not in TOPOLOGIES:
        raise r.fail("scenario", f"unknown scenario {scenario!r}; known: "
                                 f"{', '.join(TOPOLOGIES.names())}")
    schedulers = r.names("schedulers", SCHEDULERS)
    reference = r.get("reference", bool, False)
    details = r.get("details", bool, False)
    notes = r.get("notes", str, "").strip()
    normalize_to = r.get("normalize_to", str, None)
    known_runs = (*schedulers, CONTENTION_FREE) if reference else schedulers
    if kind == "normalized":
        if normalize_to is None:
            raise r.fail("normalize_to", "missing (required for kind 'normalized')")
        if normalize_to not in known_runs:
            raise r.fail("normalize_to", f"{normalize_to!r} is not one of this experiment's "
                                         f"runs ({', '.join(known_runs)})")
    elif normalize_to is not None:
        raise r.fail("normalize_to", "only for kind 'normalized'")
    if kind == "breakdown" and not details:
        raise r.fail("details", "kind 'breakdown' needs details = true")

    full = _grid(r, MODELS, WORKLOADS, None)
    quick_data = r.get("quick", dict, {})
    q = _Reader(quick_data, source, text, "quick")
    q.check_unknown({"models", "workloads", "rates_per_gpu", "seeds", "warmup", "requests",
                     "schedulers", "config"})
    quick = _grid(q, MODELS, WORKLOADS, full)
    quick_schedulers = q.names("schedulers", SCHEDULERS, None) or ()
    if quick.schedulers != quick_schedulers:
        quick = replace(quick, schedulers=quick_schedulers)
    if kind == "normalized" and normalize_to not in (*(quick_schedulers or schedulers),
                                                     *((CONTENTION_FREE,) if reference else ())):
        raise q.fail("schedulers", f"the quick grid must run normalize_to ({normalize_to})")
    claims = tuple(_claim(_Reader(c, source, text, f"claims[{i}]"), known_runs, full)
                   if isinstance(c, dict) else _bad_claim(r, i)
                   for i, c in enumerate(r.get("claims", list, [])))
    exp = Experiment(name=name, description=description.strip(), figure=figure, kind=kind,
                     scenario=scenario, schedulers=schedulers, reference=reference,
                     details=details, full=full, quick=quick, normalize_to=normalize_to,
                     notes=notes, claims=claims, source=source)
    _check_parallelism(exp, r)
    return exp


def _bad_claim(r: _Reader, i: int) -> Claim:
    raise r.fail("claims", f"entry {i} must be a table ([[claims]])")


def _grid(r: _Reader, models_reg, workloads_reg, base: Grid | None) -> Grid:
    """The full grid (``base`` None) or the quick one (missing keys fall back to ``base``)."""
    d = ... if base is None else None
    models = r.names("models", models_reg, d)
    workloads = r.names("workloads", workloads_reg, d)
    rates = r.numbers("rates_per_gpu", float, True, d)
    seeds = r.numbers("seeds", int, False, d)
    warmup = r.count("warmup", 0, d)
    requests = r.count("requests", 1, d)
    config = _sim_config(r, None if base is None else base.config)
    if base is not None:
        models = models or base.models
        workloads = workloads or base.workloads
        rates = rates or base.rates_per_gpu
        seeds = seeds or base.seeds
        warmup = base.warmup if warmup is None else warmup
        requests = base.requests if requests is None else requests
    return Grid(models, workloads, rates, seeds, warmup, requests, config)


def _sim_config(r: _Reader, base: SimConfig | None) -> SimConfig:
    table = r.get("config", dict, {})
    where = f"{r.table}.config" if r.table else "config"
    sub = _Reader(table, r.source, r.text, where)
    allowed = {f.name for f in fields(SimConfig)} - _GRID_FIELDS
    sub.check_unknown(allowed)
    start = base if base is not None else SimConfig()
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key == "serving":
            if not isinstance(value, dict):
                raise sub.fail(key, f"expected a table, got {_toml_type(value)}")
            serving = _Reader(value, r.source, r.text, f"{where}.serving")
            serving.check_unknown({f.name for f in fields(ServingConfig)})
            try:
                value = replace(start.serving, **value)
            except (TypeError, ValueError) as e:
                raise sub.fail(key, str(e)) from None
        elif key == "policy_options":
            if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
                raise sub.fail(key, "expected a list of 'SCHEDULER.KEY=VALUE' strings")
            value = tuple(value)
        else:
            expected = _field_type(key)
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if expected is not None and not isinstance(value, expected):
                raise sub.fail(key, f"expected {_kind_name(expected)}, got {_toml_type(value)}")
        values[key] = value
    try:
        cfg = replace(start, **values)
    except UserError as e:  # SimConfig's checks speak of command-line flags: name the key
        flag = re.match(r"^--([\w-]+) ", e.reason)
        key = _FLAG_FIELDS.get(flag.group(1), flag.group(1).replace("-", "_")) if flag else ""
        raise sub.fail(key if key in values else next(iter(values), "config"),
                       e.reason[flag.end():] if flag else e.reason) from None
    for name in cfg.policy_options:  # malformed entries fail here, unknown keys at run time
        cfg.options_for(name.partition(".")[0])
    return cfg


def _field_type(name: str) -> type | tuple[type, ...] | None:
    ann = {f.name: f.type for f in fields(SimConfig)}[name]
    text = str(ann)
    if text.startswith("int"):
        return int
    if text.startswith("float"):
        return float
    if text.startswith("str"):
        return str
    if text.startswith("bool"):
        return bool
    return None


def _claim(r: _Reader, runs: tuple[str, ...], grid: Grid) -> Claim:
    r.check_unknown({"text", "metric", "paper_low", "paper_high", "numerator", "denominator",
                     "column", "models", "workload", "rate_per_gpu", "threshold"})
    text = r.get("text", str)
    metric = r.get("metric", str)
    if metric not in CLAIM_METRICS:
        raise r.fail("metric", f"unknown metric {metric!r}; known: {', '.join(CLAIM_METRICS)}")
    low = r.get("paper_low", float)
    high = r.get("paper_high", float, low)
    if not low <= high:
        raise r.fail("paper_high", f"{high} is below paper_low {low}")
    numerator = r.get("numerator", str, "mfs")
    den = r.get("denominator", (str, list), "karuna")
    denominators = (den,) if isinstance(den, str) else tuple(den)
    if not denominators or not all(isinstance(d, str) for d in denominators):
        raise r.fail("denominator", "expected a run name or a list of run names")
    for key, name in [("numerator", numerator), *(("denominator", d) for d in denominators)]:
        if name not in runs and not (key == "denominator" and name == "best-baseline"):
            raise r.fail(key, f"{name!r} is not one of this experiment's runs "
                              f"({', '.join(runs)})")
    column = r.get("column", str, None)
    if metric in ("mean_ratio", "mean_reduction"):
        if column not in CLAIM_COLUMNS:
            raise r.fail("column", f"metric {metric!r} needs a column, one of "
                                   f"{', '.join(CLAIM_COLUMNS)}")
    elif column is not None:
        raise r.fail("column", f"metric {metric!r} takes no column")
    models = r.names("models", None, None)
    for m in models or ():
        if m not in grid.models:
            raise r.fail("models", f"{m!r} is not among the experiment's models")
    workload = r.get("workload", str, None)
    if workload is not None and workload not in grid.workloads:
        raise r.fail("workload", f"{workload!r} is not among the experiment's workloads")
    rate = r.get("rate_per_gpu", float, None)
    if rate is not None and rate not in grid.rates_per_gpu:
        raise r.fail("rate_per_gpu", f"{rate:g} is not among the experiment's rates")
    threshold = r.get("threshold", float, 0.5)
    if not 0 < threshold <= 1:
        raise r.fail("threshold", f"must be in (0, 1], got {threshold}")
    return Claim(text=" ".join(text.split()), metric=metric, paper_low=low, paper_high=high,
                 numerator=numerator, denominators=denominators, column=column,
                 models=models, workload=workload, rate_per_gpu=rate, threshold=threshold)


def _check_parallelism(exp: Experiment, r: _Reader) -> None:
    """Every model must fit the scenario: build one cluster per model of both grids (cheap)."""
    from .runner import build_cluster

    for table, g in (("", exp.full), ("quick.", exp.quick)):
        for model in g.models:
            cfg = replace(g.config, scenario=exp.scenario, model=model)
            try:
                build_cluster(cfg)
            except UserError as e:
                raise r.fail("models" if not table else "quick",
                             f"{model} on {exp.scenario}: {e.reason}") from None


def _line_of(text: str, table: str, key: str) -> int | None:
    """The line of ``key = ...`` inside ``[table]`` (``claims[i]``: the i-th ``[[claims]]``);
    None where it cannot be found (inline tables, a missing key)."""
    headers = [(m.start(), m.group(1).strip()) for m in
               re.finditer(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(?:#.*)?$", text, re.MULTILINE)]
    sections = [(0, ""), *headers]
    m = re.fullmatch(r"(\w+)\[(\d+)\]", table)
    if m:  # an array of tables: its i-th header
        starts = [i for i, (_, name) in enumerate(sections) if name == m.group(1)]
        index = int(m.group(2))
        chosen = starts[index] if index < len(starts) else None
    else:
        chosen = next((i for i, (_, name) in enumerate(sections) if name == table), None)
    if chosen is None:
        return None
    begin = sections[chosen][0]
    end = sections[chosen + 1][0] if chosen + 1 < len(sections) else len(text)
    found = re.search(rf"^\s*{re.escape(key)}\s*=", text[begin:end], re.MULTILINE)
    return None if found is None else text.count("\n", 0, begin + found.start()) + 1


def _kind_name(kind) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
             list: "a list", dict: "a table"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _toml_type(value) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a table"}.get(type(value), type(value).__name__)


def experiment_digest(exp: Experiment, quick: bool) -> str:
    """A stable fingerprint of what a grid computes (to refuse mixing grids on --resume)."""
    import hashlib

    g = exp.grid(quick)
    what = {"scenario": exp.scenario, "schedulers": exp.schedulers_of(quick),
            "reference": exp.reference,
            "details": exp.details, "grid": asdict(g)}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]

