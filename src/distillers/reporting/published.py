"""The published numbers beside which a report puts ours: ``published.json`` (the seed README, later papers)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources

SEED_SOURCE = "seed README (arXiv 2407.11802, 2407.12073)"


def published_data() -> dict:
    """``published.json`` as shipped with the package."""
    text = resources.files("distillers").joinpath("published.json").read_text(encoding="utf-8")
    return json.loads(text)


@dataclass(frozen=True)
class PublishedValue:
    top1: float | None  # None: the source says N/A
    source: str

    @property
    def source_text(self) -> str:
        """Where the number comes from, in words."""
        return SEED_SOURCE if self.source == "seed" else self.source


class Published:
    """Index over ``published.json``: (method, teacher, student, protocol) -> published top-1."""

    def __init__(self, data: dict) -> None:
        self.data = data
        self.methods: dict[tuple[str, str, str, str], PublishedValue] = {}
        self.baselines: dict[tuple[str, str], tuple[float, float]] = {}
        seed = data["seed"]
        for table in seed["tables"]:
            pairs = [tuple(pair) for pair in table["pairs"]]
            for pair, teacher_acc, student_acc in zip(pairs, table["teacher_top1"], table["student_top1"]):
                self.baselines[pair] = (teacher_acc, student_acc)
            for row in table["rows"]:
                for pair, value in zip(pairs, row["top1"]):
                    self.methods[(row["method"], *pair, seed["protocol"])] = PublishedValue(value, "seed")
        for entry in data.get("modern", []):
            key = (entry["method"], entry["teacher"], entry["student"], entry["protocol"])
            self.methods[key] = PublishedValue(entry["top1"], entry["source"])

    @classmethod
    def load(cls) -> Published:
        return cls(published_data())

    def lookup(self, method: str, teacher: str, student: str, protocol: str) -> PublishedValue | None:
        return self.methods.get((method, teacher, student, protocol))
