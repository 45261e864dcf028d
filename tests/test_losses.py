"""DHNLoss against a plain float64 reference of the authors' PairwiseLoss layer.

The reference follows the layer's semantics written out in official_settings.md ("Loss"): value by
loops over all ordered pairs, the *applied* gradient by the layer's explicit formula
l_lambda / count * D . Z (D_ij = 2 (sigmoid(theta_ij) - s_ij)) plus q_gamma / N * sign(z) *
tanh(|z| - 1) -- never by autograd.
"""
import math

import numpy as np
import pytest
import torch
from scipy.special import expit

from reproduce.training.losses import DHNLoss, _batch_similarity, pairwise_similarity


def reference_similarity(labels):
    n = labels.shape[0]
    s = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            s[i, j] = 1.0 if float(np.dot(labels[i].astype(np.float64), labels[j])) > 0 else 0.0
    return s


def reference_layer(z, s, quant_weight=0.3, pair_loss="cross_entropy", threshold=15.0):
    """(value, gradient on z) of the Caffe layer. z: N x K float64; s: N x N in {1, 0, -1}
    (-1: pair left out)."""
    z = np.asarray(z, dtype=np.float64)
    n, k = z.shape
    theta = z @ z.T
    count, value = 0, 0.0
    D = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            if s[i, j] < 0:
                continue
            count += 1
            sij, t = float(s[i, j] > 0), theta[i, j]
            if pair_loss == "cross_entropy":
                if threshold is not None and t >= threshold:
                    value += t * (1 - sij)
                else:
                    value += np.logaddexp(0.0, t) - sij * t
                D[i, j] = 2 * (expit(t) - sij)
            else:
                value += (sij - t / k) ** 2
                D[i, j] = -4.0 / k * (sij - t / k)   # d/dz of both (i, j) and (j, i) occurrences
    count = max(count, 1)
    pair = value / count
    grad = D @ z / count
    a = np.abs(z) - 1
    q = 0.0
    for v in a.ravel():
        q += (v - math.log(2)) if v > 15 else math.log(math.cosh(v))
    sign = np.where(z >= 0, 1.0, -1.0)                  # Caffe: bottom_data >= 0 -> +
    grad = grad + quant_weight / n * sign * np.tanh(a)
    return pair + quant_weight * q / n, grad, {"pair_loss": pair, "quantization_loss": q / n,
                                               "quantization_loss_caffe": q / (n * k)}


def random_batch(rng, n=64, k=48, c=21, scale=1.5, zero_rows=3):
    """tanh codes with saturated and small entries, sparse multi-label labels, all-zero rows."""
    z = np.tanh(scale * rng.standard_normal((n, k)))
    labels = (rng.random((n, c)) < 0.08).astype(np.uint8)
    labels[np.arange(n), rng.integers(0, c, n)] = 1      # every row labelled ...
    labels[rng.choice(n, size=min(zero_rows, n), replace=False)] = 0   # ... but these
    return z, labels


def run_loss(loss, z, labels=None, similarity=None, dtype=torch.float64):
    zt = torch.tensor(z, dtype=dtype, requires_grad=True)
    kwargs = {}
    if labels is not None:
        kwargs["labels"] = torch.from_numpy(np.ascontiguousarray(labels))
    if similarity is not None:
        kwargs["similarity"] = torch.tensor(similarity)
    value = loss(zt, **kwargs)
    value.backward()
    return value.item(), zt.grad.double().numpy()


