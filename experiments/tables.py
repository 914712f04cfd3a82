"""Markdown tables for docs/results.md from the run folders of cifar100_views.sh and cifar100_methods.sh.

    .venv/bin/python experiments/tables.py methods runs/c100   # the loss zoo: each method, plain vs +TLCutMix+pick
    .venv/bin/python experiments/tables.py atsc runs/c100      # ATSC: KD, SimKD, ATSC variants
    .venv/bin/python experiments/tables.py ensemble runs/c100-ens   # ensemble KD (Guo et al.), from the sweeps
    .venv/bin/python experiments/tables.py tstddev runs/c100-tstddev  # T. stddev vs the students' test loss
    .venv/bin/python experiments/tables.py methods_table runs/c100-methods  # every method, one protocol
    .venv/bin/python experiments/tables.py amp_parity_table runs/c100-amp-parity  # bf16 against fp32
    .venv/bin/python experiments/tables.py stored_resolution_table runs/stored-resolution  # a pre-resized store

Cells are mean ± sample std over the seeds found (the count is given); a missing run is "–". DIR may be a
runs folder or its archive (experiments/archive.py). An `earlier.json` in DIR supplies runs whose folders were
not kept: per-run numbers (`runs`, used where the folder is missing) and, for rows that were only ever recorded
as mean ± std, those cells verbatim (`cells`)."""

from __future__ import annotations

import functools
import json
import statistics
import sys
from pathlib import Path

METHODS = ["kd", "dkd", "dist", "fitnet", "at", "sp", "rkd", "pkt", "vid", "crd", "simkd", "atsc"]


@functools.cache
def earlier(root: Path) -> dict:
    f = root / "earlier.json"
    return json.loads(f.read_text()) if f.is_file() else {"runs": {}, "cells": {}}


def summaries(root: Path, name: str) -> list[dict]:
    """Finished runs NAME-s0, -s1, -s2: summary.json plus, from metrics.jsonl's last line, the teachers' mean
    test accuracy and drift (`teacher_acc_end`, `drift_end`); earlier.json's entry where the folder is missing."""
    out = []
    for seed in (0, 1, 2):
        run = root / f"{name}-s{seed}"
        f = run / "summary.json"
        if f.is_file():
            s = json.loads(f.read_text())
            if s.get("status") == "finished":
                rec = last_record(run)
                if rec.get("teacher_test_acc"):
                    s["teacher_acc_end"] = statistics.mean(rec["teacher_test_acc"])
                drifts = [v for k, v in rec.items() if k.endswith("_drift")]
                if drifts:
                    s["drift_end"] = statistics.mean(drifts)
                out.append(s)
        elif run.name in earlier(root)["runs"]:
            out.append(earlier(root)["runs"][run.name])
    return out


def verbatim(root: Path, name: str, key: str) -> str | None:
    return earlier(root)["cells"].get(name, {}).get(key)


def cell(values: list[float], digits: int = 2) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.{digits}f} (1)"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f} ({len(values)})"


def methods_table(root: Path) -> str:
    lines = [
        "| method | plain: last-epoch test acc (%) | + TLCutMix+pick | Δ (means) | plain: agreement (%) "
        "| + pick: agreement (%) |",
        "|---|---|---|---|---|---|",
    ]
    ce = summaries(root, "ce")
    ce_cell = verbatim(root, "ce", "last") or cell([s["last_epoch_test_acc"] for s in ce])
    lines.append(f"| ce (no teacher) | {ce_cell} | – | – | – | – |")
    for m in METHODS:
        plain, pick = summaries(root, m), summaries(root, f"{m}-tlcmpick")
        fixed = [verbatim(root, n, k) for n in (m, f"{m}-tlcmpick") for k in ("last", "agreement")]
        if not plain and not pick and not any(fixed):
            continue
        a = [s["last_epoch_test_acc"] for s in plain]
        b = [s["last_epoch_test_acc"] for s in pick]
        agree_a = [s["last_agreement"] for s in plain if s.get("last_agreement") is not None]
        agree_b = [s["last_agreement"] for s in pick if s.get("last_agreement") is not None]
        cells = [fixed[0] or cell(a), fixed[2] or cell(b), fixed[1] or cell(agree_a), fixed[3] or cell(agree_b)]
        means = [float(c.split()[0]) for c in cells[:2] if c != "–"]
        delta = f"{means[1] - means[0]:+.2f}" if len(means) == 2 else "–"
        lines.append(f"| {m} | {cells[0]} | {cells[1]} | {delta} | {cells[2]} | {cells[3]} |")
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
        last = verbatim(root, name, "last") or cell([s["last_epoch_test_acc"] for s in runs])
        best = verbatim(root, name, "best") or cell([s["best_test_acc"] for s in runs])
        t_acc = [s["teacher_acc_end"] for s in runs if s.get("teacher_acc_end") is not None]
        drift = [s["drift_end"] for s in runs if s.get("drift_end") is not None]
        lines.append(f"| {label} | {last} | {best} | {cell(t_acc)} | {cell(drift) if drift else '– (frozen)'} |")
    return "\n".join(lines)


