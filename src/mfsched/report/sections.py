"""What the report says about one experiment, independent of the output format: title, command,
facts, the figures (drawn once, PNG files under ``figures/``) and the tables. Built by
:func:`mfsched.report.write_report`, rendered by :mod:`.html` and :mod:`.markdown`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..experiments.spec import Experiment, experiment_names, load_experiment
from . import figures
from .data import ExperimentData
from .tables import Table, attainment_table, claims_table, summary_table, sustainable_table

__all__ = ["INTRO", "Figure", "Section", "build_sections"]

INTRO = ("Every number below comes from mfsched's flow-level simulator (one event queue for "
         "compute and network, strict-priority max-min bandwidth sharing), not from the paper's "
         "Vidur + flowsim set-up. The paper's Qwen-Bailian traces (QwenA-Conv, QwenB-Agent) and "
         "its Mooncake traces are not available here: synthetic generators with the statistics "
         "the paper states stand in for them (see each experiment's notes). The paper gives "
         "most results as plots only; the tables of its stated numbers list every number its "
         "text gives.")


@dataclass(frozen=True)
class Figure:
    png: bytes
    caption: str
    path: str  # relative to the report's folder


@dataclass(frozen=True)
class Section:
    data: ExperimentData
    anchor: str
    title: str
    command: str
    facts: str
    partial: str  # empty when the run is complete
    figures: tuple[Figure, ...]
    tables: tuple[Table, ...]
    claims: Table | None


def build_sections(experiments: list[ExperimentData], out_dir: Path) -> list[Section]:
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    out = []
    for d, anchor in zip(experiments, _anchors(experiments), strict=True):
        exp = d.experiment
        g = exp.grid(d.grid == "quick")
        command = _command(exp, d.grid == "quick")
        commits = sorted({(r.get("git_commit"), bool(r.get("git_dirty"))) for r in d.rows},
                         key=str)
        commit_text = ", ".join("unknown" if not c else c[:12] + (
            " (with uncommitted changes)" if dirty else "") for c, dirty in commits)
        facts = (f"Scenario {exp.scenario}; {g.warmup} warm-up + {g.requests} evaluated "
                 f"requests per run; seeds {', '.join(map(str, d.seeds()))}; mfsched "
                 f"{d.meta.get('mfsched_version')}, commit{'s' if len(commits) > 1 else ''} "
                 f"{commit_text}; results in {d.root}.")
        partial = "" if d.complete else (
            f"Partial: {d.points_done()} of {d.points_expected} points finished (complete it "
            f"with {command} --resume).")
        figs = []
        for i, (png, caption) in enumerate(figures.draw(d)):
            name = f"figures/{anchor}-{i + 1}.png"
            (out_dir / name).write_bytes(png)
            figs.append(Figure(png, caption, name))
        if exp.kind == "attainment":
            tables = (sustainable_table(d),
                      *(attainment_table(d, m, w) for m, w in d.groups()))
        else:
            tables = (summary_table(d, earliness=exp.kind == "breakdown"),)
        out.append(Section(d, anchor, f"{exp.figure}: {exp.name} ({d.grid} grid)", command,
                           facts, partial, tuple(figs), tables, claims_table(d)))
    return out


def _command(exp: Experiment, quick: bool) -> str:
    """The command that ran the grid: --models when it ran a subset of a shipped experiment's."""
    cmd = f"mfsched reproduce {exp.name}{' --quick' if quick else ''}"
    if exp.name in experiment_names() and load_experiment(exp.name).full.models != \
            exp.full.models:
        cmd += f" --models {','.join(exp.full.models)}"
    return cmd


def _anchors(experiments: list[ExperimentData]) -> list[str]:
    """A unique HTML id (and PNG file stem) per experiment: NAME-GRID, numbered if repeated."""
    out: list[str] = []
    for d in experiments:
        base = f"{d.name}-{d.grid}"
        name, n = base, 1
        while name in out:
            n += 1
            name = f"{base}-{n}"
        out.append(name)
    return out