@pytest.mark.parametrize("pair_loss", ["cross_entropy", "squared"])
@pytest.mark.parametrize("quant_weight", [0.3, 0.0])
def test_value_and_gradient_match_reference(rng, pair_loss, quant_weight):
    z, labels = random_batch(rng)
    s = reference_similarity(labels)
    theta = z @ z.T
    assert (theta >= 15).any() and (theta < 15).any()   # both sides of the threshold
    assert s.sum() > 0 and (s == 0).any()
    ref_value, ref_grad, ref_parts = reference_layer(z, s, quant_weight, pair_loss)
    loss = DHNLoss(quant_weight=quant_weight, pair_loss=pair_loss)
    value, grad = run_loss(loss, z, labels)
    np.testing.assert_allclose(value, ref_value, rtol=1e-12)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-10, atol=1e-15)
    last = loss.last
    for key, ref in ref_parts.items():
        np.testing.assert_allclose(last[key], ref, rtol=1e-12)
    assert last["total"] == pytest.approx(value, rel=1e-12)
    assert last["zero_label_rows"] == 3
    assert last["pairs"] == 64 * 64
    assert last["similar_pairs"] == int(s.sum())
    assert last["quantization_loss_caffe"] == pytest.approx(last["quantization_loss"] / 48)
    assert last["total_caffe"] == pytest.approx(
        last["pair_loss"] + (last["quantization_loss_caffe"] if quant_weight else 0.0))

    # float32, as Caffe ran it: same numbers to float32 accuracy
    value32, grad32 = run_loss(loss, z, labels, dtype=torch.float32)
    np.testing.assert_allclose(value32, ref_value, rtol=2e-5)
    np.testing.assert_allclose(grad32, ref_grad, rtol=1e-3, atol=1e-6 * np.abs(ref_grad).max())


def test_ties_zero_codes_and_single_row(rng):
    z, labels = random_batch(rng, n=10, k=6, c=4, zero_rows=2)
    z[3] = z[1]                  # tied codes and labels
    labels[3] = labels[1]
    z[5, :2] = 0.0               # Caffe's sign(0) = +1 in the quantization gradient
    z[7] = 0.0                   # theta_77 = 0, theta_7j = 0: sigmoid(0) = 1/2
    s = reference_similarity(labels)
    ref_value, ref_grad, _ = reference_layer(z, s)
    value, grad = run_loss(DHNLoss(), z, labels)
    np.testing.assert_allclose(value, ref_value, rtol=1e-12)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-10, atol=1e-15)

    for lab in ([[0, 1, 1]], [[0, 0, 0]]):      # N = 1: the diagonal is the only pair
        z1 = np.array([[0.9, -0.2, 0.0]])
        s1 = reference_similarity(np.array(lab))
        for pair_loss in ("cross_entropy", "squared"):
            ref_value, ref_grad, _ = reference_layer(z1, s1, pair_loss=pair_loss)
            loss = DHNLoss(pair_loss=pair_loss)
            value, grad = run_loss(loss, z1, np.array(lab))
            np.testing.assert_allclose(value, ref_value, rtol=1e-12)
            np.testing.assert_allclose(grad, ref_grad, rtol=1e-10, atol=1e-15)
            assert loss.last["pairs"] == 1
            assert loss.last["zero_label_rows"] == (1 if sum(lab[0]) == 0 else 0)


def test_threshold_piece_changes_value_not_gradient(rng):
    z = np.array([[0.99] * 20, [0.98] * 20, [-0.99] * 20])     # theta about +-19.5
    labels = np.array([[1, 0], [0, 1], [1, 0]])
    s = reference_similarity(labels)
    with_switch, without = DHNLoss(threshold=15.0), DHNLoss(threshold=None)
    v1, g1 = run_loss(with_switch, z, labels)
    v2, g2 = run_loss(without, z, labels)
    np.testing.assert_array_equal(g1, g2)                    # the switch is value-only
    ref1, ref_grad, _ = reference_layer(z, s, threshold=15.0)
    ref2, _, _ = reference_layer(z, s, threshold=None)
    np.testing.assert_allclose([v1, v2], [ref1, ref2], rtol=1e-12)
    np.testing.assert_allclose(g1, ref_grad, rtol=1e-10)
    assert v1 < v2                                           # log1p(e^-theta) dropped above 15
    assert DHNLoss(threshold=-1).threshold is None           # Caffe: `threshold >= 0` test


