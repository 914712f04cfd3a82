"""`kdlab export`: a self-contained inference artifact (torch.export .pt2) plus safetensors weights.

Only what inference needs goes out: the student (for SimKD/ATSC the student, its projectors and the teachers'
classifiers — `Distiller.inference_model`), never a teacher's body. The exported program takes uint8 images
(N, C, H, W) — exactly what kdlab's readers produce — normalises them and returns logits (N, K).
`model.safetensors` holds that module's state dict with no prefix (for a logit or feature method: the student's
own, loadable with plain `load_state_dict`) and the card's facts as metadata; `model.json` is the card."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from kdlab.config import parse_normalize
from kdlab.experiment import load_trained
from kdlab.io import atomic_write, atomic_write_json
from kdlab.methods import Distiller
from kdlab.models.features import get_module
from kdlab.models.normalization import effective_norm
from kdlab.views import Normalize, to_unit


class InferenceModel(nn.Module):
    """uint8 images (N, C, H, W) → logits (N, K): normalisation by the training data's statistics, then the
    inference module (which maps them to its own normalisation where it declares one)."""

    def __init__(self, model: nn.Module, mean: list[float], std: list[float]):
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(self.normalize(to_unit(images)))


def export_run(path: str | Path, out_dir: str | Path | None = None, which: str = "best") -> dict[str, Any]:
    """Write model.pt2, model.safetensors and model.json for a run folder's `which` checkpoint."""
    method, cfg, meta = load_trained(path, which, inference_only=True)
    info = meta["data"]
    student_params = sum(p.numel() for p in method.student.parameters())
    if not method.predicts_with_student_head:
        drop_student_head(method)
    predictor = method.inference_model().eval()
    model = InferenceModel(predictor, info["mean"], info["std"]).eval()
    out = Path(out_dir) if out_dir else (Path(path) if Path(path).is_dir() else Path(path).parent) / "export"
    out.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(2, *info["image_shape"], dtype=torch.uint8)
    batch = torch.export.Dim("batch", min=1, max=65536)
    program = torch.export.export(model, (example,), dynamic_shapes={"images": {0: batch}})
    for node in program.graph.nodes:  # source locations would carry this machine's absolute file paths
        node.meta.pop("stack_trace", None)
    atomic_write(out / "model.pt2", lambda tmp: torch.export.save(program, str(tmp)))
    exported_params = sum(v.numel() for v in predictor.parameters())
    own = parse_normalize(cfg.student.normalize, "student", info["image_shape"][0])
    norm = effective_norm(own, info["mean"], info["std"])
    card = {
        "format": "kdlab-export-v2",
        "method": cfg.method["name"],
        "student": cfg.student.label,
        "weights_load_into": "student" if method.predicts_with_student_head else "SharedHeadPredictor",
        "epoch": meta["epoch"],
        "test_acc": meta.get("test_acc"),
        "num_classes": info["num_classes"],
        "classes": info["classes"],
        "input": {"dtype": "uint8", "shape": ["N", *info["image_shape"]], "range": [0, 255]},
        # what the weights expect: float images in [0, 1], minus mean, over std (the student's own normalisation
        # where it declares one, else the training data's statistics); the .pt2 program does it itself
        "mean": list(norm.mean),
        "std": list(norm.std),
        "normalize": cfg.student.normalize,  # as declared (student.normalize); mean/std above are what it means
        # the size the weights see: the student's own input_size (the program resizes to it), else the data's
        "model_input_size": list(cfg.student.own_size or info["image_shape"][1:]),
        "student_parameters": student_params,
        "exported_parameters": exported_params,
        "files": {"program": "model.pt2", "weights": "model.safetensors"},
    }
    weights = {k: v.detach().contiguous() for k, v in predictor.state_dict().items()}
    metadata = {k: json.dumps(v) for k, v in card.items()}
    atomic_write(out / "model.safetensors", lambda tmp: save_file(weights, str(tmp), metadata=metadata))
    atomic_write_json(out / "model.json", card)
    return {"out_dir": str(out), **card}


def drop_student_head(method: Distiller) -> None:
    """Replace the student's own classifier by an identity: a shared-head method (SimKD, ATSC) predicts
    through projector + teacher classifier, so the student head's matmul would be dead work in the graph."""
    path = method.student_taps.get("classifier")
    if not path:
        return
    parent_path, _, leaf = path.rpartition(".")
    parent = get_module(method.student, parent_path) if parent_path else method.student
    setattr(parent, leaf, nn.Identity())