def ensemble_table(root: Path) -> str:
    """One row per (teachers' augmentation, student's augmentation, control), means ± std over seeds."""
    from kdlab.commands.sweep import Sweep

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


# tstddev_vs_student_loss.sh: run name → the view spec its T. stddev was measured with
TSTDDEV_VIEWS = {"identity": "identity", "flip": "flip", "crop_flip": "crop_flip", "cutout": "cutout",
                 "autoaugment": "autoaugment", "mixup": "mixup", "cutmix": "cutmix",
                 "pick-tent": "cutmix_pick:score=teacher_entropy",
                 "pick-sent": "cutmix_pick:score=student_entropy"}  # fmt: skip


def _ranks(values: list[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):  # ties share their mean rank
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def pearson(a: list[float], b: list[float]) -> float:
    ma, mb = statistics.mean(a), statistics.mean(b)
    cov = sum((x - ma) * (y - mb) for x, y in zip(a, b))
    return cov / (sum((x - ma) ** 2 for x in a) * sum((y - mb) ** 2 for y in b)) ** 0.5


def tstddev_table(root: Path) -> str:
    """T. stddev of each view (tstddev/tstddev.json) beside its students' last-epoch test loss and accuracy
    (mean ± std over seeds), then Pearson and Spearman correlations of T. stddev with the mean test loss."""
    measured = json.loads((root / "tstddev" / "tstddev.json").read_text())["views"]
    lines = ["| view | T. stddev | student test loss | student test acc (%) |", "|---|---|---|---|"]
    xs, ys = [], []
    for run, spec in sorted(TSTDDEV_VIEWS.items(), key=lambda kv: measured.get(kv[1], 1.0)):
        runs = summaries(root, f"kd-{run}")
        if spec not in measured or not runs:
            continue
        losses = [s["last_test_loss"] for s in runs]
        lines.append(
            f"| {spec} | {measured[spec]:.6f} | {cell(losses, 3)} | {cell([s['last_epoch_test_acc'] for s in runs])} |"
        )
        xs.append(measured[spec])
        ys.append(statistics.mean(losses))
    if len(xs) >= 3:
        lines.append("")
        lines.append(f"Pearson r = {pearson(xs, ys):.3f}, Spearman ρ = {pearson(_ranks(xs), _ranks(ys)):.3f} "
                     f"over {len(xs)} views")  # fmt: skip
    return "\n".join(lines)


# cifar100_methods_table.sh: the method families, in the table's order
FAMILIES = {"logit": ["kd", "dkd", "dist", "ttm", "wttm", "ctkd", "mlkd"],
            "feature": ["fitnet", "at", "sp", "rkd", "pkt", "vid", "nst", "kdsvd", "ofd", "reviewkd", "crd"],
            "shared head": ["simkd", "atsc"]}  # fmt: skip


def every_method_table(root: Path) -> str:
    """Every method of cifar100_methods_table.sh's three sweeps: best and last-epoch test accuracy, mean ± std over
    the seeds (their count), sorted within each family by the mean best accuracy."""
    from kdlab.commands.sweep import Sweep

    rows: dict[str, list[dict]] = {}
    for folder in ("methods", "ls", "dot"):
        if not (root / folder / "sweep.json").is_file():
            continue
        for r in Sweep(root / folder).rows():
            if r["state"] != "finished":
                continue
            label = str(r["method.name"])
            if folder == "ls":
                label += " + logit standardisation"
            elif folder == "dot":
                label += " + DOT"
            rows.setdefault(label, []).append(r)

    def stat(members: list[dict], key: str) -> str:
        vals = [float(m[key]) for m in members if isinstance(m.get(key), int | float)]
        if len(vals) < 2:
            return f"{vals[0]:.2f} (1)" if vals else "–"
        return f"{statistics.mean(vals):.2f} ± {statistics.stdev(vals):.2f}"

    def mean_best(label: str) -> float:
        return statistics.mean(float(m["best_test_acc"]) for m in rows[label])

    lines = ["| family | method | best test acc (%) | last-epoch test acc (%) | seeds |", "|---|---|---|---|---|"]
    for family, names in [("baseline", ["ce"]), *FAMILIES.items()]:
        labels = [lb for lb in rows if lb.split(" + ")[0] in names]
        for label in sorted(labels, key=mean_best, reverse=True):
            members = rows[label]
            lines.append(
                f"| {family} | {label} | {stat(members, 'best_test_acc')} | {stat(members, 'last_epoch_test_acc')} "
                f"| {len(members)} |"
            )
    return "\n".join(lines)


def grouped_table(root: Path, keys: list[str], labels: dict[str, str] | None = None) -> str:
    """One row per value of the sweep's grid `keys` (seeds pooled): last-epoch test accuracy per seed, mean ± std,
    and the mean training img/s. `labels` renames cell values (e.g. a store's path to what it is)."""
    from kdlab.commands.sweep import Sweep

    groups: dict[tuple[str, ...], list[dict]] = {}
    for r in Sweep(root).rows():
        if r["state"] == "finished":
            groups.setdefault(tuple(str(r[k]) for k in keys), []).append(r)
    names = labels or {}
    lines = [f"| {' | '.join(keys)} | test acc per seed (%) | mean ± std (%) | img/s |", "|---" * (len(keys) + 3) + "|"]
    for group, members in sorted(groups.items()):
        members.sort(key=lambda m: int(m["seed"]))
        accs = [float(m["last_epoch_test_acc"]) for m in members]
        spread = f"{statistics.mean(accs):.2f} ± {statistics.stdev(accs):.2f}" if len(accs) > 1 else f"{accs[0]:.2f}"
        summaries = [root / str(m["run"]) / "summary.json" for m in members]
        speeds = [json.loads(f.read_text()).get("mean_images_per_s", 0.0) for f in summaries if f.is_file()]
        speed = statistics.mean(speeds) if speeds else 0.0
        cells = [names.get(v, v) for v in group]
        lines.append(f"| {' | '.join(cells)} | {' / '.join(f'{a:.2f}' for a in accs)} | {spread} | {speed:.0f} |")
    return "\n".join(lines)


def amp_parity_table(root: Path) -> str:
    """experiments/amp_parity.sh: kd and at, fp32 (engine.amp=none) against bf16, per seed."""
    return grouped_table(root, ["method.name", "engine.amp"], {"none": "none (fp32)"})


def stored_resolution_table(root: Path) -> str:
    """experiments/stored_resolution.sh: the originals' store against the 20-px store."""
    sweep = root / "sweep" if (root / "sweep" / "sweep.json").is_file() else root
    stores = {}
    for key, values in json.loads((sweep / "sweep.json").read_text())["grid"]:
        for v in values if key == "data.dataset" else []:
            stores[str(v)] = "originals (32 px)" if str(v).endswith("originals") else "stored at max side 20"
    return grouped_table(sweep, ["data.dataset"], stores)


if __name__ == "__main__":
    kind, root = sys.argv[1], Path(sys.argv[2] if len(sys.argv) > 2 else "runs/c100")
    tables = {"methods": methods_table, "atsc": atsc_table, "ensemble": ensemble_table, "tstddev": tstddev_table,
              "methods_table": every_method_table, "amp_parity_table": amp_parity_table,
              "stored_resolution_table": stored_resolution_table}  # fmt: skip
    print(tables[kind](root))
