"""Collect run summaries under a folder into a markdown table: runs that differ only by the `-sN` seed suffix
are grouped as mean ± std of last- and best-epoch test accuracy.

    .venv/bin/python experiments/collect.py runs/c100
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from pathlib import Path


def main(root: str) -> None:
    groups: dict[str, list[dict]] = {}
    for summary in sorted(Path(root).glob("*/summary.json")):
        name = re.sub(r"-s\d+$", "", summary.parent.name)
        groups.setdefault(name, []).append(json.loads(summary.read_text()))

    def fmt(values: list[float]) -> str:
        if len(values) == 1:
            return f"{values[0]:.2f}"
        return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"

    print(
        "| run | seeds | epochs | last-epoch test acc (%) | best-epoch test acc (%) | agreement (%) | train acc (%) |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, runs in groups.items():
        last = [r["last_epoch_test_acc"] for r in runs]
        best = [r["best_test_acc"] for r in runs]
        agree = [r["last_agreement"] for r in runs if r.get("last_agreement") is not None]
        train = [r["last_train_acc"] for r in runs]
        print(
            f"| {name} | {len(runs)} | {runs[0]['epochs']} | {fmt(last)} | {fmt(best)} | "
            f"{fmt(agree) if agree else '-'} | {fmt(train)} |"
        )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs")
