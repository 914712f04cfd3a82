"""The `kdlab` command line: demo | train | distill | eval | analyze | sweep | report | export | tstddev |
data check | models | methods | views."""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from kdlab.errors import KdlabError


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML config file (see configs/)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its folder's last checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--dry-run", action="store_true", help="check the config: build everything, take one step, exit")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kdlab", description="Knowledge distillation with augmentation.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument("--version", action="version", version=f"kdlab {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="teacher → CE and KD students on the embedded digits data")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")

    _add_run_args(sub.add_parser("train", help="train a model from scratch with cross-entropy"))
    _add_run_args(sub.add_parser("distill", help="distill a student from a teacher (teacher.checkpoint=…)"))

    p = sub.add_parser("eval", help="evaluate a run folder, a kdlab checkpoint, or any model's weights file")
    p.add_argument(
        "path", nargs="?", help="run folder, kdlab .safetensors checkpoint, or (with --model/--factory) any weights"
    )
    p.add_argument("--data", help="dataset spec (default: the run's own; required with --model/--factory)")
    p.add_argument("--which", default="best", choices=["best", "last"])
    p.add_argument("--model", help="zoo model the weights file is for (e.g. resnet56)")
    p.add_argument("--factory", help="or the user's builder, path/to/file.py:function")
    p.add_argument(
        "--pretrained",
        nargs="?",
        const=True,
        metavar="PATH",
        help="with --model timm:NAME / torchvision:NAME: the library's cached weights, or a weights file PATH loaded "
        "as the library loads it; the model's own preprocessing comes with them",
    )
    p.add_argument("--kwargs", help="the builder's keyword arguments as YAML, e.g. '{depth: 56}'")
    p.add_argument(
        "--normalize",
        help="the model's input normalisation: dataset (default), none, imagenet, '{mean: [...], std: [...]}'",
    )

    p = sub.add_parser("analyze", help="fidelity, MI, ECE, attention IoU, generalisation of a trained run")
    p.add_argument("path", help="run folder")
    p.add_argument("--data", help="dataset spec (default: the run's own)")
    p.add_argument(
        "--split", default="test", choices=["test", "train", "test_aug", "train_aug", "val_aug"],
        help="where to measure: clean test/train; test_aug: test through --view; train_aug/val_aug: train/test "
        "through the run's own training view (Guo et al.'s release)",
    )  # fmt: skip
    p.add_argument(
        "--view",
        help="view for test_aug: a strong view or a standard preset (weak, strong); default: the run's views.strong, "
        "else autoaugment",
    )
    p.add_argument("--which", default="last", choices=["best", "last"], help="checkpoint (default: last)")
    p.add_argument("--max-samples", type=int, help="analyse N images of each split, evenly spaced over it")
    p.add_argument("--examples", type=int, default=8, help="images in the attention grid")

    p = sub.add_parser("sweep", help="run a grid of runs (resumable), collect a table, CSV and plots")
    p.add_argument("--config", help="YAML config every run starts from")
    p.add_argument("--grid", help="axes, e.g. 'views.strong=[identity,cutmix,autoaugment] seed=[0,1]'")
    p.add_argument("--out", help="sweep folder (default: runs/sweep-<config name>)")
    p.add_argument("--resume", metavar="SWEEP_DIR", help="continue a sweep: rerun only unfinished or failed runs")
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel (threads per run = cores / jobs)")
    p.add_argument("--nproc-per-node", type=int, default=1, help="processes per run (torchrun, data-parallel)")
    p.add_argument(
        "--no-analyze", action="store_true", help="skip `kdlab analyze` after each run (a resumed sweep remembers it)"
    )
    p.add_argument("--max-samples", type=int, help="analyse N images of each split, evenly spaced over it")
    p.add_argument("--collect", metavar="SWEEP_DIR", help="only rebuild sweep.csv, sweep.md and plots")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="overrides for every run")

    p = sub.add_parser("report", help="one self-contained HTML page for a run or sweep folder")
    p.add_argument("path", help="run folder or sweep folder")
    p.add_argument("--out", help="output file (default: PATH/report.html)")

    p = sub.add_parser("export", help="write a torch.export .pt2 + safetensors inference artifact")
    p.add_argument("path", help="run folder or .safetensors checkpoint")
    p.add_argument("--out", help="output folder (default: RUN_DIR/export)")
    p.add_argument("--which", default="best", choices=["best", "last"])

    p = sub.add_parser("tstddev", help="T. stddev of strong views for a trained teacher (lower is better)")
    p.add_argument("--config", help="YAML config file with teacher.* and data.*")
    p.add_argument(
        "--views",
        help="comma-separated views to rank, each NAME[:KEY=VALUE…] (e.g. none,cutmix,"
        "cutmix_pick:score=teacher_entropy;"
        " default: views.strong of the config)",
    )
    p.add_argument("--epochs", type=int, default=10, help="passes over the training split per view (release: 10)")
    p.add_argument("--student", help="a trained student (run folder or checkpoint) for views that score with one")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value")

    p = sub.add_parser("data", help="dataset tools")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    p = data_sub.add_parser("check", help="validate a dataset spec: counts, image size/mode, duplicates")
    p.add_argument("spec", help="digits | cifar100:PATH | imagefolder:PATH | tinyimagenet:PATH | mnist:PATH")
    p.add_argument("--full", action="store_true", help="print per-class counts")

    p = sub.add_parser("prepare", help="store a dataset as WebDataset shards of pre-resized JPEGs (fast to decode)")
    p.add_argument("spec", help="the source: imagefolder:PATH (folder or archive), cifar100:PATH, …")
    p.add_argument("out", help="the folder to write (then data.dataset=prepared:OUT)")
    p.add_argument("--max-side", type=int, default=256, help="longest side kept, px (default 256: FFCV's)")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality of resized images (default 90)")
    p.add_argument("--shard-images", type=int, default=5000, help="images per tar shard (default 5000)")
    p.add_argument("--workers", type=int, help="encoding processes (default: cores − 1)")

    p = sub.add_parser("config", help="every config key (type, default, meaning); the shipped recipes; a resolved one")
    p.add_argument("--list", action="store_true", help="the recipes shipped with kdlab (usable as --config)")
    p.add_argument(
        "--method-defaults",
        action="store_true",
        help="the per-pair method defaults of the CIFAR-100 pair recipes (the releases' values), as a markdown table",
    )
    p.add_argument(
        "--show", metavar="CONFIG", help="print this recipe resolved with the overrides, every default filled in"
    )
    p.add_argument("overrides", nargs="*", metavar="key.sub=value")

    sub.add_parser("models", help="list the model zoo with parameter counts")
    sub.add_parser("views", help="list the augmentation views with their parameters")
    sub.add_parser("methods", help="list the training methods")
    return parser


