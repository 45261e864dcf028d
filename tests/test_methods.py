"""Deep baselines (reproduce.methods): CNNH, CNNH*, DNNH.

Every loss is compared in value and gradient with a plain float64 loop over its paper's formula
(gradients written out by hand, as the papers give them, never by autograd); CNNH's stage 1 with
the paper's coordinate descent on an explicit L = HH^T - qS; each method trains a tiny network
(fc7-like features -> head) on clustered data to codes that beat random codes in MAP.
"""
import math

import numpy as np
import pytest
import torch
from torch import nn

from reproduce.errors import UserError
from reproduce.evaluation.metrics import mean_average_precision
from reproduce.methods import (DEEP_METHODS, CNNHHead, CodeRegressionLoss, DivideEncodeHead,
                               PairwiseCodeLoss, TripletRankingLoss, make_method, piecewise_threshold,
                               similarity_matrix, slice_sizes, stage1, stage1_objective)
from reproduce.methods.cnnh_stage1 import _sweep
from reproduce.training.solver import CaffeSGD, caffe_param_groups


@pytest.fixture
def one_thread():
    """Tiny tensors: one thread is fastest (and the 2 cores are shared)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def share(labels):
    """s_ij = True if rows i and j share >= 1 label (an unlabelled row shares nothing)."""
    n = len(labels)
    return np.array([[float(np.dot(labels[i], labels[j])) > 0 for j in range(n)]
                     for i in range(n)])


def run(loss, outputs, targets, dtype=torch.float64):
    x = torch.tensor(outputs, dtype=dtype, requires_grad=True)
    value = loss(x, torch.tensor(targets))
    value.backward()
    return value.item(), x.grad.double().numpy()


# ----------------------------------------------------------------------------- DNNH: the loss
def reference_triplet(b, labels, margin=1.0):
    """Paper: l = max(0, ||b-b+||^2 - ||b-b-||^2 + margin); dl/db = (2b- - 2b+)[l>0],
    dl/db+ = (2b+ - 2b)[l>0], dl/db- = (2b - 2b-)[l>0]; mean over the batch's triplets."""
    s = share(labels)
    n = len(b)
    value, grad, count, active, ties = 0.0, np.zeros_like(b), 0, 0, 0
    for i in range(n):
        for j in range(n):
            if j == i or not s[i, j]:
                continue
            for k in range(n):
                if s[i, k]:
                    continue
                count += 1
                l = margin + np.sum((b[i] - b[j]) ** 2) - np.sum((b[i] - b[k]) ** 2)
                ties += l == 0
                if l > 0:
                    active += 1
                    value += l
                    grad[i] += 2 * b[k] - 2 * b[j]
                    grad[j] += 2 * b[j] - 2 * b[i]
                    grad[k] += 2 * b[i] - 2 * b[k]
    if count == 0:
        return 0.0, grad, 0, 0, 0
    return value / count, grad / count, count, active, ties


def triplet_batch(rng, n=14, k=6, c=5, variant="unlabelled"):
    """Random b in [0, 1] with saturated entries; row 0 unlabelled (no positive partner, a
    negative of every row) or, variant "all-labels", labelled with everything (no negative
    partner); row 1 alone with its label; rows 2-4 an exact tie of the hinge at margin 1."""
    b = rng.random((n, k))
    b[rng.random((n, k)) < 0.3] = 0.0                  # saturated outputs, as the threshold gives
    b[rng.random((n, k)) < 0.3] = 1.0
    labels = (rng.random((n, c - 1)) < 0.3).astype(np.uint8)
    labels[np.arange(n), rng.integers(0, c - 1, n)] = 1
    labels = np.concatenate([labels, np.zeros((n, 1), np.uint8)], axis=1)
    labels[0] = 0 if variant == "unlabelled" else 1
    labels[1] = 0
    labels[1, c - 1] = 1                               # label c-1: row 1 (and all-labels row 0)
    # exact ties margin + d+ - d- = 0 with 0/1 codes: anchor 0..0, positive e1, negative e1+e2
    labels[2:5] = 0
    labels[2:4, 0] = 1
    labels[4, 1] = 1
    b[2:5] = 0.0
    b[3, 0] = 1.0
    b[4, :2] = 1.0
    return b, labels


