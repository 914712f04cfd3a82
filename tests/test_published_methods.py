"""The methods added from their releases — wttm, mlkd, ctkd, nst, kdsvd, DOT (optim.name=dot) and logit
standardisation on dkd/mlkd/ctkd — each against its release's algorithm re-typed here on small fixed inputs; the
per-pair published recipes; and the numerical edges the releases hit (DKD on two classes, CTKD+DKD, DKD on a
mixed x')."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdlab.config import load_config
from kdlab.engine.dot import DistillationOrientedSGD
from kdlab.errors import ConfigError
from kdlab.losses import dkd, kd, kdsvd, nst
from kdlab.methods import Teacher, build_method
from kdlab.methods.ctkd import cosine_curriculum
from kdlab.models import create_model, model_taps
from kdlab.views.base import MixInfo
from kdlab.views.pipeline import TrainBatch

K = 10


def _logits(seed: int, b: int = 8, k: int = K, scale: float = 3.0) -> torch.Tensor:
    return torch.randn(b, k, generator=torch.Generator().manual_seed(seed)) * scale


def _method(name: str, **params: object):
    torch.manual_seed(0)
    teacher = Teacher(create_model("resnet14", K), model_taps("resnet14"))
    return build_method({"name": name, **params}, create_model("resnet8", K), [teacher], model_taps("resnet8"))


# --- re-typed releases --------------------------------------------------------------------------------------


def _release_normalize(logit):  # logit-standardization-KD: mdistiller/distillers/*.py
    return (logit - logit.mean(dim=-1, keepdims=True)) / (1e-7 + logit.std(dim=-1, keepdims=True))


def _release_kd_loss(s, t, temperature, logit_stand=False):
    s = _release_normalize(s) if logit_stand else s
    t = _release_normalize(t) if logit_stand else t
    loss = F.kl_div(F.log_softmax(s / temperature, dim=1), F.softmax(t / temperature, dim=1), reduction="none")
    return loss.sum(1).mean() * temperature**2


def test_wttm_equals_the_release():
    """The WTTM release: p_t = softmax(t)^l / Σ, loss = mean(Σ softmax(t)^l · KL(p_t ‖ log_softmax(s)))."""
    s, t = _logits(1), _logits(2)
    l_ = 0.2
    p_t = torch.pow(torch.softmax(t, dim=1), l_)
    norm = p_t.sum(1)
    kl = F.kl_div(F.log_softmax(s, dim=1), p_t / norm[:, None], reduction="none").sum(1)
    expected = (norm * kl).mean()
    method = _method("wttm", temperature=1 / l_)
    assert float(method.loss(s, t, torch.zeros(8, dtype=torch.long))) == pytest.approx(float(expected), rel=1e-5)


def _release_mlkd(s_w, s_s, t_w, t_s, target, T, ce_w, kd_w, logit_stand):
    """MLKD.forward_train of the logit-standardization-KD release, re-typed (the same five temperatures, the
    masks as the release applies them: scalar loss × bool mask, then mean)."""
    conf = F.softmax(t_w, dim=1).max(dim=1)[0]
    mask = conf.le(float(np.percentile(conf.numpy().flatten(), 50))).bool()
    class_conf = F.softmax(t_w, dim=1).sum(0)
    class_mask = class_conf.le(float(np.percentile(class_conf.numpy().flatten(), 50))).bool()

    def cc(a, b, temp):
        pa, pb = F.softmax(a / temp, dim=1), F.softmax(b / temp, dim=1)
        return ((pb.t() @ pb - pa.t() @ pa) ** 2).sum() / a.shape[1]

    def bc(a, b, temp):
        pa, pb = F.softmax(a / temp, dim=1), F.softmax(b / temp, dim=1)
        return ((pb @ pb.t() - pa @ pa.t()) ** 2).sum() / a.shape[0]

    temps = [T, 3.0, 5.0, 2.0, 6.0]
    ce = ce_w * (F.cross_entropy(s_w, target) + F.cross_entropy(s_s, target))
    kd_weak = sum(kd_w * (_release_kd_loss(s_w, t_w, x, logit_stand) * mask).mean() for x in temps)
    kd_strong = sum(kd_w * _release_kd_loss(s_s, t_s, x, logit_stand) for x in temps[:3]) + sum(
        kd_w * _release_kd_loss(s_w, t_w, x, logit_stand) for x in temps[3:]
    )
    cc_weak = sum(kd_w * (cc(s_w, t_w, x) * class_mask).mean() for x in temps)
    bc_weak = sum(kd_w * (bc(s_w, t_w, x) * mask).mean() for x in temps)
    return ce + kd_weak + kd_strong + cc_weak + bc_weak


@pytest.mark.parametrize("logit_stand", [False, True])
def test_mlkd_equals_the_release(logit_stand):
    method = _method("mlkd", logit_standardize=logit_stand).train()
    x, xs = torch.randn(8, 3, 32, 32), torch.randn(8, 3, 32, 32)
    y = torch.arange(8) % K
    batch = TrainBatch(x, y, torch.arange(8), x_strong=xs)
    batch.epoch = 0.0
    _, terms = method.forward_train(batch)
    s_w, s_s = method.student(x), method.student(xs)
    t_w, t_s = method.teacher(0)(x), method.teacher(0)(xs)
    expected = _release_mlkd(s_w, s_s, t_w, t_s, y, 4.0, 0.1, 0.9, logit_stand)
    assert float(sum(terms.values()).detach()) == pytest.approx(float(expected.detach()), rel=1e-5)


def test_mlkd_without_a_strong_view_is_refused(digits_teacher, tmp_path):
    from conftest import digits_overrides

    from kdlab.experiment import train

    cfg = load_config(None, [*digits_overrides(tmp_path, 1), "method.name=mlkd", "student.name=resnet8",
                             "teacher.name=resnet14", f"teacher.checkpoint={digits_teacher}"])  # fmt: skip
    with pytest.raises(ConfigError, match="views.strong"):
        train(cfg, log=lambda _: None)


def _release_dkd(s, t, target, alpha, beta, temperature, logit_stand):
    """dkd_loss of the logit-standardization-KD release (mdistiller's DKD with the z-score), re-typed."""
    s = _release_normalize(s) if logit_stand else s
    t = _release_normalize(t) if logit_stand else t
    gt = torch.zeros_like(s).scatter_(1, target[:, None], 1).bool()
    other = ~gt

    def cat_mask(p):
        return torch.cat([(p * gt).sum(1, keepdims=True), (p * other).sum(1, keepdims=True)], 1)

    p_s, p_t = cat_mask(F.softmax(s / temperature, 1)), cat_mask(F.softmax(t / temperature, 1))
    tckd = F.kl_div(torch.log(p_s), p_t, reduction="sum") * temperature**2 / target.shape[0]
    p_t2 = F.softmax(t / temperature - 1000.0 * gt, 1)
    log_p_s2 = F.log_softmax(s / temperature - 1000.0 * gt, 1)
    nckd = F.kl_div(log_p_s2, p_t2, reduction="sum") * temperature**2 / target.shape[0]
    return alpha * tckd + beta * nckd


def test_dkd_with_logit_standardization_equals_the_release():
    s, t, y = _logits(3), _logits(4), torch.arange(8) % K
    method = _method("dkd", logit_standardize=True, temperature=2.0, alpha=9.0, beta=72.0, warmup_epochs=0)
    terms = method.view_terms(s, [t], y, 1.0, "")
    expected = _release_dkd(s, t, y, 9.0, 72.0, 2.0, True)
    assert float(terms["dkd"]) == pytest.approx(float(expected), rel=1e-4)


def _release_cosine_decay(i, max_value, min_value, num_loops):  # CTKD train_student.py CosineDecay.get_value
    i = min(max(i, 0), num_loops)
    return (math.cos(i * math.pi / num_loops) + 1.0) * 0.5 * (max_value - min_value) + min_value


@pytest.mark.parametrize("base", ["kd", "dkd"])
def test_ctkd_temperature_loss_and_reversed_gradient_equal_the_release(base):
    """CTKD: τ = 1 + 20·sigmoid(θ) through a gradient reversal of strength λ = CosineDecay(0, −1, 10)(epoch); the
    loss is KD (or DKD) at τ; θ's gradient is λ times the plain one."""
    for epoch in (1, 4, 10, 30):
        assert cosine_curriculum(epoch, 0.0, -1.0, 10.0) == pytest.approx(_release_cosine_decay(epoch, 0, -1, 10))
    method = _method("ctkd", base=base).train()
    s, t, y = _logits(5).requires_grad_(), _logits(6), torch.arange(8) % K
    batch = TrainBatch(torch.zeros(8, 3, 32, 32), y, torch.arange(8))
    batch.epoch = 3.5  # the release's epoch 4
    method._tau = method.current_temperature(batch)
    loss = method.loss(s, t, y)
    loss.backward()
    tau = float(1 + 20 * torch.sigmoid(torch.ones(1)))  # the release's Global_T at its initial θ = 1
    with torch.no_grad():
        ref = _release_kd_loss(s, t, tau) if base == "kd" else _release_dkd(s, t, y, 1.0, 2.0, tau, False)
    assert float(loss.detach()) == pytest.approx(float(ref), rel=1e-5)
    theta = torch.ones(1, requires_grad=True)  # the same loss through a plain θ: the gradient without reversal
    plain_tau = (1 + 20 * torch.sigmoid(theta))[0]
    plain = kd(s.detach(), t, plain_tau) if base == "kd" else dkd(s.detach(), t, y, 1.0, 2.0, plain_tau)
    plain.backward()
    lam = _release_cosine_decay(4, 0, -1, 10)
    assert float(method.temperature.theta.grad) == pytest.approx(lam * float(theta.grad), rel=1e-4)
    assert method.epoch_report()["ctkd_temperature"] == pytest.approx(1 + 20 * torch.sigmoid(torch.ones(1)).item())


def _release_nst(g_s, g_t):  # mdistiller distillers/NST.py
    def poly(a, b):
        return (a.unsqueeze(1) * b.unsqueeze(2)).sum(-1).pow(2)

    total = 0
    for f_s, f_t in zip(g_s, g_t):
        s_h, t_h = f_s.shape[2], f_t.shape[2]
        if s_h > t_h:
            f_s = F.adaptive_avg_pool2d(f_s, (t_h, t_h))
        elif s_h < t_h:
            f_t = F.adaptive_avg_pool2d(f_t, (s_h, s_h))
        f_s = F.normalize(f_s.view(f_s.shape[0], f_s.shape[1], -1), dim=2)
        f_t = F.normalize(f_t.view(f_t.shape[0], f_t.shape[1], -1), dim=2)
        total = total + poly(f_t, f_t).mean() + poly(f_s, f_s).mean() - 2 * poly(f_s, f_t).mean()
    return total


def test_nst_equals_the_release():
    g = torch.Generator().manual_seed(7)
    g_s = [torch.randn(4, 8, 16, 16, generator=g), torch.randn(4, 16, 8, 8, generator=g)]
    g_t = [torch.randn(4, 12, 16, 16, generator=g), torch.randn(4, 24, 4, 4, generator=g)]
    ours = sum(nst(a, b) for a, b in zip(g_s, g_t))
    assert float(ours) == pytest.approx(float(_release_nst(g_s, g_t)), rel=1e-5)


def _release_kdsvd(g_s, g_t, k):  # mdistiller distillers/KDSVD.py
    def removenan(x):
        return torch.where(torch.isfinite(x), x, torch.zeros_like(x))

    def svd(feat, n):
        size = feat.shape
        _, s, v = torch.svd(feat.view(size[0], size[1] * size[2], size[3]).float())
        s, v = removenan(s), removenan(v)
        return F.normalize(s[:, :n], dim=1), F.normalize(v[:, :, :n], dim=1)

    def align_rsv(a, b):
        cosine = torch.matmul(a.transpose(-2, -1), b)
        max_abs, _ = torch.max(torch.abs(cosine), 1, keepdim=True)
        mask = torch.where(torch.eq(max_abs, torch.abs(cosine)), torch.sign(cosine), torch.zeros_like(cosine))
        return torch.matmul(a, mask)

    v_sb = v_tb = None
    losses = []
    for i, (f_s, f_t) in enumerate(zip(g_s, g_t)):
        s_t, v_t = svd(f_t, k)
        _, v_s = svd(f_s, k + 3)
        v_s = align_rsv(v_s, v_t)
        v_t, v_s = v_t * s_t.unsqueeze(1), v_s * s_t.unsqueeze(1)
        if i > 0:
            s_rbf = torch.exp(-(v_s.unsqueeze(2) - v_sb.unsqueeze(1)).pow(2) / 8)
            t_rbf = torch.exp(-(v_t.unsqueeze(2) - v_tb.unsqueeze(1)).pow(2) / 8)
            l2 = (s_rbf - t_rbf.detach()).pow(2)
            losses.append(torch.where(torch.isfinite(l2), l2, torch.zeros_like(l2)).sum())
        v_tb, v_sb = v_t, v_s
    return sum(x / g_s[0].shape[0] for x in losses)


def test_kdsvd_equals_the_release():
    g = torch.Generator().manual_seed(8)
    shapes = [(4, 8, 16, 16), (4, 16, 8, 8), (4, 32, 4, 4)]
    g_s = [torch.randn(*s, generator=g) for s in shapes]
    g_t = [torch.randn(s[0], 2 * s[1], s[2], s[3], generator=g) for s in shapes]
    assert float(kdsvd(g_s, g_t, 1)) == pytest.approx(float(_release_kdsvd(g_s, g_t, 1)), rel=1e-4)


def test_kdsvd_gradient_equals_the_releases_where_it_is_defined():
    """On generic maps the SVD's hand-written backward (losses.feature._RightSingular) is autograd's, to float64
    precision; both the singular values' and the vectors' paths are exercised."""
    g = torch.Generator().manual_seed(9)
    shapes = [(3, 4, 6, 6), (3, 8, 3, 3)]
    g_s = [torch.randn(*s, generator=g, dtype=torch.float64, requires_grad=True) for s in shapes]
    g_t = [torch.randn(*s, generator=g, dtype=torch.float64) for s in shapes]
    mine = torch.autograd.grad(kdsvd(g_s, g_t, 1), g_s)
    ref = torch.autograd.grad(_release_kdsvd(g_s, g_t, 1), g_s)
    for a, b in zip(mine, ref):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-9)
    from kdlab.losses.feature import right_singular

    a = torch.randn(2, 9, 5, generator=g, dtype=torch.float64, requires_grad=True)
    w_s, w_v = (
        torch.randn(2, 5, generator=g, dtype=torch.float64),
        torch.randn(2, 5, 2, generator=g, dtype=torch.float64),
    )

    def probe(s, v):  # sign-invariant in each vector, as every use of v is
        v = v[..., :2] * torch.sign(v[:, :1, :2])
        return (s * w_s).sum() + (v * w_v).sum()

    _, s_ref, vh_ref = torch.linalg.svd(a, full_matrices=False)
    (ref,) = torch.autograd.grad(probe(s_ref, vh_ref.transpose(-2, -1)), a)
    (mine,) = torch.autograd.grad(probe(*right_singular(a)), a)
    assert torch.allclose(mine, ref, rtol=1e-8, atol=1e-10)


