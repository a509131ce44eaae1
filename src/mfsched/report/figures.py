"""The report's figures, drawn with matplotlib's object API on the Agg canvas (no pyplot, no
display, no global state) and returned as PNG bytes. Called by :mod:`mfsched.report.html`.

* :func:`attainment_figure`: the layout of the paper's Figs. 11-13: one panel per model (per
  workload when there is one model), SLO attainment against the rate per GPU, one line per
  scheduler (seed mean) with the seeds' range as a band, the contention-free reference dashed.
* :func:`breakdown_figure`: Figs. 14-15: attainment per scheduler (bars, seeds' range as error
  bars), Stage-2 CCT per batch-layer (box plot), P2D earliness (CDF).
* :func:`normalized_figure`: Figs. 5 and 10: mean TTFT and Stage-2 CCT of each run over a chosen
  run's, per workload (bars), and the TTFT CDFs when per-request details were stored.
"""

from __future__ import annotations

import io
import math

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from ..experiments.points import CONTENTION_FREE
from .data import ExperimentData

__all__ = ["attainment_figure", "breakdown_figure", "draw", "normalized_figure", "style"]

# one colour per scheduler across every figure (tab10), the reference black
_COLOURS = {"fs": "#1f77b4", "sjf": "#ff7f0e", "edf": "#2ca02c", "karuna": "#9467bd",
            "pias": "#8c564b", "mfs": "#d62728", "oracle": "#7f7f7f", CONTENTION_FREE: "black"}
_MARKERS = {"fs": "o", "sjf": "s", "edf": "^", "karuna": "D", "pias": "v", "mfs": "*",
            "oracle": "x", CONTENTION_FREE: None}
DPI = 110


def style(run: str) -> dict:
    """Line style of one run: the reference dashed, MFS heavier."""
    colour = _COLOURS.get(run, "#17becf")
    return {"color": colour, "marker": _MARKERS.get(run, "o"),
            "linestyle": "--" if run == CONTENTION_FREE else "-",
            "linewidth": 2.2 if run == "mfs" else 1.4, "markersize": 5}