@pytest.mark.parametrize("variant", ["unlabelled", "all-labels"])
@pytest.mark.parametrize("margin", [1.0, 2.0, 0.0])
def test_triplet_loss_matches_reference(rng, margin, variant):
    b, labels = triplet_batch(rng, variant=variant)
    s = share(labels)
    if variant == "unlabelled":
        assert not s[0].any()                          # no positive partner for row 0
    else:
        assert s[0].all()                              # no negative partner for row 0
    assert s[1].sum() == (1 if variant == "unlabelled" else 2)   # row 1: itself (and row 0)
    ref_value, ref_grad, count, active, ties = reference_triplet(b, labels, margin)
    assert count > 0 and 0 < active < count
    if margin == 1.0:
        assert ties > 0                                # hinge exactly 0: no gradient ([l > 0])
    loss = TripletRankingLoss(margin)
    value, grad = run(loss, b, labels)
    np.testing.assert_allclose(value, ref_value, rtol=1e-12)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-10, atol=1e-14)
    assert loss.last == {"total": pytest.approx(value, rel=1e-14), "triplets": count,
                         "active": active}
    value32, grad32 = run(loss, b, labels, dtype=torch.float32)
    np.testing.assert_allclose(value32, ref_value, rtol=1e-5)
    np.testing.assert_allclose(grad32, ref_grad, rtol=1e-4, atol=1e-6)


def test_triplet_loss_without_triplets_is_zero(rng):
    b = rng.random((6, 4))
    for labels in (np.ones((6, 3), np.uint8),          # everyone similar: no negative partner
                   np.eye(6, dtype=np.uint8),          # everyone alone: no positive partner
                   np.zeros((6, 3), np.uint8)):        # nothing labelled
        loss = TripletRankingLoss()
        value, grad = run(loss, b, labels)
        assert value == 0.0 and not grad.any()
        assert loss.last["triplets"] == 0
    # N = 1 and a pair: still well defined
    assert run(TripletRankingLoss(), b[:1], np.ones((1, 2)))[0] == 0.0
    value, grad = run(TripletRankingLoss(), b[:3], np.array([[1, 0], [1, 0], [0, 1]]))
    ref_value, ref_grad, *_ = reference_triplet(b[:3], np.array([[1, 0], [1, 0], [0, 1]]))
    np.testing.assert_allclose([value], [ref_value], rtol=1e-12)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-10, atol=1e-14)


def test_triplet_loss_order_and_half_precision(rng):
    b, labels = triplet_batch(rng)
    perm = rng.permutation(len(b))
    v1, g1 = run(TripletRankingLoss(), b, labels)
    v2, g2 = run(TripletRankingLoss(), b[perm], labels[perm])
    assert v2 == pytest.approx(v1, rel=1e-13)
    np.testing.assert_allclose(g2, g1[perm], rtol=1e-12, atol=1e-15)
    value = TripletRankingLoss()(torch.tensor(b, dtype=torch.float16), torch.tensor(labels))
    assert value.dtype == torch.float32
    with pytest.raises(ValueError, match="targets must be"):
        TripletRankingLoss()(torch.zeros(4, 3), torch.zeros(5, 2))


