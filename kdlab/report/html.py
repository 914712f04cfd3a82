"""`kdlab report DIR`: one self-contained HTML page (inline CSS, PNGs as data URIs, no external assets) for a
run folder or a sweep folder."""

from __future__ import annotations

import base64
import html
import io
import json
import tempfile
from pathlib import Path
from typing import Any

from kdlab.errors import KdlabError
from kdlab.io import atomic_write_text, read_json

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#222;
padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.2rem} h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5rem 0;font-size:.9rem} th,td{border:1px solid #ccc;padding:.25rem .6rem}
th{background:#f3f3f3;text-align:left} td.num{text-align:right;font-variant-numeric:tabular-nums}
img{display:block;max-width:100%;border:1px solid #eee;margin:.5rem 0}
pre{background:#f7f7f7;padding:.8rem;overflow:auto;font-size:.8rem}
.muted{color:#777;font-size:.85rem} .failed{color:#b00020} .scroll{overflow-x:auto}
"""


def write_report(path: str | Path, out: str | Path | None = None) -> Path:
    """Render the report of the run or sweep folder at `path` to `out` (default: path/report.html)."""
    root = Path(path)
    if (root / "sweep.json").is_file():
        body = _sweep_body(root)
    elif (root / "config.yaml").is_file():
        body = _run_body(root)
    else:
        raise KdlabError(f"{root} is neither a run folder (config.yaml) nor a sweep folder (sweep.json)")
    page = (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>kdlab — {html.escape(root.name)}</title>"
        f"<style>{CSS}</style></head><body>{body}</body></html>\n"
    )
    target = Path(out) if out else root / "report.html"
    atomic_write_text(target, page)
    return target


def _img(png: bytes | Path, alt: str) -> str:
    data = png.read_bytes() if isinstance(png, Path) else png
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{base64.b64encode(data).decode()}'>"


class Link:
    """A table cell that links to `href` (relative to the page)."""

    def __init__(self, text: str, href: str):
        self.text, self.href = text, href


def _cell(v: Any) -> str:
    if isinstance(v, Link):
        return f"<td><a href='{html.escape(v.href)}'>{html.escape(v.text)}</a></td>"
    if isinstance(v, float):
        text = f"{v:.2f}" if abs(v) >= 1 else f"{v:.4f}"
        return f"<td class='num'>{text}</td>"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"<td class='num'>{v}</td>"
    return f"<td>{html.escape('-' if v is None else str(v))}</td>"


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(_cell(v) for v in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _markdown_table(text: str) -> str:
    """The pipe tables kdlab writes (sweep.md) → HTML; other lines become paragraphs or list items."""
    out, rows = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(set(c) <= {"-"} for c in cells):
                rows.append(cells)
            continue
        if rows:
            out.append(_table(rows[0], rows[1:]))
            rows = []
        if line.startswith("- "):
            out.append(f"<p class='failed'>{html.escape(line[2:])}</p>")
        elif line.strip():
            out.append(f"<p>{html.escape(line)}</p>")
    return "".join(out)


def _run_body(root: Path) -> str:
    from kdlab.report.plots import plot_training_curves

    parts = [f"<h1>{html.escape(root.name)}</h1>"]
    if (root / "provenance.json").is_file():
        made = read_json(root / "provenance.json")
        facts = [f"started {made.get('started', '?')}", f"kdlab {made.get('kdlab_version', '?')}",
                 f"commit {made.get('git_commit') or 'unknown'}", f"torch {made.get('torch', '?')}"]  # fmt: skip
        parts.append(f"<p class='muted'>{html.escape(' · '.join(facts))}</p>")
    summary = read_json(root / "summary.json") if (root / "summary.json").is_file() else {}
    if summary:
        keys = [k for k, v in summary.items() if not isinstance(v, dict | list)]
        parts += ["<h2>Summary</h2>", _table(["key", "value"], [[k, summary[k]] for k in keys])]
    records = _read_metrics(root / "metrics.jsonl")
    if records:
        with tempfile.TemporaryDirectory() as tmp:
            png = Path(tmp) / "curves.png"
            plot_training_curves(records, png)
            parts += ["<h2>Training curves</h2>", _img(png.read_bytes(), "training curves")]
    for analysis in sorted(root.glob("analysis*/analysis.json")):
        parts.append(_analysis_section(analysis))
    parts += ["<h2>Config</h2>", f"<pre>{html.escape((root / 'config.yaml').read_text())}</pre>"]
    return "".join(parts)


def _read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a kill is skipped; the run's resume rewrites it
    return records


def _analysis_section(path: Path) -> str:
    a = read_json(path)
    parts = [
        f"<h2>Analysis ({html.escape(a['split'])} split, {a['samples']} images, {a['checkpoint']} checkpoint)</h2>"
    ]
    cols = ["test_acc", "train_acc", "generalization_gap", "test_aug_acc", "affinity", "ece_15", "ece_10", "entropy"]
    rows = [[name, *[m.get(c) for c in cols]] for name, m in a["models"].items()]
    parts.append(_table(["model", *cols], rows))
    if a["fidelity"]:
        fcols = ["agreement", "kl_s_t", "mutual_information", "mutual_information_knn", "teacher_label_entropy"]
        parts.append(_table(["student vs", *fcols], [[k, *[v[c] for c in fcols]] for k, v in a["fidelity"].items()]))
    if a["attention_iou"]:
        parts.append(_table(["attention IoU", "value"], [[k, v] for k, v in a["attention_iou"].items()]))
    for png in ("reliability.png", "attention.png"):
        if (path.parent / png).is_file():
            parts.append(_img(path.parent / png, png))
    return "".join(parts)


def _sweep_body(root: Path) -> str:
    spec = read_json(root / "sweep.json")
    grid = " ".join(f"{k}={json.dumps(v)}" for k, v in spec["grid"])
    parts = [
        f"<h1>Sweep {html.escape(root.name)}</h1>",
        f"<p class='muted'>config {html.escape(spec['config'])} · grid {html.escape(grid)} · overrides "
        f"{html.escape(' '.join(spec['overrides']) or '—')}</p>",
    ]
    if (root / "sweep.md").is_file():
        parts += ["<h2>Results</h2>", _markdown_table((root / "sweep.md").read_text())]
    for png in sorted((root / "plots").glob("*.png")):
        parts.append(_img(png, png.stem))
    parts.append(
        "<p class='muted'>points: mean over seeds, error bars: sample std over seeds (n per point under its label)</p>"
    )
    if (root / "sweep.csv").is_file():
        import csv

        rows = list(csv.reader(io.StringIO((root / "sweep.csv").read_text())))
        if rows:
            cells = [[_num(c) for c in r] for r in rows[1:]]
            if rows[0][0] == "run":  # each run's name links to its own page (or its folder, before it has one)
                for r in cells:
                    page = root / str(r[0]) / "report.html"
                    r[0] = Link(str(r[0]), f"{r[0]}/report.html" if page.is_file() else f"{r[0]}/")
            table = _table(rows[0], cells)
            parts += ["<h2>All runs</h2>", f"<div class='scroll'>{table}</div>"]
    return "".join(parts)


def _num(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text