def _bar_style(run: str) -> dict:
    """Bars: the scheduler's colour; the reference light grey and hatched."""
    if run == CONTENTION_FREE:
        return {"color": "#d0d0d0", "hatch": "//", "edgecolor": "#444444"}
    return {"color": style(run)["color"], "edgecolor": "white"}


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def attainment_figure(data: ExperimentData) -> bytes:
    groups = data.groups()
    models = list(dict.fromkeys(m for m, _ in groups))
    workloads = list(dict.fromkeys(w for _, w in groups))
    if len(models) == 1:  # one model: a panel per workload, side by side (Fig. 13)
        layout = [[(models[0], w) for w in workloads]]
    else:  # a row per workload, a panel per model (Figs. 11-12)
        layout = [[(m, w) for m in models] for w in workloads]
    nrows, ncols = len(layout), max(len(r) for r in layout)
    fig = Figure(figsize=(3.3 * ncols + 0.4, 2.9 * nrows + 0.9), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
    handles = {}
    for i, row in enumerate(layout):
        for j, (m, w) in enumerate(row):
            ax = axes[i][j]
            for run in data.runs():
                c = data.curve(m, w, run)
                if not c.rates:
                    continue
                st = style(run)
                (line,) = ax.plot(c.rates, c.mean, label=run, **st)
                handles.setdefault(run, line)
                if c.seeds > 1:
                    ax.fill_between(c.rates, c.low, c.high, color=st["color"], alpha=0.15,
                                    linewidth=0)
            ax.set_title(f"{m} | {w}", fontsize=9)
            rates = data.rates(m, w)
            if len(rates) <= 12:  # a tick per swept rate (also right for a single point)
                ax.set_xticks(rates, [f"{r:g}" for r in rates])
            ax.set_ylim(-0.02, 1.02)
            ax.grid(True, alpha=0.3)
            ax.set_xlabel("request rate per GPU (req/s)", fontsize=8)
            if j == 0:
                ax.set_ylabel("TTFT SLO attainment", fontsize=8)
            ax.tick_params(labelsize=8)
        for j in range(len(row), ncols):
            axes[i][j].set_visible(False)
    seeds = len(data.seeds())
    fig.legend(list(handles.values()), list(handles), loc="outside lower center",
               ncols=min(len(handles), 3 * ncols), fontsize=8, frameon=False)
    fig.suptitle(f"{data.experiment.figure}: " + (
        f"mean of {seeds} seeds, band = their range" if seeds > 1 else "one seed"), fontsize=9)
    return _png(fig)


def breakdown_figure(data: ExperimentData, model: str, workload: str, rate: float) -> bytes:
    runs = data.runs()
    fig = Figure(figsize=(12, 3.4), layout="constrained")
    ax_att, ax_cct, ax_early = fig.subplots(1, 3)
    x = np.arange(len(runs))
    means = [data.mean("slo_attainment", model, workload, r, rate) for r in runs]
    lows = [min(data.values("slo_attainment", model, workload, r, rate), default=math.nan)
            for r in runs]
    highs = [max(data.values("slo_attainment", model, workload, r, rate), default=math.nan)
             for r in runs]
    err = np.array([[m - lo for m, lo in zip(means, lows, strict=True)],
                    [hi - m for m, hi in zip(means, highs, strict=True)]])
    for xi, r, mean, lo, hi in zip(x, runs, means, err[0], err[1], strict=True):
        ax_att.bar(xi, mean, yerr=[[lo], [hi]], capsize=3, **_bar_style(r))
    ax_att.set_xticks(x, runs, rotation=30, fontsize=8)
    ax_att.set_ylabel("TTFT SLO attainment", fontsize=8)
    ax_att.set_ylim(0, 1.02)
    ax_att.set_title("SLO attainment (seed mean, range)", fontsize=9)

    cct = [1e3 * data.detail_values("layers", "stage2_cct_s", r, model, workload, rate)
           for r in runs]
    ax_cct.boxplot(cct, showfliers=False, showmeans=True, widths=0.6)
    ax_cct.set_xticks(np.arange(1, len(runs) + 1), runs, rotation=30, fontsize=8)
    ax_cct.set_ylabel("Stage-2 CCT per batch-layer (ms)", fontsize=8)
    ax_cct.set_title("collective completion time (box: quartiles, triangle: mean)",
                     fontsize=9)

    for r in runs:
        e = np.sort(data.detail_values("requests", "p2d_earliness", r, model, workload, rate))
        if e.size:
            st = style(r)
            ax_early.step(e, np.arange(1, e.size + 1) / e.size, where="post", label=r,
                          color=st["color"], linestyle=st["linestyle"],
                          linewidth=st["linewidth"])
    ax_early.axvline(0, color="grey", linewidth=0.8)
    ax_early.set_xlabel("P2D earliness (fraction of the SLO; < 0: missed)", fontsize=8)
    ax_early.set_ylabel("CDF of requests", fontsize=8)
    ax_early.set_title("P2D earliness", fontsize=9)
    ax_early.legend(fontsize=7, frameon=False)
    for ax in (ax_att, ax_cct, ax_early):
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=8)
    fig.suptitle(f"{data.experiment.figure}: {model} | {workload} | {rate:g} req/s per GPU",
                 fontsize=10)
    return _png(fig)


