"""What a build wrote and what it skipped, with the reason for each skip."""

from __future__ import annotations

import collections
import dataclasses
import json
import os

from etils import epath

from nirgan_jax import paths

REPORT_JSON = "build_report.json"
REPORT_TEXT = "build_report.txt"


@dataclasses.dataclass
class BuildReport:
  dataset: str
  written: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  skipped: list[dict[str, str]] = dataclasses.field(default_factory=list)
  notes: list[str] = dataclasses.field(default_factory=list)

  def add_written(self, split: str) -> None:
    self.written[split] += 1

  def add_skipped(self, source: str, reason: str, split: str = "") -> None:
    self.skipped.append({"source": source, "reason": reason, "split": split})

  def add_note(self, note: str) -> None:
    self.notes.append(note)

  def to_dict(self) -> dict:
    return {"dataset": self.dataset, "written": dict(sorted(self.written.items())),
            "total_written": sum(self.written.values()), "skipped": self.skipped,
            "total_skipped": len(self.skipped), "notes": self.notes}

  def to_text(self) -> str:
    lines = [f"Build report for {self.dataset}", "examples written:"]
    lines += [f"  {split:<12} {count:>8}" for split, count in sorted(self.written.items())]
    lines.append(f"  {'total':<12} {sum(self.written.values()):>8}")
    lines.append(f"skipped: {len(self.skipped)}")
    lines += [f"  {item['source']}: {item['reason']}" for item in self.skipped]
    lines += [f"note: {note}" for note in self.notes]
    return "\n".join(lines)

  def write(self, directory: str | os.PathLike) -> tuple[epath.Path, epath.Path]:
    directory = paths.as_path(directory)  # local or gs://
    directory.mkdir(parents=True, exist_ok=True)
    json_path, text_path = directory / REPORT_JSON, directory / REPORT_TEXT
    json_path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
    text_path.write_text(self.to_text() + "\n")
    return json_path, text_path
