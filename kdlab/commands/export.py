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
from kdlab.models.features import get_module
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
    student_params = sum(p.numel() for p in method.student.parameters())
    if not method.predicts_with_student_head:
        drop_student_head(method)
    model = InferenceModel(method, info["mean"], info["std"]).eval()
    out = Path(out_dir) if out_dir else (Path(path) if Path(path).is_dir() else Path(path).parent) / "export"
    out.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(2, *info["image_shape"], dtype=torch.uint8)
    batch = torch.export.Dim("batch", min=1, max=65536)
    program = torch.export.export(model, (example,), dynamic_shapes={"images": {0: batch}})
    for node in program.graph.nodes:  # source locations would carry this machine's absolute file paths
        node.meta.pop("stack_trace", None)
    atomic_write(out / "model.pt2", lambda tmp: torch.export.save(program, str(tmp)))
    # The weights the inference graph uses (for ATSC: student, projectors and the teachers' classifiers,
    # not the whole adapted teachers that the training checkpoint keeps for resuming).
    used_params, used_buffers = used_state(program)
    weights = {name: program.state_dict[name].contiguous() for name in used_params + used_buffers}
    atomic_write(out / "model.safetensors", lambda tmp: save_file(weights, str(tmp)))
    exported_params = sum(program.state_dict[name].numel() for name in used_params)
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


def drop_student_head(method: Distiller) -> None:
    """Replace the student's own classifier by an identity: a shared-head method (SimKD, ATSC) predicts
    through projector + teacher classifier, so the student head's matmul would be dead work in the graph."""
    path = method.student_taps.get("classifier")
    if not path:
        return
    parent_path, _, leaf = path.rpartition(".")
    parent = get_module(method.student, parent_path) if parent_path else method.student
    setattr(parent, leaf, nn.Identity())


def used_state(program: torch.export.ExportedProgram) -> tuple[list[str], list[str]]:
    """Names of the parameters and (persistent) buffers the exported graph actually reads.

    torch.export lifts every parameter of the module; unused ones (a teacher's layers, a student's own
    unused head) are placeholders without users."""
    used_inputs = {n.name for n in program.graph.nodes if n.op == "placeholder" and n.users}
    params, buffers = [], []
    for spec in program.graph_signature.input_specs:
        if spec.arg.name not in used_inputs or spec.target is None:
            continue
        if spec.kind == torch.export.graph_signature.InputKind.PARAMETER:
            params.append(spec.target)
        elif spec.kind == torch.export.graph_signature.InputKind.BUFFER and spec.target in program.state_dict:
            buffers.append(spec.target)
    return params, buffers
