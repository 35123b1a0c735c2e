"""Figures beside their ceilings and targets: one printed table, the same as JSON."""

from __future__ import annotations

import math
import platform
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson


@dataclass(slots=True)
class Figure:
    """One measured figure, the ceiling it is compared with, and its target, if it has one."""

    key: str
    label: str
    unit: str
    value: float | None = None
    ceiling_label: str = ""
    ceiling: float | None = None
    target_label: str = ""
    # Decides pass or fail from (value, ceiling); None when the figure is only information.
    check: Callable[[float, float | None], bool] | None = field(default=None, repr=False)
    missing: str = ""  # why the value could not be measured
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.value is None or not self.ceiling:
            return None
        return self.value / self.ceiling

    @property
    def verdict(self) -> str:
        if self.value is None or (isinstance(self.value, float) and math.isnan(self.value)):
            return "MISSING"
        if self.check is None:
            return "info"
        return "PASS" if self.check(self.value, self.ceiling) else "FAIL"

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("check")
        data["ratio"] = None if self.ratio is None else round(self.ratio, 3)
        data["verdict"] = self.verdict
        return data


def _number(value: float | None, unit: str) -> str:
    if value is None or math.isnan(value):
        return "-"
    if unit == "/s":
        return f"{value:,.0f}/s"
    if unit == "ms":
        return f"{value:,.2f} ms"
    if unit == "MB":
        return f"{value:,.1f} MB"
    if unit == "µs":
        return f"{value:,.0f} µs"
    return f"{value:,.2f} {unit}".strip()


def table(figures: Sequence[Figure]) -> str:
    """The figures as a fixed-width text table, one row each."""
    header = ("figure", "value", "ceiling (same run)", "ratio", "target", "result")
    rows = [header]
    for fig in figures:
        ceiling = (
            f"{fig.ceiling_label}: {_number(fig.ceiling, fig.unit)}" if fig.ceiling_label else ""
        )
        ratio = "-" if fig.ratio is None else f"{fig.ratio:.2f}"
        rows.append(
            (fig.label, _number(fig.value, fig.unit), ceiling, ratio, fig.target_label, fig.verdict)
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    notes = [f"  {fig.label}: {fig.missing}" for fig in figures if fig.missing]
    if notes:
        lines += ["", "missing:", *notes]
    return "\n".join(line.rstrip() for line in lines)


def markdown(figures: Sequence[Figure]) -> str:
    """The same table in Markdown, for docs/performance.md."""
    lines = [
        "| figure | value | ceiling (same run) | ratio | target | result |",
        "|---|---|---|---|---|---|",
    ]
    for fig in figures:
        ceiling = (
            f"{fig.ceiling_label}: {_number(fig.ceiling, fig.unit)}" if fig.ceiling_label else ""
        )
        ratio = "-" if fig.ratio is None else f"{fig.ratio:.2f}"
        lines.append(
            f"| {fig.label} | {_number(fig.value, fig.unit)} | {ceiling} | {ratio} | "
            f"{fig.target_label} | {fig.verdict} |"
        )
    return "\n".join(lines)


def write_json(
    folder: Path, figures: Sequence[Figure], details: dict[str, Any], started: datetime
) -> Path:
    """Write the run as bench/results/<time>.json; its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"bench-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    document = {
        "started": started.isoformat(),
        "finished": datetime.now(UTC).isoformat(),
        "machine": {
            "cpus": _cpus(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "figures": [fig.as_json() for fig in figures],
        "details": details,
    }
    path.write_bytes(
        orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)
    )
    return path


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))