def _demo(args: argparse.Namespace) -> int:
    """`kdlab demo`: teacher, then CE and KD students on the embedded digits data."""
    from kdlab.commands.demo import run_demo

    run_demo(args.out, args.epochs, seed=args.seed, show_progress=not args.no_progress)
    return 0


def _train(args: argparse.Namespace) -> int:
    """`kdlab train` / `kdlab distill`: a new run from a config, a resumed one, or a dry run."""
    from kdlab.config import load_config
    from kdlab.errors import ConfigError
    from kdlab.experiment import train
    from kdlab.ui import console, progress_bar

    cfg = None
    if not args.resume:
        cfg = load_config(args.config, args.overrides, notice=lambda m: console.print(f"note: {m}"))
        if args.command == "train" and (cfg.teacher is not None or cfg.teachers):
            raise ConfigError("`kdlab train` trains without a teacher; use `kdlab distill` for teacher.* configs")
        if args.command == "distill" and cfg.teacher is None and not cfg.teachers:
            raise ConfigError("`kdlab distill` needs a teacher: teacher.name=… teacher.checkpoint=…")
    elif args.config or args.dry_run or any(not o.startswith("schedule.epochs=") for o in args.overrides):
        raise ConfigError(
            "--resume continues a run with its saved config; drop --config, overrides and --dry-run "
            "(schedule.epochs=N alone is allowed: it extends the run)"
        )
    if args.dry_run:
        from kdlab.experiment import dry_run

        console.print_json(json.dumps(dry_run(cfg)))  # type: ignore[arg-type]
        console.print("dry run: the config builds and trains one step; no run folder was written")
        return 0

    def log(msg: str) -> None:
        console.print(msg)

    show = not args.no_progress and (cfg is None or cfg.engine.progress)  # --no-progress or engine.progress=false
    with progress_bar(show) as progress:
        extend = _extended_epochs(args.overrides) if args.resume else None
        run_dir, summary = train(cfg, args.resume, log=log, progress=progress, extend_to=extend)  # type: ignore[arg-type]
    if summary:  # empty on ranks other than 0 of a multi-process run
        console.print_json(json.dumps(summary))
        console.print(f"run folder: {run_dir}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    """`kdlab eval`: test accuracy (top-1, top-5), loss and ECE of a run folder or checkpoint, or of any model
    given as weights + --model/--factory."""
    from kdlab.config import ModelConfig
    from kdlab.errors import ConfigError
    from kdlab.experiment import evaluate_model, evaluate_path
    from kdlab.typed_config import from_dict
    from kdlab.ui import console

    if args.model or args.factory:
        if not args.data:
            raise ConfigError("kdlab eval with --model/--factory needs --data (the dataset to evaluate on)")
        spec: dict[str, Any] = {
            "name": args.model or "resnet8",
            "factory": args.factory,
            "checkpoint": args.path,
            "pretrained": args.pretrained,
        }
        for key in ("kwargs", "normalize"):
            value = getattr(args, key)
            if value is not None:
                spec[key] = _yaml_value(value, f"--{key}")
        result = evaluate_model(from_dict(ModelConfig, spec, "model"), args.data)
    else:
        for flag in ("kwargs", "normalize", "pretrained"):
            if getattr(args, flag) is not None:
                raise ConfigError(f"--{flag} describes a model given with --model/--factory; a run folder has its own")
        if not args.path:
            raise ConfigError("kdlab eval needs a run folder or checkpoint (or --model NAME with weights)")
        result = evaluate_path(args.path, args.data, args.which)
    console.print_json(json.dumps(result))
    return 0


def _extended_epochs(overrides: list[str]) -> int | None:
    """The N of `schedule.epochs=N` given with --resume (the one override it takes), checked; None without."""
    from kdlab.errors import ConfigError
    from kdlab.typed_config import parse_override

    if not overrides:
        return None
    _, value = parse_override(overrides[-1])
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"schedule.epochs on --resume must be a whole number of epochs ≥ 1; got {value!r}")
    return value


def _yaml_value(text: str, what: str) -> Any:
    """A YAML value from the command line; a YAML error is the user's (ConfigError naming the flag)."""
    import yaml

    from kdlab.errors import ConfigError

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{what} is not valid YAML: {text!r} ({str(e).splitlines()[0]})") from None


def _analyze(args: argparse.Namespace) -> int:
    """`kdlab analyze`: fidelity, MI, ECE, attention IoU of a trained run."""
    from kdlab.commands.analysis import analyze_run
    from kdlab.ui import console

    report = analyze_run(
        args.path, args.data, args.split, args.view, args.which, args.max_samples, args.examples,
        log=lambda m: console.print(m, style="dim"),
    )  # fmt: skip
    _print_analysis(report)
    return 0


def _report(args: argparse.Namespace) -> int:
    """`kdlab report`: one HTML page for a run or sweep folder."""
    from kdlab.report.html import write_report
    from kdlab.ui import console

    console.print(f"written: {write_report(args.path, args.out)}")
    return 0


def _export(args: argparse.Namespace) -> int:
    """`kdlab export`: torch.export program + safetensors + model card."""
    from kdlab.commands.export import export_run
    from kdlab.ui import console

    card = export_run(args.path, args.out, args.which)
    card.pop("classes")
    console.print_json(json.dumps(card))
    return 0


def _data(args: argparse.Namespace) -> int:
    """`kdlab data check`: counts, image size/mode and duplicates of a dataset spec."""
    from kdlab.data.check import check_dataset
    from kdlab.ui import console

    report = check_dataset(args.spec)
    if not args.full:
        for split in report["per_class"].values():
            split.pop("counts")
    console.print_json(json.dumps(report))
    return 0


def _prepare(args: argparse.Namespace) -> int:
    """`kdlab prepare`: a dataset as WebDataset shards of pre-resized images (data/prepared.py)."""
    from kdlab.data.prepared import prepare
    from kdlab.ui import console

    manifest = prepare(args.spec, args.out, args.max_side, args.quality, args.shard_images, args.workers,
                       log=lambda m: console.print(m, style="dim"))  # fmt: skip
    n = manifest["images"]
    console.print(
        f"{n['train']} train + {n['test']} test images, {manifest['stored_bytes'] / 2**20:.1f} MiB in "
        f"{sum(len(v) for v in manifest['shards'].values())} shards: data.dataset=prepared:{args.out}"
    )
    return 0


def _tstddev(args: argparse.Namespace) -> int:
    """`kdlab tstddev`: T. stddev ranking of strong views for a trained teacher."""
    from kdlab.commands.tstddev import run_tstddev
    from kdlab.config import load_config
    from kdlab.errors import ConfigError
    from kdlab.ui import console, table

    cfg = load_config(args.config, args.overrides)
    views = args.views.split(",") if args.views else ([cfg.views.strong] if cfg.views.strong else [])
    if not views:
        raise ConfigError("name the views to measure: --views identity,cutmix,… or views.strong=…")
    out, results = run_tstddev(cfg, views, args.epochs, args.student, log=lambda m: console.print(m, style="dim"))
    rows = [[i + 1, v, f"{s:.6f}"] for i, (v, s) in enumerate(sorted(results.items(), key=lambda kv: kv[1]))]
    console.print(table("T. stddev ranking (lower is better)", ["rank", "view", "T. stddev"], rows))
    console.print(f"written: {out / 'tstddev.json'}")
    return 0


def _views(_: argparse.Namespace) -> int:
    """`kdlab views`: the strong views with their parameters."""
    import dataclasses

    from kdlab.ui import console, table
    from kdlab.views import STANDARD_VIEWS, VIEWS

    rows = []
    for name in VIEWS:
        cls = VIEWS.get(name)
        params = {f.name: f.default for f in dataclasses.fields(cls.Params)}
        params = {k: v for k, v in params.items() if k not in ("strength", "per_batch_compat")}
        rows.append([name, cls.summary, json.dumps(params)])
    console.print(
        table("strong views (views.strong=NAME, views.params.KEY=VALUE)", ["name", "what", "parameters"], rows)
    )
    console.print("every strong view also takes views.strength (probability per sample, default 1.0) and")
    console.print("views.per_batch_compat (one transform per batch, as the released code did; default false)")
    console.print(f"standard views (views.standard=…): {', '.join(STANDARD_VIEWS)}")
    return 0


def _version() -> str:
    from kdlab import __version__

    return __version__


def _config(args: argparse.Namespace) -> int:
    """`kdlab config`: keys with type, default and meaning; `--list` recipes; `--show C.yaml` resolved."""
    from kdlab.commands.config_keys import config_keys, recipes
    from kdlab.ui import console, table

    if args.list:
        for path in recipes():
            print(path)
        return 0
    if args.method_defaults:
        from kdlab.commands.config_keys import method_defaults_table

        print(method_defaults_table(), end="")
        return 0
    if args.show or args.overrides:
        import yaml

        from kdlab.config import load_config
        from kdlab.methods.base import resolve_method_params
        from kdlab.typed_config import to_dict

        cfg = load_config(args.show, args.overrides, notice=lambda m: print(f"note: {m}", file=sys.stderr))
        resolved = to_dict(cfg)
        name, params = resolve_method_params(cfg.method)  # every parameter of the method, defaults included
        resolved["method"] = {"name": name, **to_dict(params)}
        print(yaml.safe_dump(resolved, sort_keys=False), end="")
        return 0
    rows = [list(r) for r in config_keys()]
    console.print(table("config keys (set with key=value, or in a YAML file given as --config)",
                        ["key", "type", "default", "meaning"], rows))  # fmt: skip
    console.print("method.* parameters: `kdlab methods`; views.params.*: `kdlab views`; recipes: `kdlab config --list`")
    return 0


def _models(_: argparse.Namespace) -> int:
    """`kdlab models`: the zoo with parameter counts."""
    from kdlab.models import MODELS, create_model
    from kdlab.ui import console, table

    rows = []
    for name in MODELS:
        model = create_model(name, 100)
        n = sum(p.numel() for p in model.parameters())
        spec = MODELS.get(name)
        rows.append([name, spec.family, f"{n / 1e6:.2f}M", spec.taps.get("feature", "-")])
    console.print(table("model zoo (parameters at 100 classes)", ["name", "family", "params", "feature tap"], rows))
    return 0


def _methods(_: argparse.Namespace) -> int:
    """`kdlab methods`: the methods with their default parameters."""
    from kdlab.methods import METHODS
    from kdlab.typed_config import to_dict
    from kdlab.ui import console, table

    rows = [[n, METHODS.get(n).summary, json.dumps(to_dict(METHODS.get(n).cls.Params()))] for n in METHODS]
    console.print(table("methods", ["name", "what", "parameters (defaults)"], rows))
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from pathlib import Path

    from kdlab.commands.sweep import Sweep
    from kdlab.errors import ConfigError
    from kdlab.ui import console

    if args.jobs < 1:
        raise ConfigError("--jobs must be ≥ 1")
    if args.collect:
        sweep = Sweep(args.collect)
    elif args.resume:
        if args.config or args.grid or args.overrides:
            raise ConfigError("--resume continues a sweep with its saved config and grid; drop --config/--grid")
        sweep = Sweep(args.resume)
    else:
        if not args.config or not args.grid:
            raise ConfigError("a new sweep needs --config FILE and --grid 'key=[a,b] …' (or --resume SWEEP_DIR)")
        out = args.out or f"runs/sweep-{Path(args.config).stem}"
        sweep = Sweep.create(out, args.config, args.grid, args.overrides, not args.no_analyze, args.max_samples)
    if not args.collect:
        if args.nproc_per_node < 1:
            raise ConfigError("--nproc-per-node must be ≥ 1")
        analyze = False if args.no_analyze else None  # None: as the sweep was created
        counts = sweep.run(args.jobs, analyze, args.max_samples, console.print, args.nproc_per_node)
        console.print("runs: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    paths = sweep.collect()
    console.print((sweep.root / "sweep.md").read_text())
    console.print("written: " + ", ".join(str(p) for p in paths.values()))
    failed = [n for n in sweep.names if sweep.run_state(n) != "finished"]
    if failed:
        console.print(f"{len(failed)} run(s) not finished; rerun them with `kdlab sweep --resume {sweep.root}`")
        return 1
    return 0


def _print_analysis(report: dict) -> None:
    from kdlab.ui import console, table

    rows = []
    for name, m in report["models"].items():
        rows.append([name] + [f"{m[k]:.2f}" for k in ("test_acc", "train_acc", "generalization_gap", "ece_15")]
                    + [f"{m['affinity']:.3f}"])  # fmt: skip
    console.print(
        table(f"models ({report['split']})", ["model", "test %", "train %", "gap", "ECE15 %", "affinity"], rows)
    )
    rows = [
        [k, f"{v['agreement']:.2f}", f"{v['kl_s_t']:.4f}", f"{v['mutual_information']:.4f}",
         f"{v['mutual_information_knn']:.4f}"]
        for k, v in report["fidelity"].items()
    ]  # fmt: skip
    if rows:
        console.print(table("student fidelity", ["against", "agreement %", "KL(s‖t)", "MI nats", "MI kNN"], rows))
    if report["attention_iou"]:
        rows = [[k, f"{v:.4f}"] for k, v in report["attention_iou"].items()]
        console.print(table("attention IoU (class-agnostic CAM, threshold 0.4)", ["models", "IoU"], rows))


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "demo": _demo,
    "train": _train,
    "distill": _train,
    "eval": _eval,
    "analyze": _analyze,
    "sweep": _sweep,
    "report": _report,
    "export": _export,
    "data": _data,
    "prepare": _prepare,
    "tstddev": _tstddev,
    "views": _views,
    "config": _config,
    "models": _models,
    "methods": _methods,
}


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Arguments with `key=value` overrides counted wherever they stand after the command (argparse alone takes
    them only before the first option); anything else it does not know is an error."""
    args, extra = parser.parse_known_args(argv)
    stray = [a for a in extra if a.startswith("-") or "=" not in a]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        if not hasattr(args, "overrides"):
            parser.error(f"`kdlab {args.command}` takes no key=value overrides: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parse_args(parser, argv)
    try:
        return COMMANDS[args.command](args)
    except KdlabError as e:
        if args.debug:
            traceback.print_exc()
        print(f"kdlab: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        folder = getattr(e, "run_dir", None)
        again = f"kdlab {args.command} --resume {folder}" if folder else "--resume RUN_DIR"
        print(f"kdlab: interrupted; the last finished epoch is saved: resume with `{again}`", file=sys.stderr)
        return 130
    except Exception as e:  # a bug in kdlab, not bad input: still one line unless --debug
        if args.debug:
            traceback.print_exc()
        print(f"kdlab: internal error: {type(e).__name__}: {e} (rerun with --debug for the traceback)", file=sys.stderr)
        return 3


if __name__ == "__main__":
    raise SystemExit(main())
