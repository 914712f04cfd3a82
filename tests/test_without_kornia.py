"""kornia is optional: `import kdlab` and every default path (crop_flip, the fused AutoAugment / RandAugment /
TrivialAugment, CutMix, CutMixPick) run where it is not installed — the lent GPU machine has none."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import DIGITS

BLOCK = "import sys; sys.modules['kornia'] = None  # import kornia now raises ImportError\n"


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK + code], capture_output=True, text=True, timeout=600)


def test_default_paths_train_without_kornia(tmp_path):
    code = f"""
import json
from kdlab.config import load_config
from kdlab.experiment import train
out = {{}}
for view in ("autoaugment", "randaugment", "trivialaugment", "cutmix", "color_jitter"):
    cfg = load_config(None, {DIGITS!r} + ["output_dir={tmp_path}", "schedule.epochs=1", "data.train_per_class=20",
                      "views.strong=" + view, "method.name=ce", "name=" + view])
    out[view] = train(cfg, log=lambda _: None)[1]["status"]
print(json.dumps(out))
"""
    done = _run(code)
    assert done.returncode == 0, done.stderr[-3000:]
    assert set(json.loads(done.stdout.strip().splitlines()[-1]).values()) == {"finished"}


def test_a_kornia_path_says_what_it_needs():
    done = _run(
        "from kdlab.views import StandardView\n"
        "from kdlab.errors import ConfigError\n"
        "try:\n    StandardView('weak', 32)\nexcept ConfigError as e:\n    print(e)\n"
    )
    assert done.returncode == 0 and "needs kornia: pip install kornia" in done.stdout
