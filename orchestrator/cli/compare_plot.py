"""The comparison plot: one metric's curves over steps for the selected runs, in one PNG."""

from __future__ import annotations

import textwrap
from typing import Any, Mapping, Sequence

from orchestrator.cli.compare_table import Row, RunRecord

WIDTH_IN, HEIGHT_IN, DPI = 10.0, 6.0, 100
"""1000 x 600 pixels: readable on a screen and in a pull request."""
LABEL_WIDTH = 36
"""Legend entries wrap here, so that the legend beside the axes never takes more than about a third of the width."""
LEGEND_LINES = 30
"""Lines of small text that fit the legend's height on the canvas."""
DEFAULT_COLORS = 10
MARKERS_UP_TO = 30
"""Curves with at most this many points show each point."""


def plot_curves(
    records: Sequence[RunRecord], rows: Sequence[Row], labels: Mapping[str, str], metric: str, mode: str, path: str
) -> int:
    """Draw the metric over steps into a PNG at `path`; returns the number of curves drawn."""
    figure, drawn = curves_figure(records, rows, labels, metric, mode)
    figure.savefig(path, dpi=DPI)
    return drawn


def curves_figure(
    records: Sequence[RunRecord], rows: Sequence[Row], labels: Mapping[str, str], metric: str, mode: str
) -> tuple[Any, int]:
    """The figure of the metric over steps for every run that has it, best first in the legend, and its curve count.

    The legend sits beside the axes, never on the curves, and the layout engine sizes the axes so that
    title, labels and legend all fit the fixed 1000 x 600 canvas. Runs whose params do not fit the
    legend's height are named by their run name instead; past LEGEND_LINES runs only the best are named.
    """
    # a Figure with its own Agg canvas: no pyplot, so no process-wide backend or figure state
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    by_id = {record.run_id: record for record in records}
    plotted = [row for row in rows if by_id[row.run_id].history]
    texts = {
        row.run_id: textwrap.fill(labels[row.run_id], LABEL_WIDTH, subsequent_indent="  ", break_on_hyphens=False)
        for row in plotted
    }
    if sum(text.count("\n") + 1 for text in texts.values()) > LEGEND_LINES:
        texts = {row.run_id: row.name for row in plotted}
    named = {row.run_id for row in plotted[:LEGEND_LINES]}
    figure = Figure(figsize=(WIDTH_IN, HEIGHT_IN), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    if len(plotted) > DEFAULT_COLORS:  # the default cycle repeats after 10: two curves would share a colour
        from matplotlib import colormaps

        axes.set_prop_cycle(color=[colormaps["tab20"](index % 20) for index in range(len(plotted))])
    drawn = 0
    for row in plotted:
        steps, values = zip(*by_id[row.run_id].history)
        label = texts[row.run_id] if row.run_id in named else "_nolegend_"
        (line,) = axes.plot(
            steps, values, label=label, linewidth=1.8, marker="o" if len(steps) <= MARKERS_UP_TO else None, markersize=3
        )
        if row.best_step is not None and row.best is not None:  # set together, from the same point
            axes.scatter([row.best_step], [row.best], s=60, color=line.get_color(), edgecolors="black", zorder=3)
        drawn += 1
    better = "higher" if mode == "max" else "lower"
    axes.set_xlabel("step")
    axes.set_ylabel(metric)
    shown = "best first" if drawn <= LEGEND_LINES else f"the best {LEGEND_LINES} named"
    axes.set_title(
        f"{metric} over steps ({better} is better): {drawn} runs, {shown}; ringed dot = run's best", fontsize="medium"
    )
    axes.grid(alpha=0.3)
    if drawn:
        figure.legend(loc="outside right upper", fontsize="small", frameon=False)
    return figure, drawn
