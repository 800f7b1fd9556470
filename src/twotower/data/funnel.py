"""The funnel: rows, users, items and positive share after each step, and every counted drop."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import ibis.expr.types as ir

from twotower.data.storage import Location, locate, write_json


@dataclass
class Step:
    step: str
    rows: int
    users: int
    items: int
    positive_share: float | None


@dataclass
class Funnel:
    steps: list[Step] = field(default_factory=list)
    drops: dict[str, int] = field(default_factory=dict)
    notes: dict[str, object] = field(default_factory=dict)

    def record(self, step: str, table: ir.Table) -> Step:
        """Count ``table`` (one aggregate query) and append it as ``step``."""
        label = table.label.cast("float64").mean() if "label" in table.schema() else None
        counts = table.aggregate(
            rows=table.count(),
            users=table.user_id.nunique(),
            items=table.item_id.nunique(),
            **({"positive_share": label} if label is not None else {}),
        ).to_pyarrow().to_pylist()[0]
        share = counts.get("positive_share")
        entry = Step(step, int(counts["rows"]), int(counts["users"]), int(counts["items"]), None if share is None else round(float(share), 6))
        self.steps.append(entry)
        return entry

    def drop(self, reason: str, count: int) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + int(count)

    def as_dict(self) -> dict:
        return {"steps": [asdict(s) for s in self.steps], "drops": self.drops, "notes": self.notes}

    def write(self, path: str | Path | Location) -> None:
        """Strict JSON, written atomically (a local path or a URI)."""
        write_json(locate(path), self.as_dict())

    def table(self) -> str:
        """The funnel as a Markdown table (for the console and the run report)."""
        lines = ["| step | rows | users | items | positive share |", "|---|---:|---:|---:|---:|"]
        for s in self.steps:
            share = "" if s.positive_share is None else f"{s.positive_share:.3f}"
            lines.append(f"| {s.step} | {s.rows:,} | {s.users:,} | {s.items:,} | {share} |")
        if self.drops:  # the checks that dropped nothing are listed in funnel.json only
            lines.append("")
            lines.extend(f"- dropped: {reason}: {count:,}" for reason, count in self.drops.items() if count)
            if not any(self.drops.values()):
                lines.append("- dropped: none")
        if "time zone" in self.notes:
            lines.append(f"- local days and hours in time zone {self.notes['time zone']}")
        if "engine" in self.notes:
            lines.append(f"- engine: {self.notes['engine']}")
        return "\n".join(lines)
