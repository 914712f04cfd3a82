"""`kdlab demo`: a real, small end-to-end run on the embedded digits data.

Trains a teacher with cross-entropy, then the same student twice — plain cross-entropy and KD from that
teacher — and prints teacher accuracy, both student accuracies and teacher–student agreement."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kdlab.config import load_config
from kdlab.experiment import train
from kdlab.ui import console, progress_bar, table

DEMO_DATA = ["data.dataset=digits", "data.crop_padding=1", "data.flip=false", "data.batch_size=64"]


def demo_overrides(out: Path, epochs: int, seed: int) -> list[str]:
    return [
        *DEMO_DATA,
        f"output_dir={out}",
        f"seed={seed}",
        f"schedule.epochs={epochs}",
        "schedule.kind=cosine",
        "optim.lr=0.05",
        "optim.weight_decay=5e-4",
        "engine.log_interval=10",
    ]


def run_demo(
    out: str | Path = "runs/demo",
    epochs: int = 30,
    teacher: str = "resnet20",
    student: str = "resnet8",
    seed: int = 0,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Train teacher, CE student and KD student on digits; return and print their accuracies."""
    out = Path(out)
    base = demo_overrides(out, epochs, seed)

    def log(msg: str) -> None:
        console.print(f"  {msg}", style="dim")

    console.rule("kdlab demo: digits (1,797 real 8×8 images), teacher → student")
    with progress_bar(show_progress) as progress:
        console.print(f"[bold]1/3[/] teacher {teacher} with cross-entropy")
        cfg = load_config(None, [*base, "name=teacher", f"student.name={teacher}", "method.name=ce"])
        teacher_dir, t_sum = train(cfg, log=log, progress=progress)
        console.print(f"[bold]2/3[/] student {student} with cross-entropy")
        cfg = load_config(None, [*base, "name=student-ce", f"student.name={student}", "method.name=ce"])
        ce_dir, ce_sum = train(cfg, log=log, progress=progress)
        console.print(f"[bold]3/3[/] student {student} with KD from the teacher")
        cfg = load_config(
            None,
            [
                *base,
                "name=student-kd",
                f"student.name={student}",
                "method.name=kd",
                f"teacher.name={teacher}",
                f"teacher.checkpoint={teacher_dir}",
            ],
        )
        kd_dir, kd_sum = train(cfg, log=log, progress=progress)
    result = {
        "teacher_acc": t_sum["last_epoch_test_acc"],
        "student_ce_acc": ce_sum["last_epoch_test_acc"],
        "student_kd_acc": kd_sum["last_epoch_test_acc"],
        "agreement_kd": kd_sum["last_agreement"],
    }
    console.print(
        table(
            f"digits test accuracy (%), last epoch of {epochs}",
            ["model", "test acc", "agreement with teacher"],
            [
                [f"teacher {teacher} (CE)", result["teacher_acc"], "-"],
                [f"student {student} (CE)", result["student_ce_acc"], "-"],
                [f"student {student} (KD)", result["student_kd_acc"], result["agreement_kd"]],
            ],
        )
    )
    console.print(f"run folders: {teacher_dir}, {ce_dir}, {kd_dir}")
    return result
