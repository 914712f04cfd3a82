"""`kdlab export`: a self-contained inference artifact (torch.export .pt2) plus safetensors weights.

The exported program takes uint8 images (N, C, H, W) — exactly what kdlab's readers produce — normalises
them with the training mean/std and returns logits (N, K) through the method's prediction path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from kdlab.experiment import load_trained
from kdlab.io import atomic_write, atomic_write_json
from kdlab.methods import Distiller
from kdlab.views import Normalize, to_unit


class InferenceModel(nn.Module):
    """uint8 images (N, C, H, W) → logits (N, K): normalisation + the method's predict path."""

    def __init__(self, method: Distiller, mean: list[float], std: list[float]):
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.method = method

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.method.predict(self.normalize(to_unit(images)))


def export_run(path: str | Path, out_dir: str | Path | None = None, which: str = "best") -> dict[str, Any]:
    """Write model.pt2, model.safetensors and model.json for a run folder's `which` checkpoint."""
    method, cfg, meta = load_trained(path, which)
    info = meta["data"]
    model = InferenceModel(method, info["mean"], info["std"]).eval()
    out = Path(out_dir) if out_dir else (Path(path) if Path(path).is_dir() else Path(path).parent) / "export"
    out.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(2, *info["image_shape"], dtype=torch.uint8)
    batch = torch.export.Dim("batch", min=1, max=65536)
    program = torch.export.export(model, (example,), dynamic_shapes={"images": {0: batch}})
    atomic_write(out / "model.pt2", lambda tmp: torch.export.save(program, str(tmp)))
    weights = {k: v.contiguous() for k, v in method.checkpoint_state().items()}
    atomic_write(out / "model.safetensors", lambda tmp: save_file(weights, str(tmp)))
    student_params = sum(p.numel() for p in method.student.parameters())
    exported_params = sum(v.numel() for k, v in weights.items() if not _is_buffer(method, k))
    card = {
        "format": "kdlab-export-v1",
        "method": cfg.method["name"],
        "student": cfg.student.name,
        "epoch": meta["epoch"],
        "test_acc": meta.get("test_acc"),
        "num_classes": info["num_classes"],
        "classes": info["classes"],
        "input": {"dtype": "uint8", "shape": ["N", *info["image_shape"]], "range": [0, 255]},
        "mean": info["mean"],
        "std": info["std"],
        "student_parameters": student_params,
        "exported_parameters": exported_params,
        "files": {"program": "model.pt2", "weights": "model.safetensors"},
    }
    atomic_write_json(out / "model.json", card)
    return {"out_dir": str(out), **card}


def _is_buffer(method: Distiller, key: str) -> bool:
    name, _, rest = key.partition(".")
    module = method.trainable_modules()[name]
    return rest in dict(module.named_buffers())