@pytest.mark.parametrize("pair_loss", ["cross_entropy", "squared"])
def test_stable_in_float32_for_huge_theta(rng, pair_loss):
    # Not tanh outputs: norms up to ~100 make theta reach +-1e4 (overflows exp in float32).
    z = rng.standard_normal((16, 8)) * 35.0
    z[0] *= 2.0
    z[1] = -z[0]
    labels = (rng.random((16, 5)) < 0.3).astype(np.uint8)
    theta = z @ z.T
    assert theta.max() > 1e4 and theta.min() < -1e4
    loss = DHNLoss(pair_loss=pair_loss)
    value, grad = run_loss(loss, z, labels, dtype=torch.float32)
    assert np.isfinite(value) and np.isfinite(grad).all()
    assert all(np.isfinite(v) for v in loss.last.values())
    ref_value, ref_grad, _ = reference_layer(z, reference_similarity(labels), pair_loss=pair_loss)
    np.testing.assert_allclose(value, ref_value, rtol=1e-4)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-3, atol=1e-5 * np.abs(ref_grad).max())


@pytest.mark.parametrize("pair_loss", ["cross_entropy", "squared"])
def test_gradcheck_float64(rng, pair_loss):
    z = torch.tensor(np.tanh(rng.standard_normal((6, 5))), requires_grad=True)
    labels = torch.tensor((rng.random((6, 3)) < 0.4).astype(np.float64))
    loss = DHNLoss(quant_weight=0.3, pair_loss=pair_loss)
    assert torch.autograd.gradcheck(lambda x: loss(x, labels), (z,), eps=1e-6, atol=1e-7)


def _bits(t):
    return t.view(torch.int64 if t.dtype == torch.float64 else torch.int32)


@pytest.mark.parametrize("pair_loss", ["cross_entropy", "squared"])
@pytest.mark.parametrize("quant_weight, threshold", [(0.3, 15.0), (0.0, 15.0), (2.0, 0.5), (0.3, None)])
@pytest.mark.parametrize("given", ["labels", "similarity", "pairs left out"])
def test_one_node_is_bitwise_the_recorded_graph(rng, pair_loss, quant_weight, threshold, given):
    """DHNLoss on row-major codes runs as one autograd node (_DHNLossFunction) whose backward
    writes out autograd's: value, gradient and `last` are bitwise those of the graph autograd
    records for the same arithmetic (DHNLoss._value), for codes that are a leaf or a layer's
    output, in float32 and float64."""
    loss = DHNLoss(quant_weight, pair_loss, threshold)
    z, labels = random_batch(rng, n=40, k=12, c=5)
    kwargs = {"labels": torch.tensor(labels)}
    if given != "labels":
        similarity = rng.choice([0.0, 1.0, -1.0] if given == "pairs left out" else [0.0, 1.0], (40, 40))
        kwargs = {"similarity": torch.tensor(similarity)}
    for dtype in (torch.float32, torch.float64):
        for through_layer in (False, True):
            results = []
            for one_node in (True, False):
                w = torch.tensor(z, dtype=dtype, requires_grad=True)
                codes = torch.tanh(1.5 * w) if through_layer else w
                if one_node:
                    value = loss(codes, **kwargs)
                    last = loss.last
                else:
                    s, counted = _batch_similarity(codes, kwargs.get("labels"), kwargs.get("similarity"))
                    value, loss._last, _ = loss._value(codes, s, counted)
                    last = loss.last
                value.backward()
                results.append((_bits(value.detach()), _bits(w.grad), last))
            (v1, g1, l1), (v2, g2, l2) = results
            assert torch.equal(v1, v2) and torch.equal(g1, g2) and l1 == l2


