"""The report as Markdown (``report.md`` beside ``report.html``): the same sections and tables,
figures linked as the PNG files. Meant for pasting into ``docs/results.md`` between markers."""

from __future__ import annotations

from pathlib import Path

from .sections import Section
from .tables import Table

__all__ = ["render_markdown", "table_markdown"]


def render_markdown(sections: list[Section], out_dir: Path, intro: str) -> Path:
    lines = ["# Reproducing the paper's evaluation", "", intro, ""]
    for s in sections:
        d = s.data
        lines += [f"## {s.title}", "", d.experiment.description, "",
                  f"Command: `{s.command}`. {s.facts}", ""]
        if s.partial:
            lines += [f"**{s.partial}**", ""]
        if d.experiment.notes:
            lines += [" ".join(d.experiment.notes.split()), ""]
        for fig in s.figures:
            lines += [f"![{fig.caption}]({fig.path})", ""]
        for t in (*s.tables, *(() if s.claims is None else (s.claims,))):
            lines += [table_markdown(t), ""]
        if s.claims is None:
            lines += ["The paper states no numbers for this figure, only the trend.", ""]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines))
    return path


def table_markdown(t: Table) -> str:
    def esc(text: str) -> str:
        return text.replace("|", "\\|")

    align = ["---" if i < t.text_columns else "---:" for i in range(len(t.header))]
    rows = [f"*{esc(t.caption)}*", "", "| " + " | ".join(map(esc, t.header)) + " |",
            "|" + "|".join(align) + "|"]
    rows += ["| " + " | ".join(map(esc, r)) + " |" for r in t.rows]
    return "\n".join(rows)
