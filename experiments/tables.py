"""Markdown tables for docs/results.md from the run folders of cifar100_views.sh and cifar100_methods.sh.

    .venv/bin/python experiments/tables.py methods runs/c100   # issue 4: each method, plain vs +TLCutMix+pick
    .venv/bin/python experiments/tables.py atsc runs/c100      # issue 5: KD, SimKD, ATSC variants
    .venv/bin/python experiments/tables.py ensemble runs/c100-ens   # issue 6: paper C, from the sweeps

Cells are mean ± sample std over the seeds found (the count is given); a missing run is "–"."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

METHODS = ["kd", "dkd", "dist", "fitnet", "at", "sp", "rkd", "pkt", "vid", "crd", "simkd", "atsc"]


def summaries(root: Path, name: str) -> list[dict]:
    out = []
    for seed in (0, 1, 2):
        f = root / f"{name}-s{seed}" / "summary.json"
        if f.is_file():
            s = json.loads(f.read_text())
            if s.get("status") == "finished":
                out.append(s)
    return out


def cell(values: list[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.2f} (1)"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f} ({len(values)})"


def methods_table(root: Path) -> str:
    lines = [
        "| method | plain: last-epoch test acc (%) | + TLCutMix+pick | Δ (means) | plain: agreement (%) "
        "| + pick: agreement (%) |",
        "|---|---|---|---|---|---|",
    ]
    ce = summaries(root, "ce")
    lines.append(f"| ce (no teacher) | {cell([s['last_epoch_test_acc'] for s in ce])} | – | – | – | – |")
    for m in METHODS:
        plain, pick = summaries(root, m), summaries(root, f"{m}-tlcmpick")
        if not plain and not pick:
            continue
        a = [s["last_epoch_test_acc"] for s in plain]
        b = [s["last_epoch_test_acc"] for s in pick]
        delta = f"{statistics.mean(b) - statistics.mean(a):+.2f}" if a and b else "–"
        agree_a = [s["last_agreement"] for s in plain if s.get("last_agreement") is not None]
        agree_b = [s["last_agreement"] for s in pick if s.get("last_agreement") is not None]
        lines.append(f"| {m} | {cell(a)} | {cell(b)} | {delta} | {cell(agree_a)} | {cell(agree_b)} |")
    return "\n".join(lines)


def last_record(run: Path) -> dict:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return json.loads(lines[-1]) if lines else {}


def atsc_table(root: Path) -> str:
    rows = [
        ("KD (τ=4, 0.1·CE + 0.9·KL)", "kd"),
        ("SimKD (frozen teacher, shared classifier)", "simkd"),
        ("ATSC as published (adaptive teacher, shared classifier)", "atsc"),
        ("ATSC + BN anchor (kdlab's anchor_bn)", "atsc-abn"),
        ("ATSC + BN anchor, two teachers (resnet20 seeds 0 and 1)", "atsc-abn-2t"),
        ("ATSC + BN anchor + TLCutMix+pick", "atsc-abn-tlcmpick"),
        ("SimKD + TLCutMix+pick", "simkd-tlcmpick"),
    ]
    lines = [
        "| method | last-epoch test acc (%) | best-epoch test acc (%) | teacher acc at the end (%) "
        "| ‖θ−θ₀‖ at the end |",
        "|---|---|---|---|---|",
    ]
    for label, name in rows:
        runs = summaries(root, name)
        if not runs:
            lines.append(f"| {label} | – | – | – | – |")
            continue
        last = cell([s["last_epoch_test_acc"] for s in runs])
        best = cell([s["best_test_acc"] for s in runs])
        t_acc, drift = [], []
        for seed in (0, 1, 2):
            run = root / f"{name}-s{seed}"
            if (run / "summary.json").is_file():
                rec = last_record(run)
                if rec.get("teacher_test_acc"):
                    t_acc.append(statistics.mean(rec["teacher_test_acc"]))
                drifts = [v for k, v in rec.items() if k.endswith("_drift")]
                if drifts:
                    drift.append(statistics.mean(drifts))
        lines.append(f"| {label} | {last} | {best} | {cell(t_acc)} | {cell(drift) if drift else '– (frozen)'} |")
    return "\n".join(lines)


def ensemble_table(root: Path) -> str:
    """One row per (teachers' augmentation, student's augmentation, control), means ± std over seeds."""
    from kdlab.sweep import Sweep

    cols = [("iou_teacher_teacher", "IoU t–t", 3), ("iou_teacher_student", "IoU t–s", 3),
            ("agreement", "agreement (%)", 2), ("kl_s_t", "KL(s‖t)", 3), ("mutual_information", "MI (nats)", 3),
            ("student_train_acc", "clean train acc (%)", 2), ("student_test_acc", "test acc (%)", 2),
            ("student_gap", "clean train − test", 2), ("student_ece_15", "ECE15 (%)", 2)]  # fmt: skip
    lines = ["| teachers | student | " + " | ".join(c[1] for c in cols) + " | runs |",
             "|---|---|" + "---|" * (len(cols) + 1)]  # fmt: skip
    settings = [(f"students-{t}-teachers", t, None) for t in ("weak", "strong")]
    settings += [("control-logit-matching", "strong", "strong + logit MSE 0.1"),
                 ("control-kd-weight", "strong", "strong, KD weight 2.0")]  # fmt: skip
    for folder, teachers, control in settings:
        if not (root / folder / "sweep.json").is_file():
            continue
        rows = [r for r in Sweep(root / folder).rows() if r["state"] == "finished"]
        groups: dict[str, list[dict]] = {}
        for r in rows:
            groups.setdefault(control or str(r.get("views.standard", "strong")), []).append(r)
        for student, members in groups.items():
            cells = []
            for key, _, digits in cols:
                vals = [float(m[key]) for m in members if isinstance(m.get(key), int | float)]
                if not vals:
                    cells.append("–")
                elif len(vals) == 1:
                    cells.append(f"{vals[0]:.{digits}f}")
                else:
                    cells.append(f"{statistics.mean(vals):.{digits}f} ± {statistics.stdev(vals):.{digits}f}")
            lines.append(f"| {teachers} | {student} | " + " | ".join(cells) + f" | {len(members)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    kind, root = sys.argv[1], Path(sys.argv[2] if len(sys.argv) > 2 else "runs/c100")
    tables = {"methods": methods_table, "atsc": atsc_table, "ensemble": ensemble_table}
    print(tables[kind](root))