def test_column_major_codes_take_the_recorded_graph(rng):
    z, labels = random_batch(rng, n=16, k=6, c=4)
    row = torch.tensor(z, requires_grad=True)
    column = torch.tensor(np.asfortranarray(z), requires_grad=True)
    assert row.is_contiguous() and not column.is_contiguous()
    values = [DHNLoss()(codes, torch.tensor(labels)) for codes in (row, column)]
    for value in values:
        value.backward()
    assert values[0].item() == pytest.approx(values[1].item(), rel=1e-12)
    np.testing.assert_allclose(row.grad.numpy(), column.grad.numpy(), rtol=1e-10, atol=1e-15)


def test_similarity_input_and_label_dtypes(rng):
    z, labels = random_batch(rng, n=12, k=8, c=5, zero_rows=2)
    loss = DHNLoss()
    base, base_grad = run_loss(loss, z, labels)
    for lab in (labels.astype(bool), labels.astype(np.float32), labels.astype(np.int64)):
        value, grad = run_loss(loss, z, lab)
        assert value == base
        np.testing.assert_array_equal(grad, base_grad)
    s = reference_similarity(labels)
    value, grad = run_loss(loss, z, similarity=s)
    assert value == pytest.approx(base, rel=1e-14)
    np.testing.assert_allclose(grad, base_grad, rtol=1e-13, atol=1e-16)
    assert loss.last["zero_label_rows"] == 2
    # pairs marked -1 (Caffe's "unknown") leave the mean and the gradient
    s[0, 4] = s[4, 0] = s[2, 2] = -1
    value, grad = run_loss(loss, z, similarity=s)
    ref_value, ref_grad, _ = reference_layer(z, s)
    np.testing.assert_allclose(value, ref_value, rtol=1e-12)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-10, atol=1e-15)
    assert loss.last["pairs"] == 12 * 12 - 3
    torch.testing.assert_close(pairwise_similarity(torch.tensor(labels)),
                               torch.tensor(reference_similarity(labels), dtype=torch.float32))


def test_gathered_batch_order_does_not_matter(rng):
    # What DDP's all-gather changes is only the order of the 64 rows: same pairs, same loss.
    z, labels = random_batch(rng, n=20, k=12, c=6)
    perm = rng.permutation(20)
    loss = DHNLoss()
    v1, g1 = run_loss(loss, z, labels)
    v2, g2 = run_loss(loss, z[perm], labels[perm])
    assert v2 == pytest.approx(v1, rel=1e-13)
    np.testing.assert_allclose(g2, g1[perm], rtol=1e-12, atol=1e-16)


def test_half_precision_is_computed_in_float32(rng):
    z, labels = random_batch(rng, n=8, k=16, c=4)
    loss = DHNLoss()
    zt = torch.tensor(z, dtype=torch.float16)
    value = loss(zt, torch.tensor(labels))
    assert value.dtype == torch.float32
    ref, _, _ = reference_layer(zt.double().numpy(), reference_similarity(labels))
    assert value.item() == pytest.approx(ref, rel=1e-5)


def test_bad_arguments():
    with pytest.raises(ValueError, match="pair_loss"):
        DHNLoss(pair_loss="hinge")
    with pytest.raises(ValueError, match="quant_weight"):
        DHNLoss(quant_weight=-1)
    loss = DHNLoss()
    z = torch.zeros(4, 3)
    with pytest.raises(ValueError, match="labels must be 4 x C"):
        loss(z, torch.zeros(5, 2))
    with pytest.raises(ValueError, match="exactly one"):
        loss(z)
    with pytest.raises(ValueError, match="exactly one"):
        loss(z, torch.zeros(4, 2), similarity=torch.zeros(4, 4))
    with pytest.raises(ValueError, match="similarity must be 4 x 4"):
        loss(z, similarity=torch.zeros(4, 3))
    with pytest.raises(ValueError, match="N x K"):
        loss(torch.zeros(0, 3), torch.zeros(0, 2))
    assert DHNLoss().last == {}
