"""The loss zoo against hand computations and limiting cases."""

import math

import pytest
import torch
import torch.nn.functional as F

from kdlab.losses import at, attention_map, dist, dkd, dkd_parts, fitnet, kd, logit_standardize, pkt, rkd, sp, vid


@pytest.fixture
def logits():
    g = torch.Generator().manual_seed(0)
    return (
        torch.randn(16, 10, generator=g) * 3,
        torch.randn(16, 10, generator=g) * 3,
        torch.randint(0, 10, (16,), generator=g),
    )


def test_dkd_decomposition_identity(logits):
    """Zhao et al. Eq. 5, per sample: KD = TCKD + (1 − p_t[target]) · NCKD (all at the same temperature)."""
    s, t, y = logits
    T = 4.0
    tckd, nckd = dkd_parts(s, t, y, T)
    per_sample_kd = T * T * (F.softmax(t / T, 1) * (F.log_softmax(t / T, 1) - F.log_softmax(s / T, 1))).sum(1)
    p_target = F.softmax(t / T, 1).gather(1, y[:, None]).squeeze(1)
    torch.testing.assert_close(tckd + (1 - p_target) * nckd, per_sample_kd, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(per_sample_kd.mean(), kd(s, t, T))
    assert dkd(s, t, y, alpha=1.0, beta=8.0, T=T).item() == pytest.approx((tckd + 8 * nckd).mean().item(), rel=1e-6)


def test_dkd_hand_computed_two_class_case():
    # K = 3, target 0, T = 1: TCKD is the KL of the binary (target, rest) split; NCKD that of the other two.
    s, t, y = torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([[2.0, 1.0, 0.0]]), torch.tensor([0])
    ps, pt = F.softmax(s, 1)[0].tolist(), F.softmax(t, 1)[0].tolist()
    bs, bt = [ps[0], 1 - ps[0]], [pt[0], 1 - pt[0]]
    tckd = sum(a * math.log(a / b) for a, b in zip(bt, bs))
    qs = [ps[1] / (1 - ps[0]), ps[2] / (1 - ps[0])]
    qt = [pt[1] / (1 - pt[0]), pt[2] / (1 - pt[0])]
    nckd = sum(a * math.log(a / b) for a, b in zip(qt, qs))
    got_t, got_n = dkd_parts(s, t, y, 1.0)
    assert got_t.item() == pytest.approx(tckd, rel=1e-5) and got_n.item() == pytest.approx(nckd, rel=1e-5)


def test_dist_limits(logits):
    s, t, _ = logits
    assert dist(t, t).item() == pytest.approx(0.0, abs=1e-5)
    assert dist(s, t).item() > 0
    # Invariant to a positive affine change of the teacher's probabilities' logits? No: but to shifts, yes.
    assert dist(s, t + 7.0).item() == pytest.approx(dist(s, t).item(), rel=1e-5)


def test_dist_hand_computed():
    s, t = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 1.0]]), torch.tensor([[3.0, 2.0, 1.0], [0.0, 1.0, 0.0]])
    ys, yt = s.softmax(1), t.softmax(1)

    def pearson(a, b):
        a, b = a - a.mean(), b - b.mean()
        return float((a * b).sum() / (a.norm() * b.norm()))

    inter = 1 - sum(pearson(ys[i], yt[i]) for i in range(2)) / 2
    intra = 1 - sum(pearson(ys[:, j], yt[:, j]) for j in range(3)) / 3
    assert dist(s, t, beta=2.0, gamma=3.0).item() == pytest.approx(2 * inter + 3 * intra, rel=1e-5)


def test_at_hand_computed_and_equal_maps():
    f = torch.randn(4, 8, 6, 6)
    assert at(f, f * 1.0).item() == pytest.approx(0.0, abs=1e-9)
    assert at(f, f * 3.0).item() == pytest.approx(0.0, abs=1e-9)  # normalised: scale-invariant
    fs = torch.zeros(1, 1, 1, 2)
    fs[0, 0, 0] = torch.tensor([1.0, 0.0])
    ft = torch.zeros(1, 1, 1, 2)
    ft[0, 0, 0] = torch.tensor([0.0, 2.0])
    # a_s = [1, 0], a_t = [0, 1]: mean of squared differences = (1 + 1) / 2
    assert at(fs, ft).item() == pytest.approx(1.0)
    torch.testing.assert_close(attention_map(ft), torch.tensor([[0.0, 1.0]]))


def test_at_aligns_spatial_sizes():
    assert at(torch.randn(2, 4, 8, 8), torch.randn(2, 16, 4, 4)).ndim == 0


def test_sp_hand_computed():
    fs = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    ft = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    # G_s = I → rows [1,0],[0,1]; G_t = [[1,1],[1,1]] → rows [.707,.707]
    r = 1 / math.sqrt(2)
    expected = ((1 - r) ** 2 + r**2 + r**2 + (1 - r) ** 2) / 4
    assert sp(fs[:, :, None, None], ft[:, :, None, None]).item() == pytest.approx(expected, rel=1e-6)
    assert sp(fs, fs * 5).item() == pytest.approx(0.0, abs=1e-7)


def test_rkd_and_pkt_limits():
    g = torch.Generator().manual_seed(1)
    e = torch.randn(8, 16, generator=g)
    assert rkd(e, e).item() == pytest.approx(0.0, abs=1e-6)
    assert rkd(e, 2 * e).item() == pytest.approx(0.0, abs=1e-6)  # distances normalised by their mean
    assert rkd(e, torch.randn(8, 16, generator=g)).item() > 0
    assert pkt(e, e).item() == pytest.approx(0.0, abs=1e-7)
    assert pkt(e, torch.randn(8, 16, generator=g)).item() > 0


def test_fitnet_is_mse():
    a, b = torch.ones(2, 3, 2, 2), torch.zeros(2, 3, 2, 2)
    assert fitnet(a, b).item() == 1.0


def test_logit_standardize():
    z = logit_standardize(torch.tensor([[1.0, 2.0, 3.0]]))
    assert z.mean().item() == pytest.approx(0.0, abs=1e-6) and z.std().item() == pytest.approx(1.0, abs=1e-5)


def test_vid_hand_case_and_its_minimum():
    # μ = 0, F_t = 1, σ² = 2 in every channel: ½(1/2 + log 2) per element.
    mu, ft = torch.zeros(2, 3, 4, 4), torch.ones(2, 3, 4, 4)
    assert vid(mu, torch.full((3,), 2.0), ft).item() == pytest.approx(0.5 * (0.5 + math.log(2)), rel=1e-6)
    # A perfect mean leaves ½·log σ², minimised over σ² at the residual variance (here 0 → −∞ as σ² → 0).
    assert vid(ft, torch.ones(3), ft).item() == pytest.approx(0.0, abs=1e-7)
    # Per-channel variance: channel 1 with σ² = 4 contributes ½(1/4 + log 4), the others ½(1 + 0).
    var = torch.tensor([1.0, 4.0, 1.0])
    expected = (2 * 0.5 + 0.5 * (0.25 + math.log(4))) / 3
    assert vid(mu, var, ft).item() == pytest.approx(expected, rel=1e-6)