def normalized_figure(data: ExperimentData, rate: float) -> bytes:
    base = data.experiment.normalize_to or "fs"
    runs = data.runs()
    groups = data.groups()
    with_cdf = data.details("requests") is not None
    ncols = 2 if with_cdf else 1
    fig = Figure(figsize=(5.2 * ncols, 3.3 * len(groups) + 0.3), layout="constrained")
    axes = fig.subplots(len(groups), ncols, squeeze=False)
    for gi, (m, w) in enumerate(groups):
        ax = axes[gi][0]
        width = 0.8 / len(runs)
        top = 1.0
        for k, r in enumerate(runs):
            vals, lows, highs = [], [], []
            for col in ("ttft_mean_s", "stage2_cct_mean_s"):
                num = np.array(data.values(col, m, w, r, rate))
                den = np.array(data.values(col, m, w, base, rate))
                ratios = num / den if num.size and num.size == den.size else np.array([np.nan])
                vals.append(float(np.mean(ratios)))
                lows.append(float(np.mean(ratios) - np.min(ratios)))
                highs.append(float(np.max(ratios) - np.mean(ratios)))
                top = max(top, float(np.nanmax(ratios)) if np.isfinite(ratios).any() else top)
            xs = np.arange(2) - 0.4 + width * (k + 0.5)
            ax.bar(xs, vals, width=width * 0.95, yerr=[lows, highs], capsize=2, label=r,
                   **_bar_style(r))
        ax.axhline(1.0, color="grey", linewidth=0.8)
        ax.set_ylim(0, 1.3 * top)
        ax.set_xticks([0, 1], ["mean TTFT", "mean Stage-2 CCT"], fontsize=8)
        ax.set_ylabel(f"normalised to {base}", fontsize=8)
        ax.set_title(f"{m} | {w} | {rate:g} req/s per GPU", fontsize=9)
        ax.legend(fontsize=7, frameon=False, ncols=min(len(runs), 4), loc="upper center")
        ax.grid(True, axis="y", alpha=0.3)
        ax.tick_params(labelsize=8)
        if with_cdf:
            ax2 = axes[gi][1]
            for r in runs:
                t = np.sort(1e3 * data.detail_values("requests", "ttft_s", r, m, w, rate))
                if t.size:
                    st = style(r)
                    ax2.step(t, np.arange(1, t.size + 1) / t.size, where="post", label=r,
                             color=st["color"], linestyle=st["linestyle"],
                             linewidth=st["linewidth"])
            lo, hi = ax2.get_xlim()
            log = lo > 0 and hi / lo > 20  # a log axis only where TTFTs span decades
            if log:
                ax2.set_xscale("log")
                ax2.xaxis.set_minor_formatter(NullFormatter())
            ax2.set_xlabel("TTFT (ms, log scale)" if log else "TTFT (ms)", fontsize=8)
            ax2.set_ylabel("CDF of requests", fontsize=8)
            ax2.set_title(f"TTFT distribution | {w}", fontsize=9)
            ax2.legend(fontsize=7, frameon=False)
            ax2.grid(True, alpha=0.3)
            ax2.tick_params(labelsize=8)
    seeds = len(data.seeds())
    fig.suptitle(f"{data.experiment.figure}: " + (
        f"bars = mean of the {seeds} seeds' ratios, whiskers = their range" if seeds > 1
        else "one seed"), fontsize=9)
    return _png(fig)


def draw(data: ExperimentData) -> list[tuple[bytes, str]]:
    """Every figure of one experiment, as (PNG, caption), in the order the report shows them."""
    exp = data.experiment
    if exp.kind == "attainment":
        return [(attainment_figure(data),
                 "TTFT SLO attainment against the request rate per GPU: one line per scheduler "
                 "(seed mean; band: range over seeds), the contention-free reference dashed.")]
    if exp.kind == "breakdown":
        return [(breakdown_figure(data, m, w, rate),
                 f"Breakdown for {m}, {w}, {rate:g} req/s per GPU: SLO attainment, Stage-2 "
                 "collective completion time per batch-layer, P2D earliness of the evaluated "
                 "requests.")
                for m, w in data.groups() for rate in data.rates(m, w)]
    cdf = ", and the TTFT distribution." if data.details("requests") is not None else "."
    return [(normalized_figure(data, rate),
             f"Mean TTFT and mean Stage-2 CCT normalised to {exp.normalize_to} at {rate:g} "
             f"req/s per GPU{cdf}") for rate in data.rates()]
