"""Pure comparison logic: runs -> rows with the params that differ and the metric's final and best value.

No MLflow here: `compare.py` turns MLflow runs into RunRecords; this module ranks and renders them.
"""

from __future__ import annotations

import collections
import csv
import io
import json
import math
import textwrap
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

MODES = ("max", "min")
FORMATS = ("table", "csv", "json")
_LOWER_IS_BETTER = ("loss", "error", "perplexity", "mse", "mae", "time")
_FIXED_COLUMNS = ("run", "name", "status", "wall", "final", "best")
NOTE_WIDTH = 100
"""The notes under the table wrap here: the table itself stays narrow by showing only what differs."""


@dataclass(frozen=True)
class RunRecord:
    """One run as compare sees it: identity, params and the selected metric's history."""

    run_id: str
    name: str
    status: str
    start_ms: Optional[int]
    end_ms: Optional[int]
    params: Mapping[str, str]
    history: tuple[tuple[int, float], ...]
    """(step, value) pairs of the selected metric, in step order."""

    @property
    def duration_s(self) -> Optional[float]:
        """Wall time from start to end; None while the run has not ended."""
        if self.start_ms is None or self.end_ms is None:
            return None
        return (self.end_ms - self.start_ms) / 1000


@dataclass(frozen=True)
class Row:
    """One line of the comparison."""

    run_id: str
    name: str
    status: str
    duration_s: Optional[float]
    params: Mapping[str, Optional[str]]
    """Only the params that differ between the selected runs (None where a run lacks one)."""
    final: Optional[float]
    best: Optional[float]
    best_step: Optional[int]


def default_mode(metric: str) -> str:
    """`min` for losses and errors, `max` for everything else (accuracy, throughput)."""
    return "min" if any(word in metric.lower() for word in _LOWER_IS_BETTER) else "max"


def differing_params(records: Sequence[RunRecord]) -> list[str]:
    """Param keys whose value is not the same in every selected run (a missing param counts as a value)."""
    keys = sorted({key for record in records for key in record.params})
    return [key for key in keys if len({record.params.get(key) for record in records}) > 1]


def build_rows(records: Sequence[RunRecord], mode: str) -> list[Row]:
    """One row per run, best first; runs without the metric come last."""
    keys = differing_params(records)
    rows = [_row(record, keys, mode) for record in records]
    sign = -1.0 if mode == "max" else 1.0
    return sorted(
        rows,
        key=lambda row: (
            row.best is None,
            sign * row.best if row.best is not None else 0.0,
            sign * (row.final if row.final is not None else 0.0),
            row.name,
        ),
    )


def _row(record: RunRecord, keys: Sequence[str], mode: str) -> Row:
    finite = [(step, value) for step, value in record.history if not math.isnan(value)]
    best_step, best = (None, None)
    if finite:
        pick = max if mode == "max" else min
        best_step, best = pick(finite, key=lambda pair: pair[1])
    final = record.history[-1][1] if record.history else None
    return Row(
        run_id=record.run_id,
        name=record.name,
        status=record.status,
        duration_s=record.duration_s,
        params={key: record.params.get(key) for key in keys},
        final=final,
        best=best,
        best_step=best_step,
    )


def shown_params(rows: Sequence[Row]) -> list[str]:
    """The differing params worth a table column or a legend entry: those with two values among the runs
    that set them. A param set in some runs only, always to one value (`model.channels`, which only the
    cnn runs have), repeats what another column says (`model.name`)."""
    keys = list(rows[0].params) if rows else []
    return [key for key in keys if len({row.params[key] for row in rows if row.params[key] is not None}) > 1]


def short_names(keys: Sequence[str]) -> dict[str, str]:
    """Each dotted key's shortest tail that no other key shares and no fixed column is called:
    `optim.lr` -> `lr`, but `model.name` stays (there is a `name` column)."""
    names = {}
    for key in keys:
        parts = key.split(".")
        for size in range(1, len(parts) + 1):
            tail = ".".join(parts[-size:])
            clash = any(other != key and (other == tail or other.endswith("." + tail)) for other in keys)
            if not clash and tail not in _FIXED_COLUMNS:
                break
        names[key] = tail
    return names


