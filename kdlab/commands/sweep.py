"""`kdlab sweep`: a grid of runs from one config, run as separate processes (sequentially or N at a time),
resumable, with failures recorded rather than fatal, collected into one table, CSV and plots.

Sweep folder layout:
    sweep.json        the config, grid and fixed overrides the sweep was started with
    status.json       per run: pending | finished | failed (with the error line)
    <run>/            each run's folder (kdlab train/distill), analysis in <run>/analysis/
    <run>.log         each run's output
    sweep.csv         one row per run: grid values, status, summary and analysis numbers
    sweep.md          runs differing only by seed grouped as mean ± std
    plots/*.png       student accuracy, fidelity, MI and teacher–teacher IoU against the first grid axis
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import os
import re
import statistics
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from kdlab.config import load_config, teacher_configs
from kdlab.errors import ConfigError, KdlabError
from kdlab.io import atomic_write_json, atomic_write_text, read_json
from kdlab.typed_config import parse_override

SUMMARY_KEYS = ("last_epoch_test_acc", "best_test_acc", "last_train_acc", "last_agreement", "epochs_done")
PLOT_METRICS = ("last_epoch_test_acc", "agreement", "mutual_information", "iou_teacher_teacher")


def parse_grid(text: str) -> list[tuple[str, list[Any]]]:
    """`'views.strong=[identity,cutmix] seed=[0,1]'` → [('views.strong', ['identity', 'cutmix']), ('seed', [0, 1])].
    Values are YAML (a bare value is a one-element axis); keys are config keys as in overrides."""
    axes: list[tuple[str, list[Any]]] = []
    for m in re.finditer(r"(\S+?)=(\[[^\]]*\]|\S+)", text):
        key, raw = m.group(1), m.group(2)
        parse_override(f"{key}=0")  # the same key rules as overrides
        try:
            values = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise ConfigError(f"--grid: cannot read the values of {key}: {raw!r}") from e
        values = values if isinstance(values, list) else [values]
        if not values:
            raise ConfigError(f"--grid: {key} has no values")
        if any(k == key for k, _ in axes):
            raise ConfigError(f"--grid: {key} is given twice")
        axes.append((key, values))
    leftover = re.sub(r"(\S+?)=(\[[^\]]*\]|\S+)", "", text).strip()
    if leftover or not axes:
        raise ConfigError(f"--grid must look like 'key=[a,b] other.key=[1,2]', could not read {leftover or text!r}")
    return axes


def grid_points(axes: list[tuple[str, list[Any]]]) -> list[dict[str, Any]]:
    """The cartesian product of the axes, in order (last axis fastest)."""
    keys = [k for k, _ in axes]
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*[v for _, v in axes])]


def point_name(point: dict[str, Any]) -> str:
    """A folder name for a grid point: `strong-cutmix_seed-0` (last key component, value, filesystem-safe)."""
    parts = []
    for key, value in point.items():
        text = value if isinstance(value, str | int | float) else json.dumps(value, sort_keys=True)
        v = re.sub(r"[^A-Za-z0-9.]+", "-", str(text)).strip("-") or "x"
        parts.append(f"{key.split('.')[-1]}-{v}")
    return "_".join(parts)


def _override(key: str, value: Any) -> str:
    """key=value with the value written so that `parse_override` reads it back unchanged (JSON is YAML)."""
    return (
        f"{key}={value}" if isinstance(value, str) and yaml.safe_load(value) == value else f"{key}={json.dumps(value)}"
    )


class Sweep:
    """A sweep folder. `Sweep.create(...)` starts one; `Sweep(dir)` opens one to resume or collect."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        spec_path = self.root / "sweep.json"
        if not spec_path.is_file():
            raise KdlabError(f"{self.root} is not a sweep folder (no sweep.json); start one with --config and --grid")
        self.spec = read_json(spec_path)
        self.axes = [(k, v) for k, v in self.spec["grid"]]
        self.points = grid_points(self.axes)
        self.names = [point_name(p) for p in self.points]
        status_path = self.root / "status.json"
        self.status: dict[str, dict[str, Any]] = read_json(status_path) if status_path.is_file() else {}
        self._lock = threading.Lock()

    @classmethod
    def create(
        cls,
        root: str | Path,
        config: str,
        grid: str,
        overrides: list[str],
        analyze: bool = True,
        max_samples: int | None = None,
    ) -> Sweep:
        """Validate config, grid and overrides (every point's config is built once) and write sweep.json, with
        whether each run is analysed (on `max_samples` images per split) so that a resumed sweep does the same."""
        root = Path(root)
        if (root / "sweep.json").exists():
            raise KdlabError(f"{root} already holds a sweep: continue it with `kdlab sweep --resume {root}`")
        axes = parse_grid(grid)
        names = [point_name(p) for p in grid_points(axes)]
        if len(set(names)) < len(names):
            dup = next(n for n in names if names.count(n) > 1)
            raise ConfigError(f"--grid gives two runs the same folder name {dup!r}; make the values distinct")
        for point in grid_points(axes):
            load_config(config, [*overrides, *[_override(k, v) for k, v in point.items()]])
        cfg = load_config(config, overrides)
        command = "distill" if teacher_configs(cfg) else "train"
        root.mkdir(parents=True, exist_ok=True)
        atomic_write_json(
            root / "sweep.json",
            {
                "config": config,
                "grid": [[k, v] for k, v in axes],
                "overrides": overrides,
                "command": command,
                "analyze": analyze,
                "max_samples": max_samples,
            },
        )
        return cls(root)

    def run_state(self, name: str) -> str:
        """finished | partial (a run folder with a checkpoint to resume) | failed | pending."""
        summary = self.root / name / "summary.json"
        if summary.is_file() and read_json(summary).get("status") == "finished":
            return "finished"
        if (self.root / name / "checkpoints" / "last.safetensors").is_file():
            return "partial"
        return self.status.get(name, {}).get("status", "pending")

    def _set_status(self, name: str, entry: dict[str, Any]) -> None:
        with self._lock:
            self.status[name] = entry
            atomic_write_json(self.root / "status.json", self.status)

    def command_for(self, name: str, point: dict[str, Any], threads: int | None, nproc: int = 1) -> list[str]:
        """The kdlab command line of one run (under torchrun with `nproc` > 1 processes): a fresh start, or
        --resume of its partly trained folder."""
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
        base = [*(launcher if nproc > 1 else [sys.executable]), "-m", "kdlab", self.spec["command"], "--no-progress"]
        if self.run_state(name) == "partial":
            return [*base, "--resume", str(self.root / name)]
        overrides = [*self.spec["overrides"], *[_override(k, v) for k, v in point.items()]]
        if threads and not any(o.startswith("engine.threads=") for o in overrides):
            overrides.append(f"engine.threads={threads}")
        return [*base, "--config", self.spec["config"], *overrides, f"output_dir={self.root}", f"name={name}"]

    def run_one(
        self,
        name: str,
        point: dict[str, Any],
        threads: int | None,
        analyze: bool,
        max_samples: int | None,
        nproc: int = 1,
        jobs: int = 1,
    ) -> None:
        """Train (or resume) one run, then analyse it; a failure is recorded with its error line. `jobs`: the
        runs going at once (they share the GPU's memory)."""
        folder = self.root / name
        if self.run_state(name) != "partial" and folder.exists():
            # A folder without a checkpoint holds nothing to keep (the run died before its first epoch).
            import shutil

            shutil.rmtree(folder)
        self._set_status(name, {"status": "running"})
        log_path = self.root / f"{name}.log"
        cmds = [self.command_for(name, point, threads, nproc)]
        if analyze:
            cmds.append([sys.executable, "-m", "kdlab", "analyze", str(folder)])
            if max_samples:
                cmds[-1] += ["--max-samples", str(max_samples)]
        env = child_env(threads, jobs if nproc == 1 else 1)
        with open(log_path, "ab") as log:
            for cmd in cmds:
                log.write(f"$ {' '.join(cmd[1:])}\n".encode())
                log.flush()
                rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
                if rc != 0:
                    self._set_status(name, {"status": "failed", "exit_code": rc, "error": _error_line(log_path)})
                    return
        self._set_status(name, {"status": "finished"})

    def run(
        self,
        jobs: int = 1,
        analyze: bool | None = None,
        max_samples: int | None = None,
        log: Callable[[str], None] = print,
        nproc: int = 1,
    ) -> dict[str, int]:
        """Run every unfinished point (failed ones again), `jobs` runs at a time, each on `nproc` processes
        (torchrun); returns state counts. `analyze` / `max_samples` left None: as the sweep was created."""
        if analyze is None:
            analyze = bool(self.spec.get("analyze", True))
        if max_samples is None:
            max_samples = self.spec.get("max_samples")
        with self._exclusive():
            return self._run(jobs, analyze, max_samples, log, nproc)

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """One `kdlab sweep` at a time per folder: a second one would start the same runs twice."""
        lock = self.root / ".sweep.lock"
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            pid = lock.read_text().strip()
            if pid.isdigit() and _alive(int(pid)):
                raise KdlabError(f"{self.root} is being run by process {pid}; wait for it or stop it first") from None
            lock.unlink(missing_ok=True)  # left by a process that died
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        try:
            yield
        finally:
            lock.unlink(missing_ok=True)

    def _run(
        self, jobs: int, analyze: bool, max_samples: int | None, log: Callable[[str], None], nproc: int
    ) -> dict[str, int]:
        todo = [(n, p) for n, p in zip(self.names, self.points, strict=True) if self.run_state(n) != "finished"]
        done_before = len(self.points) - len(todo)
        log(f"sweep {self.root}: {len(self.points)} runs, {done_before} finished, {len(todo)} to run, {jobs} at a time")
        per_run = jobs * nproc
        threads = max(1, (os.cpu_count() or 1) // per_run) if per_run > 1 else None
        counter = itertools.count(done_before + 1)

        def work(item: tuple[str, dict[str, Any]]) -> None:
            name, point = item
            self.run_one(name, point, threads, analyze, max_samples, nproc, jobs)
            st = self.status[name]
            extra = f": {st.get('error', '')}" if st["status"] == "failed" else ""
            log(f"[{next(counter)}/{len(self.points)}] {name}: {st['status']}{extra}")

        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            list(pool.map(work, todo))
        counts: dict[str, int] = {}
        for n in self.names:
            s = self.run_state(n)
            counts[s] = counts.get(s, 0) + 1
        return counts

    def rows(self) -> list[dict[str, Any]]:
        """One flat dict per grid point: grid values, state, error, summary and analysis numbers."""
        from kdlab.commands.analysis import analysis_summary

        rows = []
        for name, point in zip(self.names, self.points, strict=True):
            row: dict[str, Any] = {"run": name, **point, "state": self.run_state(name)}
            row["error"] = self.status.get(name, {}).get("error", "") if row["state"] == "failed" else ""
            summary = self.root / name / "summary.json"
            if summary.is_file():
                s = read_json(summary)
                row.update({k: s.get(k) for k in SUMMARY_KEYS})
            analysis = self.root / name / "analysis" / "analysis.json"
            if analysis.is_file():
                row.update(analysis_summary(read_json(analysis)))
            rows.append(row)
        return rows

    def collect(self) -> dict[str, Path]:
        """Write sweep.csv, sweep.md and the plots; returns their paths."""
        from kdlab.report.plots import plot_metric_vs_axis

        rows = self.rows()
        columns = list(dict.fromkeys(k for r in rows for k in r))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.root / "sweep.csv", buf.getvalue())
        atomic_write_text(self.root / "sweep.md", markdown_table(rows, [k for k, _ in self.axes]))
        paths = {"csv": self.root / "sweep.csv", "markdown": self.root / "sweep.md"}
        axes = [k for k, _ in self.axes if k != "seed"]
        finished = [r for r in rows if r["state"] == "finished"]
        metrics = [m for m in PLOT_METRICS if any(_is_number(r.get(m)) for r in finished)]
        if axes and finished and metrics:
            group = axes[1] if len(axes) > 1 else None
            plot = self.root / "plots" / "metrics.png"
            plot_metric_vs_axis(finished, axes[0], metrics, plot, group)
            paths["plot"] = plot
        return paths