def test_kdsvd_gradient_stays_finite_where_singular_values_tie():
    """A student map with dead (all-zero) columns has tied zero singular values: autograd's SVD backward gives
    NaN there (which stopped CIFAR-100 resnet8 runs in their first epoch), KDSVD's authors' gradient and kdlab's
    give a finite one; a non-finite map is decomposed as zeros instead of failing inside the SVD."""
    g = torch.Generator().manual_seed(10)
    f_s = torch.randn(4, 8, 8, 8, generator=g)
    f_s[..., 5:] = 0  # three dead columns per map
    f_s2 = torch.randn(4, 16, 4, 4, generator=g)
    f_t = [torch.randn(4, 8, 8, 8, generator=g), torch.randn(4, 16, 4, 4, generator=g)]
    leaves = [f_s.clone().requires_grad_(), f_s2.clone().requires_grad_()]
    (ref,) = torch.autograd.grad(_release_kdsvd(leaves, f_t, 1), leaves[:1])
    assert not torch.isfinite(ref).all()
    (mine,) = torch.autograd.grad(kdsvd(leaves, f_t, 1), leaves[:1])
    assert torch.isfinite(mine).all() and mine.abs().sum() > 0
    assert (mine[..., 5:] != 0).any()  # the dead columns still get their (defined) gradient
    broken = f_s2.clone()
    broken[0, 0, 0, 0] = float("nan")
    assert torch.isfinite(kdsvd([f_s, broken], f_t, 1))