def masked_triplet_loss(b, labels, margin):
    """The N x N x N formulation the loss had before its counts became batched products: the
    float32 result must be bitwise this one's (value, gradient, counts)."""
    s = torch.tensor(share(labels))
    positive, negative = s & ~torch.eye(len(b), dtype=torch.bool), ~s
    dist = ((b[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    with torch.no_grad():
        valid = positive[:, :, None] & negative[:, None, :]
        active = valid & (margin + dist[:, :, None] - dist[:, None, :] > 0)
        count, n_active = valid.sum(), active.sum()
        uses_pos, uses_neg = active.sum(2).to(b.dtype), active.sum(1).to(b.dtype)
    if int(count) == 0:
        return b.sum() * 0.0, int(count), int(n_active)
    hinge_sum = margin * n_active.to(b.dtype) + (uses_pos * dist).sum() - (uses_neg * dist).sum()
    return hinge_sum / count.to(b.dtype), int(count), int(n_active)


@pytest.mark.parametrize("margin", [1.0, 0.0, 2.0])
def test_triplet_loss_is_bitwise_the_masked_formulation(rng, margin):
    for trial in range(12):
        b, labels = triplet_batch(rng, n=int(rng.integers(3, 70)), k=int(rng.choice([1, 12, 48])))
        if trial % 3 == 1:
            b = rng.normal(0, 1e-3, b.shape)           # tiny distances, no ties
        values, grads = [], []
        for fn in (masked_triplet_loss, None):
            x = torch.tensor(b, dtype=torch.float32, requires_grad=True)
            loss = TripletRankingLoss(margin)
            value = loss(x, torch.tensor(labels)) if fn is None else fn(x, labels, margin)[0]
            value.backward()
            values.append(value.detach().view(torch.int32))
            grads.append(x.grad.view(torch.int32))
        assert torch.equal(*values) and torch.equal(*grads)
        _, count, active = masked_triplet_loss(torch.tensor(b, dtype=torch.float32), labels, margin)
        assert (loss.last["triplets"], loss.last["active"]) == (count, active)


# ----------------------------------------------------------------------------- DNNH: the head
def test_piecewise_threshold_value_and_gradient():
    s = torch.tensor([0.0, 0.39, 0.4, 0.45, 0.5, 0.55, 0.6, 0.61, 1.0], dtype=torch.float64,
                     requires_grad=True)
    g = piecewise_threshold(s, 0.1)
    g.sum().backward()
    np.testing.assert_array_equal(g.detach().numpy(), [0, 0, 0.4, 0.45, 0.5, 0.55, 0.6, 1, 1])
    np.testing.assert_array_equal(s.grad.numpy(), [0, 0, 1, 1, 1, 1, 1, 0, 0])   # band inclusive
    assert piecewise_threshold(s, None) is s
    # finite differences away from the corners
    x = torch.tensor([0.1, 0.3, 0.42, 0.5, 0.57, 0.7, 0.95], dtype=torch.float64)
    h = 1e-6
    fd = (piecewise_threshold(x + h, 0.1) - piecewise_threshold(x - h, 0.1)) / (2 * h)
    np.testing.assert_allclose(fd.numpy(), [0, 0, 1, 1, 1, 0, 0], atol=1e-8)


def test_divide_encode_head_matches_loop(rng):
    gen = torch.Generator().manual_seed(3)
    head = DivideEncodeHead(7, in_features=30, epsilon=0.1, filler_std=0.3, generator=gen).double()
    assert head.sizes == [5, 5, 4, 4, 4, 4, 4]
    x = rng.standard_normal((9, 30))
    xt = torch.tensor(x, requires_grad=True)
    out = head(xt)
    weight = torch.tensor(rng.standard_normal((9, 7)))
    (out * weight).sum().backward()
    ref = np.zeros((9, 7))
    dx = np.zeros_like(x)
    dw = []
    start = 0
    for k, size in enumerate(head.sizes):
        layer = getattr(head, f"ip_s{k + 1}")
        w, bias = layer.weight.detach().numpy()[0], layer.bias.item()
        sl = slice(start, start + size)
        grad_w = np.zeros(size)
        for n in range(9):
            sig = 1 / (1 + math.exp(-(x[n, sl] @ w + bias)))
            inside = 0.4 <= sig <= 0.6
            ref[n, k] = sig if inside else float(sig > 0.6)
            dg = weight[n, k].item() * (sig * (1 - sig) if inside else 0.0)
            dx[n, sl] += dg * w
            grad_w += dg * x[n, sl]
        dw.append(grad_w)
        start += size
    np.testing.assert_allclose(out.detach().numpy(), ref, rtol=1e-12, atol=1e-15)
    assert ((ref > 0) & (ref < 1)).any() and ((ref == 0) | (ref == 1)).any()   # both regimes
    np.testing.assert_allclose(xt.grad.numpy(), dx, rtol=1e-10, atol=1e-14)
    for k, grad_w in enumerate(dw):
        np.testing.assert_allclose(getattr(head, f"ip_s{k + 1}").weight.grad.numpy()[0], grad_w,
                                   rtol=1e-10, atol=1e-14)


def test_divide_encode_layers_names_multipliers_fillers():
    assert slice_sizes(4096, 48) == [86] * 16 + [85] * 32
    assert slice_sizes(4096, 32) == [128] * 32
    for bits in (12, 24, 32, 48):
        assert sum(slice_sizes(4096, bits)) == 4096
    head = make_method("dnnh", 48).make_head(generator=torch.Generator().manual_seed(0))
    names = [n for n, _ in head.named_parameters()]
    assert names == [f"ip_s{k}.{blob}" for k in range(1, 49) for blob in ("weight", "bias")]
    assert head.ip_s1.weight.shape == (1, 86) and head.ip_s48.weight.shape == (1, 85)
    mults = head.lr_mults("head.")
    assert mults["head.ip_s7.weight"] == (10.0, 1.0) and mults["head.ip_s7.bias"] == (20.0, 0.0)
    assert len(mults) == 96
    w = torch.cat([p.detach().flatten() for n, p in head.named_parameters() if "weight" in n])
    assert w.numel() == 4096 and abs(w.std().item() - 0.01) < 0.001
    assert all(not p.any() for n, p in head.named_parameters() if "bias" in n)
    again = make_method("dnnh", 48).make_head(generator=torch.Generator().manual_seed(0))
    assert torch.equal(again.ip_s5.weight, head.ip_s5.weight)
    out = head(torch.relu(torch.randn(5, 4096)))
    assert out.shape == (5, 48) and ((out >= 0) & (out <= 1)).all()
    with pytest.raises(ValueError, match="features"):
        head(torch.zeros(5, 100))


# ----------------------------------------------------------------------------- CNNH: the losses
def reference_regression(outputs, targets, bits, label_loss=None, label_weight=1.0,
                         unit_targets=False):
    """1/(2N) sum ||h - y||^2 (grad (h - y)/N) + label_weight x the label term:
    softmax: -(1/N) sum t_c log p_c, t = labels/|labels| (grad (|t| p - t)/N);
    sigmoid: (1/N) sum BCE(sigmoid(s), t) (grad (sigmoid(s) - t)/N)."""
    n = len(outputs)
    value, grad = 0.0, np.zeros_like(outputs)
    for i in range(n):
        for k in range(bits):
            y = (targets[i, k] + 1) / 2 if unit_targets else targets[i, k]
            value += (outputs[i, k] - y) ** 2 / (2 * n)
            grad[i, k] = (outputs[i, k] - y) / n
        if label_loss is None:
            continue
        scores, t = outputs[i, bits:], targets[i, bits:].astype(np.float64)
        if label_loss == "softmax":
            if t.sum() > 0:
                t = t / t.sum()
            m = scores.max()
            logp = scores - m - math.log(sum(math.exp(v - m) for v in scores))
            value += label_weight * -sum(t[c] * logp[c] for c in range(len(t))) / n
            grad[i, bits:] = label_weight * (t.sum() * np.exp(logp) - t) / n
        else:
            for c in range(len(t)):
                p = 1 / (1 + math.exp(-scores[c]))
                value += label_weight * -(t[c] * math.log(p) + (1 - t[c]) * math.log(1 - p)) / n
                grad[i, bits + c] = label_weight * (p - t[c]) / n
    return value, grad


@pytest.mark.parametrize("case", ["codes", "softmax", "sigmoid", "unit"])
def test_code_regression_loss_matches_reference(rng, case):
    n, bits, c = 10, 6, 4
    codes = np.where(rng.random((n, bits)) < 0.5, -1.0, 1.0)
    codes[0, :3] = rng.uniform(-1, 1, 3)                # relaxed targets are accepted too
    labels = (rng.random((n, c)) < 0.3).astype(np.float64)
    labels[1] = 0                                       # unlabelled row: no label term
    labels[2] = [1, 1, 0, 1]                            # multi-label row
    labels[3] = [0, 1, 0, 0]
    if case in ("codes", "unit"):
        outputs = rng.standard_normal((n, bits)) * (0.3 if case == "unit" else 1.5)
        targets = codes
        loss = CodeRegressionLoss(bits, unit_targets=case == "unit")
        ref_value, ref_grad = reference_regression(outputs, targets, bits,
                                                   unit_targets=case == "unit")
    else:
        outputs = rng.standard_normal((n, bits + c)) * 2
        targets = np.concatenate([codes, labels], axis=1)
        loss = CodeRegressionLoss(bits, c, label_weight=0.7, label_loss=case)
        ref_value, ref_grad = reference_regression(outputs, targets, bits, case, 0.7)
    value, grad = run(loss, outputs, targets)
    np.testing.assert_allclose(value, ref_value, rtol=1e-12)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-10, atol=1e-15)
    last = loss.last
    assert last["total"] == pytest.approx(last["code_loss"] + 0.7 * last["label_loss"]
                                          if case in ("softmax", "sigmoid") else last["code_loss"])
    with pytest.raises(ValueError, match="columns"):
        loss(torch.zeros(n, outputs.shape[1]), torch.zeros(n, outputs.shape[1] + 1))


def reference_pairwise(b, labels):
    """CNNH's objective on the batch: (1/N^2) sum_ij (S_ij - z_i.z_j/K)^2, z = 2b - 1, S +-1,
    S_ii = +1; gradient by the chain rule pair by pair."""
    s = share(labels)
    n, k = b.shape
    z = 2 * b - 1
    value, gz = 0.0, np.zeros_like(z)
    for i in range(n):
        for j in range(n):
            sij = 1.0 if (i == j or s[i, j]) else -1.0
            r = sij - np.dot(z[i], z[j]) / k
            value += r * r
            gz[i] += -2 * r * z[j] / k
            gz[j] += -2 * r * z[i] / k
    return value / n ** 2, 2 * gz / n ** 2


def test_pairwise_code_loss_matches_reference(rng):
    b, labels = triplet_batch(rng)
    b[5] = 0.5                                          # z = 0: a zero row
    ref_value, ref_grad = reference_pairwise(b, labels)
    loss = PairwiseCodeLoss()
    value, grad = run(loss, b, labels)
    np.testing.assert_allclose(value, ref_value, rtol=1e-12)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-10, atol=1e-15)
    value, grad = run(loss, b[:1], labels[1:2] * 0)    # N = 1, unlabelled: S_11 = +1
    assert value == pytest.approx(reference_pairwise(b[:1], labels[1:2] * 0)[0], rel=1e-12)


# ----------------------------------------------------------------------------- CNNH: stage 1
def reference_sweep(H, S, rows, cols):
    """The paper's coordinate descent on an explicit L = HH^T - qS, entry by entry:
    g' = 4 L_i. H_.j, g'' = 4 (H_.j'H_.j + H_ij^2 + L_ii), d = clip(-g'/g'', box), then
    L_i. += d H_.j', L_.i += d H_.j, L_ii += d^2, H_ij += d -- with this implementation's two
    guards (g'' <= 0: the better box end; a step raising the objective is skipped), the objective
    evaluated directly."""
    H = H.copy()
    n, q = H.shape
    L = H @ H.T - q * S

    def objective(L):
        return float(np.sum(L * L))

    for i in rows:
        for j in cols[i]:
            h = H[:, j].copy()
            g1 = 4 * L[i] @ h
            g2 = 4 * (h @ h + H[i, j] ** 2 + L[i, i])
            low, high = -1 - H[i, j], 1 - H[i, j]

            def moved(d):
                L2 = L.copy()
                L2[i, :] += d * h
                L2[:, i] += d * h
                L2[i, i] += d * d
                return L2

            if g2 > 0:
                d = min(max(-g1 / g2, low), high)
            else:
                d = low if objective(moved(low)) < objective(moved(high)) else high
            if d == 0 or objective(moved(d)) > objective(L):
                continue
            L = moved(d)
            H[i, j] += d
    return H


def test_stage1_sweep_equals_explicit_algorithm(rng):
    n, q = 24, 5
    labels = (rng.random((n, 4)) < 0.3).astype(np.uint8)
    labels[0] = 0
    S = similarity_matrix(labels)
    H0 = rng.uniform(-1, 1, (n, q))
    rows = rng.permutation(n)
    cols = np.stack([rng.permutation(q) for _ in range(n)])
    Ht = np.ascontiguousarray(H0.T)
    G, r = Ht @ Ht.T, np.einsum("ij,ij->j", Ht, Ht)
    change = _sweep(Ht, S, G, r, rows.astype(np.int64), cols.astype(np.int64))
    ref = reference_sweep(H0, S.astype(np.float64), rows, cols)
    np.testing.assert_allclose(Ht.T, ref, rtol=1e-10, atol=1e-12)
    assert np.abs(Ht).max() <= 1.0 and (np.abs(Ht) == 1.0).any()     # the box is active
    # the closed-form change of ||HH^T - qS||^2 is the objective's change
    assert change == pytest.approx((stage1_objective(Ht.T, S) - stage1_objective(H0, S)) * q * q,
                                   rel=1e-9)
    np.testing.assert_allclose(G, Ht @ Ht.T, atol=1e-10)
    np.testing.assert_allclose(r, (Ht ** 2).sum(0), atol=1e-12)


def test_similarity_matrix_and_objective(rng):
    labels = (rng.random((9, 3)) < 0.4).astype(np.uint8)
    labels[2] = 0
    S = similarity_matrix(labels)
    ref = np.where(share(labels), 1, -1)
    np.fill_diagonal(ref, 1)
    np.testing.assert_array_equal(S, ref)
    assert S.dtype == np.int8 and (S[2, np.arange(9) != 2] == -1).all()
    H = rng.uniform(-1, 1, (9, 4))
    direct = sum((S[i, j] - H[i] @ H[j] / 4) ** 2 for i in range(9) for j in range(9))
    assert stage1_objective(H, S) == pytest.approx(direct, rel=1e-12)


def test_stage1_decreases_and_reproduces_clusters(rng):
    labels = np.repeat(np.eye(4, dtype=np.uint8), 10, axis=0)         # 4 clear clusters of 10
    result = stage1(labels, bits=12, seed=0)
    hist = np.array(result.history)
    assert hist[1] < 0.7 * hist[0]
    assert np.all(np.diff(hist) <= 1e-9 * hist[0])                     # never increases
    S = similarity_matrix(labels)
    B = result.codes
    assert B.dtype == np.float32 and set(np.unique(B)) <= {-1.0, 1.0}
    np.testing.assert_array_equal(np.where(B @ B.T > 0, 1, -1), S)     # similarity reproduced
    assert np.abs(result.H).max() <= 1.0
    # deterministic for a seed; another seed, other codes
    again = stage1(labels, bits=12, seed=0)
    np.testing.assert_array_equal(again.H, result.H)
    assert not np.array_equal(stage1(labels, bits=12, seed=1).H, result.H)
    # budget: no sweep at all
    none = stage1(labels, bits=12, seed=0, max_sweeps=0)
    assert none.sweeps == 0 and len(none.history) == 1
    assert stage1(labels, bits=12, seed=0, max_seconds=0.0).sweeps == 0
    with pytest.raises(ValueError, match="diagonal"):
        stage1(similarity=-np.ones((3, 3)), bits=2)


# ----------------------------------------------------------------------------- registry
def test_registry_and_options(rng):
    assert set(DEEP_METHODS) == {"cnnh", "cnnh*", "dnnh"}
    assert make_method("CNNH*", 12).name == "cnnh*"
    with pytest.raises(UserError, match="unknown deep method"):
        make_method("dhn", 12)
    with pytest.raises(UserError, match="unknown option"):
        make_method("dnnh", 12, gamma=1)
    with pytest.raises(UserError, match="margin"):
        make_method("dnnh", 12, margin=-1)
    with pytest.raises(UserError, match="epsilon"):
        make_method("dnnh", 12, epsilon=0.7)
    with pytest.raises(UserError, match="num_labels"):
        make_method("cnnh", 12, use_labels=True)
    with pytest.raises(UserError, match="stage"):
        make_method("cnnh*", 12, stage="three")
    with pytest.raises(UserError, match="bits"):
        make_method("cnnh", 0)
    assert make_method("dnnh", 12, epsilon=None).make_head(in_features=24).epsilon is None
    for name in DEEP_METHODS:
        m = make_method(name, 12)
        assert m.solver_settings().base_lr == 2e-5 and isinstance(m.settings, dict)


def test_targets_heads_and_codes(rng):
    labels = (rng.random((30, 5)) < 0.3).astype(np.uint8)
    dnnh = make_method("dnnh", 8)
    t = dnnh.prepare_targets(labels)
    assert t.dtype == np.float32 and np.array_equal(t, labels)
    out = torch.tensor([[0.0, 0.4, 0.5, 0.6, 1.0]])
    np.testing.assert_array_equal((dnnh.codes(out) >= 0).numpy(), [[False, False, True, True,
                                                                     True]])
    cnnh = make_method("cnnh", 8)
    t = cnnh.prepare_targets(labels, seed=0)
    assert t.shape == (30, 8) and t.dtype == np.float32 and set(np.unique(t)) <= {-1.0, 1.0}
    assert cnnh.stage1_.codes.shape == (30, 8)
    plus = make_method("cnnh", 8, use_labels=True, num_labels=5)
    t = plus.prepare_targets(labels, seed=0)
    assert t.shape == (30, 13) and np.array_equal(t[:, 8:], labels)
    head = plus.make_head(in_features=20)
    assert isinstance(head, CNNHHead)
    assert [n for n, _ in head.named_parameters()] == ["hash_layer.weight", "hash_layer.bias",
                                                       "label_layer.weight", "label_layer.bias"]
    assert head.lr_mults() == {"hash_layer.weight": (10.0, 1.0), "hash_layer.bias": (20.0, 0.0),
                               "label_layer.weight": (10.0, 1.0), "label_layer.bias": (20.0, 0.0)}
    out = head(torch.randn(3, 20))
    assert out.shape == (3, 13) and plus.codes(out).shape == (3, 8)
    with pytest.raises(UserError, match="num_labels"):
        make_method("cnnh", 8, use_labels=True, num_labels=4).prepare_targets(labels)
    star = make_method("cnnh*", 8)
    assert star.prepare_targets(labels, seed=0).shape == (30, 8)
    assert np.array_equal(make_method("cnnh*", 8, stage="one").prepare_targets(labels), labels)
    with pytest.raises(UserError, match="0/1"):
        dnnh.prepare_targets(labels * 2)


# ----------------------------------------------------------------------------- short training
def clustered(rng, n, c=4, d=32, multi=False):
    y = rng.integers(0, c, n)
    L = np.eye(c)[y]
    if multi:
        pick = rng.random(n) < 0.3
        L[pick, rng.integers(0, c, n)[pick]] = 1
    centres = rng.standard_normal((c, d)) * 2.0
    X = (L @ centres) / L.sum(1, keepdims=True) + rng.standard_normal((n, d))
    return X.astype(np.float32), L.astype(np.uint8)


class TinyNet(nn.Module):
    """fc7-like features: ReLU(fc7(x)), 256-d, then the method's head."""

    def __init__(self, head, d=32, width=256):
        super().__init__()
        self.fc7 = nn.Linear(d, width)
        self.head = head

    def forward(self, x):
        return self.head(torch.relu(self.fc7(x)))


@pytest.mark.parametrize("name,options,base_lr,multi", [
    ("dnnh", {}, 1e-3, False),
    ("dnnh", {}, 1e-3, True),
    ("cnnh", {}, 1e-3, False),
    ("cnnh", {"use_labels": True, "num_labels": 4}, 1e-3, False),
    ("cnnh*", {}, 1e-3, False),
    ("cnnh*", {"stage": "one"}, 1e-2, True),
])
def test_short_training_learns_codes(one_thread, name, options, base_lr, multi):
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    X, L = clustered(rng, 600, multi=multi)
    Xtr, Ltr, Xq, Lq = torch.from_numpy(X[:500]), L[:500], torch.from_numpy(X[500:]), L[500:]
    method = make_method(name, 16, **options)
    gen = torch.Generator().manual_seed(0)
    net = TinyNet(method.make_head(in_features=256, generator=gen))
    targets = torch.from_numpy(method.prepare_targets(Ltr, seed=0))
    solver = CaffeSGD(caffe_param_groups(net, net.head.lr_mults("head.")), base_lr=base_lr,
                      lr_policy="fixed")
    criterion = method.make_loss()
    history = []
    for _ in range(200):
        idx = torch.randint(0, 500, (64,), generator=gen)
        loss = criterion(net(Xtr[idx]), targets[idx])     # as the engine calls it
        solver.zero_grad()
        loss.backward()
        solver.step()
        history.append(loss.item())
    assert np.mean(history[-20:]) < 0.8 * np.mean(history[:20])
    net.eval()
    with torch.no_grad():
        db = np.where(method.codes(net(Xtr)).numpy() >= 0, 1, -1)
        qc = np.where(method.codes(net(Xq)).numpy() >= 0, 1, -1)
    learned = mean_average_precision(qc, db, Lq, Ltr)
    random = mean_average_precision(np.where(rng.random(qc.shape) < 0.5, 1, -1),
                                    np.where(rng.random(db.shape) < 0.5, 1, -1), Lq, Ltr)
    assert learned > 0.8 and learned > random + 0.3


def test_cnnh_stage1_size_is_bounded_before_allocation(monkeypatch):
    """Stage 1 holds an n x n similarity: a training list too long for it is refused before the
    matrix is allocated (the bound is a module constant)."""
    from reproduce.errors import UserError
    from reproduce.methods import cnnh
    monkeypatch.setattr(cnnh, "MAX_STAGE1_BYTES", 99)
    labels = np.eye(2, dtype=np.uint8)[np.arange(10) % 2]          # 100 bytes of S
    for method in (cnnh.CNNH(8), cnnh.CNNHStar(8)):
        if getattr(method, "stage", None) == "one":
            continue                                                 # CNNH*: no stage-1 matrix
        with pytest.raises(UserError, match="stage 1 of 10 training images"):
            method.prepare_targets(labels, 8)
