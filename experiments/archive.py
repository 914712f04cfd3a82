"""Keep the small result files of finished runs in the repository, so the tables of docs/results.md can be rebuilt
after the run folders (checkpoints included, gitignored under runs/) are gone.

    .venv/bin/python experiments/archive.py runs/c100 experiments/results/c100

Copies, keeping relative paths: each run's summary.json, metrics.jsonl and config.yaml, analysis/analysis.json,
and the sweep files (sweep.json, status.json, sweep.csv, sweep.md), plus tstddev.json. Only runs whose
summary says `finished` are copied; checkpoints, plots and reports stay behind. experiments/tables.py reads
the archive as it reads the run folders."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

RUN_FILES = ("summary.json", "metrics.jsonl", "config.yaml", "analysis/analysis.json")
FOLDER_FILES = ("sweep.json", "status.json", "sweep.csv", "sweep.md", "tstddev.json")


def archive(src: Path, dest: Path) -> int:
    """Copy the result files under `src` to `dest`; returns the number of runs copied."""
    copied = 0
    for summary in sorted(src.rglob("summary.json")):
        run = summary.parent
        if "checkpoints" in run.parts or json.loads(summary.read_text()).get("status") != "finished":
            continue
        for name in RUN_FILES:
            f = run / name
            if f.is_file():
                target = dest / run.relative_to(src) / name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(f, target)
        copied += 1
    for name in FOLDER_FILES:
        for f in sorted(src.rglob(name)):
            target = dest / f.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, target)
    return copied


if __name__ == "__main__":
    source, destination = Path(sys.argv[1]), Path(sys.argv[2])
    print(f"{archive(source, destination)} finished runs archived to {destination}")