def _release_dot_step(params, task_grads, kd_grads, state, lr, m, m_kd, wd):
    """mdistiller engine/dot.py `dot()` for parameters that all have both gradients, re-typed."""
    for p, d_p in zip(params, task_grads):
        d_p = d_p.add(p, alpha=wd)
        buf = state.get(("t", id(p)))
        buf = d_p.clone() if buf is None else buf.mul_(m).add_(d_p)
        state[("t", id(p))] = buf
        p.add_(buf, alpha=-lr)
    for p, d_p in zip(params, kd_grads):
        buf = state.get(("k", id(p)))
        buf = d_p.clone() if buf is None else buf.mul_(m_kd).add_(d_p)
        state[("k", id(p))] = buf
        p.add_(buf, alpha=-lr)


def test_dot_equals_the_release_over_three_steps():
    torch.manual_seed(0)
    ours, ref = nn.Linear(5, 3), nn.Linear(5, 3)
    ref.load_state_dict(ours.state_dict())
    opt = DistillationOrientedSGD(ours.parameters(), lr=0.1, momentum=0.9, delta=0.075, weight_decay=5e-4)
    state: dict = {}
    for step in range(3):
        x = torch.randn(6, 5, generator=torch.Generator().manual_seed(step))
        y = torch.arange(6) % 3
        t = torch.randn(6, 3, generator=torch.Generator().manual_seed(10 + step))

        def terms(model, x=x, y=y, t=t):
            out = model(x)
            return {"ce": F.cross_entropy(out, y), "kd": _release_kd_loss(out, t, 4.0)}

        opt.zero_grad(set_to_none=True)
        opt.backward_terms(terms(ours))
        opt.step()
        params = list(ref.parameters())
        tr = terms(ref)
        kd_grads = torch.autograd.grad(tr["kd"], params, retain_graph=True)
        task_grads = torch.autograd.grad(tr["ce"], params)
        with torch.no_grad():
            _release_dot_step(params, task_grads, kd_grads, state, 0.1, 0.825, 0.975, 5e-4)
    for a, b in zip(ours.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_dot_is_refused_where_it_cannot_run():
    with pytest.raises(ConfigError, match="dot_delta"):
        load_config(None, ["optim.name=dot", "optim.dot_delta=0.95"])
    with pytest.raises(ConfigError, match="Nesterov"):
        load_config(None, ["optim.name=dot", "optim.nesterov=true"])


# --- per-pair method defaults (the releases' published values) ---

# mdistiller configs/cifar100/dkd/*.yaml: (kdlab pair file, β, lr), re-typed from the release
MDISTILLER_DKD = [
    ("resnet110_resnet32", 2.0, 0.05), ("resnet32x4_resnet8x4", 8.0, 0.05), ("resnet32x4_ShuffleV1", 8.0, 0.01),
    ("resnet32x4_ShuffleV2", 8.0, 0.01), ("ResNet50_MobileNetV2", 8.0, 0.01), ("resnet56_resnet20", 2.0, 0.05),
    ("vgg13_MobileNetV2", 6.0, 0.01), ("vgg13_vgg8", 6.0, 0.05), ("wrn_40_2_ShuffleV1", 8.0, 0.01),
    ("wrn_40_2_wrn_16_2", 6.0, 0.05), ("wrn_40_2_wrn_40_1", 6.0, 0.05),
]  # fmt: skip


@pytest.mark.parametrize(("pair", "beta", "lr"), MDISTILLER_DKD)
def test_dkd_on_every_pair_resolves_to_mdistillers_values(pair, beta, lr, capsys):
    from kdlab.cli import main

    assert main(["config", "--show", f"configs/cifar100/kd_{pair}.yaml", "method.name=dkd"]) == 0
    out = capsys.readouterr()
    import yaml

    resolved = yaml.safe_load(out.out)
    assert resolved["method"]["beta"] == beta and resolved["optim"]["lr"] == lr
    assert resolved["method"]["warmup_epochs"] == 20.0 and resolved["method"]["alpha"] == 1.0  # defaults printed
    assert "mdistiller" in out.err  # the notice names the source


# dvlab-research/ReviewKD CIFAR-100/script/reviewKD.sh: --kd-loss-weight per pair, re-typed from the release
REVIEWKD_WEIGHTS = {
    "wrn_40_2_wrn_16_2": 5.0, "wrn_40_2_wrn_40_1": 5.0, "wrn_40_2_ShuffleV1": 5.0, "resnet32x4_resnet8x4": 5.0,
    "resnet32x4_ShuffleV1": 5.0, "resnet32x4_ShuffleV2": 8.0, "resnet56_resnet20": 0.6, "resnet110_resnet32": 1.0,
}  # fmt: skip


def test_reviewkd_on_every_pair_takes_its_releases_weight():
    pairs = sorted(p.stem[3:] for p in (Path(__file__).parents[1] / "kdlab/configs/cifar100").glob("kd_*.yaml"))
    for pair in pairs:
        cfg = load_config(f"configs/cifar100/kd_{pair}.yaml", ["method.name=reviewkd"])
        assert cfg.method.get("feat_weight", 1.0) == REVIEWKD_WEIGHTS.get(pair, 1.0), pair  # 1.0: mdistiller's


def test_explicit_values_beat_the_recipe_and_the_standardised_variant_has_its_own():
    notes: list[str] = []
    pair = "configs/cifar100/kd_resnet56_resnet20.yaml"
    cfg = load_config(pair, ["method.name=dkd", "method.beta=8", "optim.lr=0.02"], notice=notes.append)
    assert cfg.method["beta"] == 8 and cfg.optim.lr == 0.02 and not [n for n in notes if "method_defaults" in n]
    cfg = load_config(pair, ["method.name=dkd", "method.logit_standardize=true"])
    assert (cfg.method["temperature"], cfg.method["alpha"], cfg.method["beta"]) == (3.0, 18.0, 36.0)
    cfg = load_config(pair, ["method.name=mlkd"])
    assert cfg.optim.lr == 0.025 and cfg.views.strong == "randaugment"
    cfg = load_config(pair, ["method.name=at"])  # no recipe: the method's defaults, the pair's lr
    assert cfg.method == {"name": "at"} and cfg.optim.lr == 0.05


# --- numerical edges --------------------------------------------------------------------------------------------


def test_dkd_on_two_classes_is_finite_with_an_empty_non_target_term():
    """mdistiller #60: with two classes the non-target distribution has one class, so NCKD is 0, not infinite."""
    s, t, y = _logits(9, k=2, scale=10.0), _logits(10, k=2, scale=10.0), torch.tensor([0, 1] * 4)
    loss = dkd(s.requires_grad_(), t, y, 1.0, 8.0, 4.0)
    loss.backward()
    assert math.isfinite(float(loss.detach())) and torch.isfinite(s.grad).all()
    tckd_only = dkd(s, t, y, 1.0, 0.0, 4.0)
    assert float(loss) == pytest.approx(float(tckd_only))


def test_ctkd_with_dkd_stays_finite_where_the_release_gives_nan():
    """CTKD #9/#10: with a learned τ the teacher's side carries a gradient, and the release's masked softmax
    (t/τ − 1000·gt) underflows to exact zeros whose kl_div gradient is NaN — already at ordinary logits; confident
    logits make its log(p) of the binary split −inf as well. kdlab's DKD masks with −inf and zeroes the masked
    log-probabilities, and clamps the binary split: loss and gradients stay finite."""
    theta = torch.ones(1, requires_grad=True)
    ref = _release_dkd(_logits(5), _logits(6), torch.arange(8) % K, 1.0, 2.0, 1 + 20 * torch.sigmoid(theta), False)
    ref.backward()
    assert math.isfinite(float(ref)) and not torch.isfinite(theta.grad).all()
    s = torch.zeros(4, K)
    s[:, 0] = 200.0
    t = torch.zeros(4, K)
    t[:, 1] = 200.0
    y = torch.zeros(4, dtype=torch.long)
    with torch.no_grad():
        assert not torch.isfinite(_release_dkd(s, t, y, 1.0, 2.0, torch.tensor(1.2), False))
    method = _method("ctkd", base="dkd").train()
    batch = TrainBatch(torch.zeros(4, 3, 32, 32), y, torch.arange(4))
    batch.epoch = 12.0
    method._tau = method.current_temperature(batch)
    s.requires_grad_()
    loss = method.loss(s, t, y)
    loss.backward()
    assert math.isfinite(float(loss.detach())) and torch.isfinite(s.grad).all()
    assert torch.isfinite(method.temperature.theta.grad).all()


def test_dkd_on_a_mixed_strong_view_masks_the_label_of_the_larger_part():
    """mdistiller #13: x' mixes two images; DKD's target-class mask on x' is the label of the larger part (λ ≥ ½:
    the source's, else the partner's)."""
    method = _method("dkd", warmup_epochs=0)
    x = torch.randn(4, 3, 32, 32)
    y = torch.tensor([1, 2, 3, 4])
    mix = MixInfo(lam=torch.tensor([0.9, 0.2, 0.5, 0.4]), src=torch.arange(4), partner=torch.tensor([1, 0, 3, 2]))
    batch = TrainBatch(x, y, torch.arange(4), x_strong=x.flip(3), mix=mix)
    assert batch.strong_labels().tolist() == [1, 1, 3, 3]
    batch.epoch = 0.0
    _, terms = method.train().forward_train(batch)
    with torch.no_grad():
        s_strong = method.student(batch.x_strong)
        t_strong = method.teacher(0)(batch.x_strong)
    expected = dkd(s_strong, t_strong, torch.tensor([1, 1, 3, 3]), 1.0, 8.0, 4.0)
    assert float(terms["dkd_strong"]) == pytest.approx(float(expected), rel=1e-4)


# --- OFD and ReviewKD on pre-activation taps ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["resnet8", "resnet8x4", "wrn_16_2"])
def test_preactivation_taps_are_the_maps_before_each_stages_relu(name):
    from kdlab.models.features import FeatureExtractor

    model = create_model(name, K).eval()
    taps = model_taps(name)
    paths = [taps[r] for r in ("stage1", "stage2", "preact1", "preact2", "preact3", "feature")]
    with FeatureExtractor(model, paths) as fx:
        _, f = fx(torch.randn(2, 3, 32, 32))
    pre3, feature = f[taps["preact3"]], f[taps["feature"]]
    assert (pre3 < 0).any() and torch.equal(F.relu(pre3), feature)  # the last stage: feature = ReLU(preact3)
    if name.startswith("resnet"):  # a ResNet stage ends in its ReLU; a WRN stage (pre-activation blocks) does not
        assert torch.equal(F.relu(f[taps["preact1"]]), f[taps["stage1"]])
    else:
        assert torch.equal(f[taps["preact1"]], f[taps["stage1"]])


def _release_margin(bn):  # mdistiller OFD.init_ofd_modules, with Φ from math.erf instead of scipy
    out = []
    for s, m in zip(bn.weight.data, bn.bias.data):
        s, m = abs(s.item()), m.item()
        cdf = 0.5 * (1 + math.erf((-m / s) / math.sqrt(2)))
        out.append(-s * math.exp(-((m / s) ** 2) / 2) / math.sqrt(2 * math.pi) / cdf + m if cdf > 0.001 else -3 * s)
    return torch.tensor(out).view(1, -1, 1, 1)


def _release_ofd_feat_loss(source, target, margin):  # mdistiller OFD.feat_loss
    loss = (
        (source - margin) ** 2 * ((source > margin) & (target <= margin)).float()
        + (source - target) ** 2 * ((source > target) & (target > margin) & (target <= 0)).float()
        + (source - target) ** 2 * (target > 0).float()
    )
    return torch.abs(loss).mean(dim=0).sum()


def test_ofd_equals_the_release():
    method = _method("ofd")
    teacher = method.teacher(0)
    g = torch.Generator().manual_seed(11)
    for i in (1, 2, 3):  # margins from BatchNorms with spread parameters (some channels hit the −3σ branch)
        bn = dict(teacher.model.named_modules())[teacher.taps[f"preact_bn{i}"]]
        bn.weight.data = torch.randn(bn.num_features, generator=g)
        bn.bias.data = torch.randn(bn.num_features, generator=g) * 2 - 1
    method = build_method({"name": "ofd"}, method.student, [teacher], model_taps("resnet8"))
    x = torch.randn(4, 3, 32, 32, generator=g)
    _, s_feats = method.student_features(x)
    _, t_feats = method.teacher_features(x)
    ours = method.feature_loss(s_feats, t_feats)
    expected = 0
    for i, (conn, fs, ft) in enumerate(zip(method.connectors, s_feats, t_feats)):
        bn = dict(teacher.model.named_modules())[teacher.taps[f"preact_bn{i + 1}"]]
        src = conn(fs)
        expected = expected + _release_ofd_feat_loss(
            src, F.adaptive_avg_pool2d(ft, src.shape[-2:]), _release_margin(bn)
        ) / 2 ** (3 - i - 1)
    assert float(ours.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)


class _ReleaseABF(nn.Module):  # mdistiller ReviewKD.ABF, re-typed (same parameter names)
    def __init__(self, in_channel, mid_channel, out_channel, fuse):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(in_channel, mid_channel, 1, bias=False), nn.BatchNorm2d(mid_channel))
        self.conv2 = nn.Sequential(
            nn.Conv2d(mid_channel, out_channel, 3, 1, 1, bias=False), nn.BatchNorm2d(out_channel)
        )
        self.att_conv = nn.Sequential(nn.Conv2d(mid_channel * 2, 2, 1), nn.Sigmoid()) if fuse else None

    def forward(self, x, y=None, shape=None, out_shape=None):
        n, _, h, w = x.shape
        x = self.conv1(x)
        if self.att_conv is not None:
            y = F.interpolate(y, (shape, shape), mode="nearest")
            z = self.att_conv(torch.cat([x, y], dim=1))
            x = x * z[:, 0].view(n, 1, h, w) + y * z[:, 1].view(n, 1, h, w)
        if x.shape[-1] != out_shape:
            x = F.interpolate(x, (out_shape, out_shape), mode="nearest")
        return self.conv2(x), x