TABLE_METRICS = (
    ("last_epoch_test_acc", "last-epoch test acc (%)"),
    ("best_test_acc", "best-epoch test acc (%)"),
    ("last_train_acc", "train acc, in training (%)"),  # on the augmented views, as logged per epoch
    ("student_train_acc", "clean train acc (%)"),  # from `kdlab analyze`: the training images, no augmentation
    ("student_gap", "clean train − test (%)"),
    ("agreement", "agreement (%)"),
    ("kl_s_t", "KL(s‖t)"),
    ("mutual_information", "MI (nats)"),
    ("iou_teacher_teacher", "IoU t–t"),
    ("iou_teacher_student", "IoU t–s"),
    ("student_ece_15", "ECE15 (%)"),
)


def child_env(threads: int | None, jobs: int) -> dict[str, str]:
    """The environment of one run of a sweep: its CPU threads, and with `jobs` runs sharing one GPU each run's
    share of the device memory (KDLAB_GPU_MEMORY_FRACTION, applied by experiment.build_run), so that N runs fit
    side by side instead of the first one caching the whole device."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    if jobs > 1:
        env[MEMORY_FRACTION] = f"{0.95 / jobs:.4f}"
    return env


MEMORY_FRACTION = "KDLAB_GPU_MEMORY_FRACTION"


def markdown_table(rows: list[dict[str, Any]], axes: list[str]) -> str:
    """Runs grouped by every grid value except `seed`: mean ± std (sample std) over seeds of each metric
    present; failed and unfinished runs are listed with their state."""
    keys = [a for a in axes if a != "seed"]
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(tuple(str(r[k]) for k in keys), []).append(r)
    metrics = [(k, label) for k, label in TABLE_METRICS if any(_is_number(r.get(k)) for r in rows)]
    header = [*keys, "runs", *[label for _, label in metrics]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for gkey, members in groups.items():
        ok = [m for m in members if m["state"] == "finished"]
        cells = [*gkey, f"{len(ok)}/{len(members)}"]
        for k, label in metrics:
            vals = [float(m[k]) for m in ok if _is_number(m.get(k))]
            cells.append(_mean_std(vals, 2 if "%" in label else 4))
        lines.append("| " + " | ".join(cells) + " |")
    bad = [r for r in rows if r["state"] != "finished"]
    if bad:
        lines += ["", "Not finished:", ""]
        lines += [f"- `{r['run']}`: {r['state']}" + (f" — {r['error']}" if r.get("error") else "") for r in bad]
    return "\n".join(lines) + "\n"


def _mean_std(vals: list[float], digits: int) -> str:
    if not vals:
        return "-"
    if len(vals) == 1:
        return f"{vals[0]:.{digits}f}"
    return f"{statistics.mean(vals):.{digits}f} ± {statistics.stdev(vals):.{digits}f}"


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and v == v


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _error_line(log_path: Path) -> str:
    """The last `kdlab: error: …` line of a run's log, else its last non-empty line."""
    lines = [ln.strip() for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("kdlab: error:")]
    return (errors or lines or ["(no output)"])[-1][:500]
