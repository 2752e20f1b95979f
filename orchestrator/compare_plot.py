"""The comparison plot: one metric's curves over steps for the selected runs, in one PNG."""

from __future__ import annotations

from typing import Mapping, Sequence

from orchestrator.compare_table import RunRecord, Row

WIDTH_IN, HEIGHT_IN, DPI = 10.0, 6.0, 100
"""1000 x 600 pixels: readable on a screen and in a pull request."""
LEGEND_INSIDE_MAX = 8
"""More curves than this get the legend beside the axes instead of on them."""


def plot_curves(records: Sequence[RunRecord], rows: Sequence[Row], labels: Mapping[str, str], metric: str,
                mode: str, path: str) -> int:
    """Draw the metric over steps for every run that has it, best first in the legend; returns the curve count."""
    # a Figure with its own Agg canvas: no pyplot, so no process-wide backend or figure state
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    by_id = {record.run_id: record for record in records}
    figure = Figure(figsize=(WIDTH_IN, HEIGHT_IN), dpi=DPI)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    drawn = 0
    for row in rows:
        history = by_id[row.run_id].history
        if not history:
            continue
        steps, values = zip(*history)
        line, = axes.plot(steps, values, label=labels[row.run_id], linewidth=1.8,
                          marker="o" if len(steps) <= 30 else None, markersize=3)
        if row.best_step is not None:
            axes.scatter([row.best_step], [row.best], s=60, color=line.get_color(), edgecolors="black", zorder=3)
        drawn += 1
    axes.set_xlabel("step")
    axes.set_ylabel(metric)
    axes.set_title(f"{metric} over steps: {drawn} runs, legend best first ({mode}); dots mark each run's best")
    axes.grid(alpha=0.3)
    if drawn > LEGEND_INSIDE_MAX:
        axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
        figure.subplots_adjust(left=0.08, right=0.68, bottom=0.1, top=0.92)
    else:
        axes.legend(fontsize="small", loc="best")
        figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    return drawn