def _release_hcl(fstudent, fteacher):  # mdistiller ReviewKD.hcl_loss
    loss_all = 0.0
    for fs, ft in zip(fstudent, fteacher):
        h = fs.shape[2]
        loss = F.mse_loss(fs, ft, reduction="mean")
        cnt, tot = 1.0, 1.0
        for lv in [4, 2, 1]:
            if lv >= h:
                continue
            cnt /= 2.0
            loss += F.mse_loss(F.adaptive_avg_pool2d(fs, (lv, lv)), F.adaptive_avg_pool2d(ft, (lv, lv))) * cnt
            tot += cnt
        loss_all = loss_all + loss / tot
    return loss_all


def test_reviewkd_equals_the_release():
    """resnet8 → resnet14 (widths 16/32/64): mdistiller's SHAPES = OUT_SHAPES = [1, 8, 16, 32], IN_CHANNELS =
    OUT_CHANNELS = [16, 32, 64, 64]; the release's forward with our fusion weights loaded."""
    method = _method("reviewkd", warmup_epochs=4)
    in_ch, shapes = [16, 32, 64, 64], [1, 8, 16, 32]
    release = nn.ModuleList(_ReleaseABF(c, min(512, in_ch[-1]), c, i < 3) for i, c in enumerate(in_ch))[::-1]
    for ours, ref in zip(method.abfs, release):
        ref.load_state_dict(ours.state_dict())
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(12))
    method.train()
    batch = TrainBatch(x, torch.arange(4), torch.arange(4))
    batch.epoch = 1.0  # a quarter of the warm-up
    _, terms = method.forward_train(batch)
    _, s = method.student_features(x)
    _, t = method.teacher_features(x)
    feats = [*s[:3], F.adaptive_avg_pool2d(s[3], 1)][::-1]
    results = []
    out, res = release[0](feats[0], out_shape=shapes[0])
    results.append(out)
    for f, abf, shape, out_shape in zip(feats[1:], release[1:], shapes[1:], shapes[1:]):
        out, res = abf(f, res, shape, out_shape)
        results.insert(0, out)
    teacher = [*t[:3], F.adaptive_avg_pool2d(t[3], 1)]
    expected = 0.25 * _release_hcl(results, teacher)
    assert float(terms["feat"].detach()) == pytest.approx(float(expected.detach()), rel=1e-5)


