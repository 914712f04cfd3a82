"""kdlab: knowledge distillation of image classifiers with data augmentation as a first-class citizen.

The Python API (the command line is built on the same functions):

    from kdlab import load_config, train, evaluate, analyze, export
    cfg = load_config("configs/cifar10/small_kd_resnet20_resnet8.yaml", ["teacher.checkpoint=runs/t", "seed=1"])
    run_dir, summary = train(cfg)            # a run folder, as `kdlab train` / `kdlab distill` make
    evaluate(run_dir)                        # {test_acc, test_top5, test_loss, test_ece_15, …}
    analyze(run_dir)                         # fidelity, MI, ECE, attention IoU → run_dir/analysis/
    export(run_dir)                          # export/model.pt2 + model.safetensors + model.json

Names are imported on first use, so `import kdlab` stays light."""

from __future__ import annotations

from typing import Any

from kdlab.version import __version__

# public name → (module, attribute)
_API = {
    "load_config": ("kdlab.config", "load_config"),
    "RunConfig": ("kdlab.config", "RunConfig"),
    "train": ("kdlab.experiment", "train"),
    "build_run": ("kdlab.experiment", "build_run"),
    "load_trained": ("kdlab.experiment", "load_trained"),
    "evaluate": ("kdlab.experiment", "evaluate_path"),
    "evaluate_model": ("kdlab.experiment", "evaluate_model"),
    "analyze": ("kdlab.commands.analysis", "analyze_run"),
    "export": ("kdlab.commands.export", "export_run"),
    "load_dataset": ("kdlab.data", "load_dataset"),
    "create_model": ("kdlab.models", "create_model"),
}
__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'kdlab' has no attribute {name!r}")
    import importlib

    module, attr = _API[name]
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value