def curve_labels(rows: Sequence[Row]) -> dict[str, str]:
    """Legend text per run id: its shown params by their short names (those it sets), or its name when
    nothing differs; the name is added where two runs would read the same."""
    names = short_names(shown_params(rows))
    base = {
        row.run_id: ", ".join(f"{names[key]}={row.params[key]}" for key in names if row.params[key] is not None)
        or row.name
        for row in rows
    }
    counts = collections.Counter(base.values())
    return {
        row.run_id: base[row.run_id] if counts[base[row.run_id]] == 1 else f"{base[row.run_id]} ({row.name})"
        for row in rows
    }


def render(rows: Sequence[Row], metric: str, mode: str, output: str) -> str:
    """The rows as `table`, `csv` or `json` text."""
    keys = list(rows[0].params) if rows else []
    if output == "csv":
        return _csv(rows, keys)
    if output == "json":
        return (
            json.dumps(
                {"metric": metric, "mode": mode, "differing_params": keys, "runs": [_json_row(row) for row in rows]},
                indent=2,
            )
            + "\n"
        )
    return _table(rows, keys, metric, mode)


def _json_row(row: Row) -> dict:
    return {
        "run_id": row.run_id,
        "run_name": row.name,
        "status": row.status,
        "duration_s": row.duration_s,
        "params": dict(row.params),
        "final": row.final,
        "best": row.best,
        "best_step": row.best_step,
    }


def _csv(rows: Sequence[Row], keys: Sequence[str]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        ["run_id", "run_name", "status", "duration_s", *(f"params.{key}" for key in keys), "final", "best", "best_step"]
    )
    for row in rows:
        writer.writerow(
            [
                row.run_id,
                row.name,
                row.status,
                _blank(row.duration_s),
                *(_blank(row.params[key]) for key in keys),
                _blank(row.final),
                _blank(row.best),
                _blank(row.best_step),
            ]
        )
    return out.getvalue()


def _blank(value: object) -> str:
    return "" if value is None else str(value)


def _table(rows: Sequence[Row], keys: Sequence[str], metric: str, mode: str) -> str:
    shown = shown_params(rows)
    names = short_names(shown)
    better = "higher" if mode == "max" else "lower"
    header = ["run", "name", "status", "wall", *(names[key] for key in shown), "final", "best @step"]
    body = [
        [
            row.run_id[:8],
            row.name,
            row.status,
            _duration(row.duration_s),
            *(_blank(row.params[key]) or "-" for key in shown),
            _number(row.final),
            _number(row.best) + (f" @{row.best_step}" if row.best_step is not None else ""),
        ]
        for row in rows
    ]
    widths = [max(len(line[column]) for line in [header, *body]) for column in range(len(header))]
    lines = [f"{metric}: {better} is better ({mode}); {len(rows)} runs, best first"]
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in [header, *body]]
    notes = [
        "wall: the run's start to its end in MLflow, the time `run FINISHED in` prints (a resumed run counts "
        "from its first start)"
    ]
    renamed = [f"{names[key]} = {key}" for key in shown if names[key] != key]
    if renamed:
        notes.append("params: " + ", ".join(renamed))
    hidden = [key for key in keys if key not in shown]
    if hidden:
        notes.append("set in some runs only, to one value (in --format csv and json): " + ", ".join(hidden))
    lines += [textwrap.fill(note, NOTE_WIDTH, subsequent_indent="  ", break_on_hyphens=False) for note in notes]
    return "\n".join(lines) + "\n"


def _duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(seconds, 60)
    return f"{secs:.1f} s" if minutes < 1 else f"{int(minutes)} min {int(secs):02d} s"


def _number(value: Optional[float]) -> str:
    """Four significant digits, zeros kept (0.8660, 0.9638 line up); thousands in full (7,325 samples/s)."""
    if value is None:
        return "-"
    if math.isfinite(value) and abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:#.4g}".rstrip(".")