def test_ofd_names_the_taps_it_needs():
    student = create_model("vgg8", K)
    teacher = Teacher(create_model("vgg13", K), model_taps("vgg13"))
    with pytest.raises(ConfigError, match="pre-activation taps"):
        build_method({"name": "ofd"}, student, [teacher], model_taps("vgg8"))


def test_the_docs_table_is_the_shipped_method_defaults():
    from pathlib import Path

    from kdlab.commands.config_keys import method_defaults_table

    doc = (Path(__file__).parents[1] / "docs" / "method_defaults.md").read_text()
    assert method_defaults_table() in doc


class _TwoHeadNet(nn.Module):
    """A toy distillation-token student: timm's VisionTransformerDistilled's head contract (two heads while
    distilled training, their mean otherwise)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Conv2d(3, 8, 3)
        self.head, self.head_dist = nn.Linear(8, K), nn.Linear(8, K)
        self.distilled_training = False

    def set_distilled_training(self, enable: bool = True) -> None:
        self.distilled_training = enable

    def forward(self, x):
        h = self.body(x).mean((2, 3))
        cls, dist = self.head(h), self.head_dist(h)
        return (cls, dist) if self.distilled_training and self.training else (cls + dist) / 2


def _release_deit_loss(outputs, outputs_kd, teacher_outputs, labels, kind, alpha, tau):
    """facebookresearch/deit losses.py DistillationLoss.forward, re-typed (base criterion: plain CE)."""
    base_loss = F.cross_entropy(outputs, labels)
    if kind == "soft":
        distillation_loss = F.kl_div(
            F.log_softmax(outputs_kd / tau, dim=1), F.log_softmax(teacher_outputs / tau, dim=1),
            reduction="sum", log_target=True,
        ) * (tau * tau) / outputs_kd.numel()  # fmt: skip
    else:
        distillation_loss = F.cross_entropy(outputs_kd, teacher_outputs.argmax(dim=1))
    return base_loss * (1 - alpha) + distillation_loss * alpha


@pytest.mark.parametrize(("kind", "alpha", "tau"), [("hard", 0.5, 1.0), ("soft", 0.5, 1.0), ("soft", 0.3, 3.0)])
def test_deit_equals_the_release_and_predicts_with_the_mean_of_its_heads(kind, alpha, tau):
    torch.manual_seed(0)
    teacher = Teacher(create_model("resnet14", K), model_taps("resnet14"))
    params = {"name": "deit", "kind": kind, "ce_weight": 1 - alpha, "kd_weight": alpha, "temperature": tau}
    method = build_method(params, _TwoHeadNet(), [teacher], {}, (3, 16, 16)).train()
    x, y = torch.randn(6, 3, 16, 16), torch.arange(6) % K
    logits, terms = method.forward_train(TrainBatch(x, y, torch.arange(6)))
    cls, dist = method.student(x)
    with torch.no_grad():
        t = teacher(x)
    ref = _release_deit_loss(cls, dist, t, y, kind, alpha, tau)
    assert float(sum(terms.values()).detach()) == pytest.approx(float(ref.detach()), rel=1e-5)
    torch.testing.assert_close(logits, (cls + dist) / 2)
    method.eval()
    torch.testing.assert_close(method.predict(x), (cls + dist) / 2)  # evaluation and export: the mean
