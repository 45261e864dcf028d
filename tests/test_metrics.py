"""reproduce.evaluation.metrics against plain float64 references written out below: stable argsort of Hamming
distances and loops, exact enumeration of tie orders, and a Monte Carlo average over tie orders."""
import itertools
import json

import numpy as np
import pytest

from reproduce.evaluation import metrics


# ---------------------------------------------------------------- plain references (float64)
def ref_hamming(q, d):
    """±1 codes -> (Q, N) Hamming distances via the inner product, as the authors rank."""
    q, d = np.asarray(q, np.float64), np.asarray(d, np.float64)
    return 0.5 * (q.shape[1] - q @ d.T)


def ref_relevant(ql, dl):
    return (np.asarray(ql, np.float64) @ np.asarray(dl, np.float64).T) > 0


def ref_ap(ranked_rel, zero_hit):
    """The authors' AP of a relevance list already cut at R; None = query left out."""
    hits, total = 0, 0.0
    for k, r in enumerate(ranked_rel, 1):
        if r:
            hits += 1
            total += hits / k
    if hits == 0:
        return None if zero_hit == "skip" else 0.0
    return total / hits


def ref_aps(dist, rel, topk, zero_hit):
    out = []
    for i in range(dist.shape[0]):
        order = np.argsort(dist[i], kind="stable")
        cut = len(order) if topk is None else topk
        out.append(ref_ap(rel[i, order[:cut]], zero_hit))
    return out


def ref_map(aps):
    counted = [a for a in aps if a is not None]
    return sum(counted) / len(counted) if counted else 0.0


def ref_tie_orders(dist_row, rel_row):
    """Every relevance pattern the tie orders can produce, in rank order (all equally likely):
    inside each group of equal distance, the relevant items take any r of the n positions."""
    groups = []
    for d in np.unique(dist_row):
        members = rel_row[dist_row == d]
        n, r = len(members), int(members.sum())
        groups.append([np.isin(np.arange(n), c) for c in itertools.combinations(range(n), r)])
    for combo in itertools.product(*groups):
        yield np.concatenate(combo)


def ref_expected_ap(dist_row, rel_row, topk, zero_hit):
    values = [ref_ap(p[:topk], zero_hit) for p in ref_tie_orders(dist_row, rel_row)]
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def random_case(rng, nq, n, bits, classes, p_label=0.15, zero_rows=True):
    q = rng.choice([-1, 1], size=(nq, bits))
    d = rng.choice([-1, 1], size=(n, bits))
    ql = (rng.random((nq, classes)) < p_label).astype(np.uint8)
    dl = (rng.random((n, classes)) < p_label).astype(np.uint8)
    if zero_rows:      # queries / items with no label at all: never relevant
        ql[0] = 0
        dl[:3] = 0
    return q, d, ql, dl


def as_list(aps):
    return [None if np.isnan(a) else float(a) for a in aps]


# ---------------------------------------------------------------- MAP, ties="index"
@pytest.mark.parametrize("bits", [8, 12, 70, 130])
@pytest.mark.parametrize("topk", [None, 1, 17, 150, 10_000])
@pytest.mark.parametrize("zero_hit", ["skip", "zero"])
def test_map_index_ties_equals_reference_exactly(rng, bits, topk, zero_hit):
    q, d, ql, dl = random_case(rng, 25, 400, bits, classes=6)
    dist, rel = ref_hamming(q, d), ref_relevant(ql, dl)
    cut = None if topk is None else min(topk, d.shape[0])
    want = ref_aps(dist, rel, cut, zero_hit)
    got = metrics.average_precisions(q, d, ql, dl, topk=topk, ties="index", zero_hit=zero_hit)
    assert [w is None for w in want] == list(np.isnan(got))
    np.testing.assert_allclose([g for g in got if not np.isnan(g)],
                               [w for w in want if w is not None], rtol=0, atol=1e-12)
    m = metrics.mean_average_precision(q, d, ql, dl, topk=topk, zero_hit=zero_hit)
    assert abs(m - ref_map(want)) <= 1e-12


def test_zero_hit_conventions_differ_on_zero_hit_queries(rng):
    q, d, ql, dl = random_case(rng, 30, 200, 8, classes=4, p_label=0.1)
    skip = metrics.average_precisions(q, d, ql, dl, topk=5, zero_hit="skip")
    zero = metrics.average_precisions(q, d, ql, dl, topk=5, zero_hit="zero")
    assert np.isnan(skip).any() and not np.isnan(zero).any()
    assert (zero[np.isnan(skip)] == 0).all()
    assert np.isnan(skip[0])        # the all-zero label row never has a hit


def test_many_labels_use_several_words(rng):
    q, d, ql, dl = random_case(rng, 15, 300, 12, classes=150, p_label=0.01)
    dist, rel = ref_hamming(q, d), ref_relevant(ql, dl)
    assert rel.any() and not rel.all()
    got = metrics.mean_average_precision(q, d, ql, dl, topk=50)
    assert abs(got - ref_map(ref_aps(dist, rel, 50, "skip"))) <= 1e-12


def test_zero_one_codes_and_bool_codes_rank_like_plus_minus_one(rng):
    q, d, ql, dl = random_case(rng, 10, 200, 12, classes=5)
    pm = metrics.evaluate_codes(q, d, ql, dl, topk=30)
    assert metrics.evaluate_codes((q > 0).astype(np.uint8), (d > 0).astype(float), ql, dl,
                                  topk=30) == pm
    assert metrics.evaluate_codes(q > 0, d > 0, ql.astype(bool), dl, topk=30) == pm


def test_query_chunks_do_not_change_results(rng, monkeypatch):
    q, d, ql, dl = random_case(rng, 23, 150, 10, classes=5)
    whole = metrics.evaluate_codes(q, d, ql, dl, topk=20, ties="expected")
    monkeypatch.setattr(metrics, "QUERY_CHUNK", 4)
    monkeypatch.setattr(metrics, "SCORE_BYTES", 8 * 150 * 3)
    assert metrics.evaluate_codes(q, d, ql, dl, topk=20, ties="expected") == whole
    cont = metrics.average_precisions(q, d, ql, dl, topk=20, binary=False)
    monkeypatch.undo()
    np.testing.assert_array_equal(cont, metrics.average_precisions(q, d, ql, dl, topk=20,
                                                                   binary=False))


# ---------------------------------------------------------------- ties="expected"
@pytest.mark.parametrize("zero_hit", ["skip", "zero"])
def test_expected_ap_equals_enumeration_of_all_tie_orders(rng, zero_hit):
    """Small databases (9 items, 2-3 bits: big tie groups) so every tie order can be listed;
    every cut-off, so the cut falls inside groups, at group boundaries and past the end."""
    for trial in range(12):
        bits = 2 + trial % 2
        q, d, ql, dl = random_case(rng, 3, 9, bits, classes=3, p_label=0.35, zero_rows=False)
        dist, rel = ref_hamming(q, d), ref_relevant(ql, dl)
        for topk in range(1, 10):
            got = metrics.average_precisions(q, d, ql, dl, topk=topk, ties="expected",
                                             zero_hit=zero_hit)
            for i in range(3):
                want = ref_expected_ap(dist[i], rel[i], topk, zero_hit)
                if want is None:
                    assert np.isnan(got[i])
                else:
                    assert abs(got[i] - want) <= 1e-12, (trial, topk, i)


def test_expected_precision_at_n_equals_enumeration(rng):
    q, d, ql, dl = random_case(rng, 4, 9, 2, classes=3, p_label=0.35, zero_rows=False)
    dist, rel = ref_hamming(q, d), ref_relevant(ql, dl)
    ns = [1, 2, 3, 5, 8, 9, 20]
    p, r = metrics.precision_recall_at_n(q, d, ql, dl, ns=ns, ties="expected")
    want_p, want_r = np.zeros(len(ns)), np.zeros(len(ns))
    for i in range(4):
        patterns = list(ref_tie_orders(dist[i], rel[i]))
        for t, n in enumerate(ns):
            hits = np.mean([pat[:n].sum() for pat in patterns])
            want_p[t] += hits / min(n, 9) / 4
            want_r[t] += (hits / rel[i].sum() if rel[i].sum() else 0.0) / 4
    np.testing.assert_allclose(p, want_p, atol=1e-12)
    np.testing.assert_allclose(r, want_r, atol=1e-12)


@pytest.mark.parametrize("topk,zero_hit", [(None, "skip"), (40, "skip"), (40, "zero"), (3, "skip")])
def test_expected_ap_matches_monte_carlo_over_tie_orders(rng, topk, zero_hit):
    q, d, ql, dl = random_case(rng, 12, 300, 8, classes=8, p_label=0.08)
    dist, rel = ref_hamming(q, d), ref_relevant(ql, dl)
    got = metrics.average_precisions(q, d, ql, dl, topk=topk, ties="expected", zero_hit=zero_hit)
    samples = [[] for _ in range(len(q))]
    for _ in range(3000):
        perm = rng.permutation(d.shape[0])      # a random order inside every tie group
        for i, ap in enumerate(ref_aps(dist[:, perm], rel[:, perm], topk, zero_hit)):
            if ap is not None:
                samples[i].append(ap)
    for i, s in enumerate(samples):
        if not s:
            assert np.isnan(got[i])
            continue
        se = np.std(s) / np.sqrt(len(s))
        assert abs(np.mean(s) - got[i]) <= 4.5 * se + 1e-12, (i, np.mean(s), got[i], se)
    # and the expectation is not just the index order's value
    index = metrics.average_precisions(q, d, ql, dl, topk=topk, zero_hit=zero_hit)
    assert np.nanmax(np.abs(index - got)) > 1e-4


def test_expected_equals_index_without_ties(rng):
    """Distinct inner products: no tie group has two items, so both conventions agree."""
    q = rng.standard_normal((6, 16))
    d = rng.standard_normal((120, 16))
    ql, dl = (rng.random((6, 4)) < 0.3), (rng.random((120, 4)) < 0.3)
    for topk in (None, 10):
        a = metrics.average_precisions(q, d, ql, dl, topk=topk, binary=False)
        b = metrics.average_precisions(q, d, ql, dl, topk=topk, ties="expected", binary=False)
        np.testing.assert_allclose(a, b, atol=1e-12)


# ---------------------------------------------------------------- radius, PR curve, top-N
def ref_within(dist, rel, radius):
    ps, rs = [], []
    for i in range(dist.shape[0]):
        inside = dist[i] <= radius
        ps.append(rel[i, inside].sum() / inside.sum() if inside.any() else 0.0)
        rs.append(rel[i, inside].sum() / rel[i].sum() if rel[i].any() else 0.0)
    return np.mean(ps), np.mean(rs)


@pytest.mark.parametrize("bits", [8, 70])
def test_precision_recall_within_radius_and_pr_curve(rng, bits):
    q, d, ql, dl = random_case(rng, 20, 300, bits, classes=5)
    if bits == 70:       # make some items fall within small radii
        d[:40] = q[rng.integers(0, 20, 40)]
        d[:40, :2] *= -1
    dist, rel = ref_hamming(q, d), ref_relevant(ql, dl)
    for radius in (0, 2, bits + 5):
        got = metrics.precision_recall_within_radius(q, d, ql, dl, radius=radius)
        np.testing.assert_allclose(got, ref_within(dist, rel, radius), atol=1e-12)
    radii, p, r = metrics.pr_curve(q, d, ql, dl)
    assert radii.tolist() == list(range(bits + 1))
    want = np.array([ref_within(dist, rel, rad) for rad in radii])
    np.testing.assert_allclose(p, want[:, 0], atol=1e-12)
    np.testing.assert_allclose(r, want[:, 1], atol=1e-12)
    assert r[-1] == pytest.approx(np.mean(rel.any(axis=1)))


def test_nothing_within_radius_counts_precision_zero():
    q = np.array([[1, 1, 1, 1]])
    d = np.array([[-1, -1, -1, -1], [-1, -1, -1, 1]])
    lab = np.array([[1]])
    assert metrics.precision_recall_within_radius(q, d, lab, np.ones((2, 1)), radius=2) == (0.0, 0.0)


@pytest.mark.parametrize("binary", [True, False])
def test_precision_recall_at_n_index_ties(rng, binary):
    q, d, ql, dl = random_case(rng, 15, 250, 10, classes=5)
    dist, rel = ref_hamming(q, d), ref_relevant(ql, dl)
    ns = [1, 7, 100, 250, 1000]
    p, r = metrics.precision_recall_at_n(q, d, ql, dl, ns=ns, binary=binary)
    for t, n in enumerate(ns):
        hits = [rel[i, np.argsort(dist[i], kind="stable")[:n]].sum() for i in range(15)]
        assert p[t] == pytest.approx(np.mean(np.array(hits) / min(n, 250)), abs=1e-12)
        rec = [h / rel[i].sum() if rel[i].any() else 0.0 for i, h in enumerate(hits)]
        assert r[t] == pytest.approx(np.mean(rec), abs=1e-12)


# ---------------------------------------------------------------- DHN-B: inner-product ranking
@pytest.mark.parametrize("topk", [None, 9, 60])
def test_inner_product_ranking_with_ties(rng, topk):
    """Codes on a coarse grid so that many inner products tie; index ties = stable argsort of
    -<z_q, z_db>; expected ties = enumeration over tie orders."""
    q = rng.integers(-1, 2, (5, 3)) * 0.5
    d = rng.integers(-1, 2, (60, 3)) * 0.5
    ql, dl = rng.random((5, 3)) < 0.4, rng.random((60, 3)) < 0.4
    score, rel = -(q @ d.T), ref_relevant(ql, dl)
    for zero_hit in ("skip", "zero"):
        got = metrics.average_precisions(q, d, ql, dl, topk=topk, zero_hit=zero_hit, binary=False)
        assert as_list(got) == pytest.approx(ref_aps(score, rel, topk, zero_hit), abs=1e-12)


def test_inner_product_expected_ties_equals_enumeration(rng):
    for trial in range(6):
        q = rng.integers(-1, 2, (4, 2)) * 0.5
        d = rng.integers(-1, 2, (10, 2)) * 0.5
        ql, dl = rng.random((4, 3)) < 0.4, rng.random((10, 3)) < 0.4
        score, rel = -(q @ d.T), ref_relevant(ql, dl)
        for topk in (1, 4, 10):
            got = metrics.average_precisions(q, d, ql, dl, topk=topk, ties="expected",
                                             binary=False)
            for i in range(4):
                want = ref_expected_ap(score[i], rel[i], topk, "skip")
                if want is None:
                    assert np.isnan(got[i])
                else:
                    assert abs(got[i] - want) <= 1e-12, (trial, topk, i)


def test_inner_product_of_sign_codes_equals_hamming(rng):
    q, d, ql, dl = random_case(rng, 12, 200, 12, classes=5)
    for ties in ("index", "expected"):
        a = metrics.evaluate_codes(q, d, ql, dl, topk=30, ties=ties)
        b = metrics.evaluate_codes(q.astype(np.float32), d.astype(np.float32), ql, dl, topk=30,
                                   ties=ties, binary=False)
        assert b["map"] == pytest.approx(a["map"], abs=1e-12)
        np.testing.assert_allclose(b["precision_at_n"]["precision"],
                                   a["precision_at_n"]["precision"], atol=1e-12)
        assert b["pr_curve"] is None and b["precision_within_radius"] is None


# ---------------------------------------------------------------- evaluate_codes, bad input
def test_evaluate_codes_is_json_ready_and_agrees_with_each_metric(rng):
    q, d, ql, dl = random_case(rng, 10, 120, 12, classes=4)
    res = metrics.evaluate_codes(q, d, ql, dl, topk=50, radius=3, ns=[10, 500])
    assert json.loads(json.dumps(res)) == res
    assert res["map"] == metrics.mean_average_precision(q, d, ql, dl, topk=50)
    assert (res["precision_within_radius"], res["recall_within_radius"]) == \
        pytest.approx(metrics.precision_recall_within_radius(q, d, ql, dl, radius=3))
    assert res["precision_at_n"]["n"] == [10, 500]
    counted = sum(a is not None for a in ref_aps(ref_hamming(q, d), ref_relevant(ql, dl), 50, "skip"))
    assert res["map_queries_counted"] == counted < 10
    assert res["num_queries"] == 10 and res["num_database"] == 120 and res["bits"] == 12


@pytest.mark.parametrize("change,match", [
    (lambda a: a.update(d=a["d"][:, :-1]), "bits"),
    (lambda a: a.update(dl=a["dl"][:, :-1]), "classes"),
    (lambda a: a.update(ql=a["ql"][:-1]), "label rows"),
    (lambda a: a["q"].__setitem__((1, 2), 0.3), "±1 or 0/1"),
    (lambda a: a["d"].__setitem__((0, 0), 0), "±1 or 0/1"),
    (lambda a: a["q"].__setitem__((0, 0), np.nan), "NaN"),
    (lambda a: a.update(q=a["q"][:0], ql=a["ql"][:0]), "empty"),
    (lambda a: a.update(d=a["d"][0]), "2-D"),
])
def test_bad_arrays_raise_value_error(rng, change, match):
    q, d, ql, dl = random_case(rng, 4, 20, 8, classes=3)
    args = {"q": q.astype(float), "d": d.astype(float), "ql": ql, "dl": dl}
    change(args)
    with pytest.raises(ValueError, match=match):
        metrics.evaluate_codes(args["q"], args["d"], args["ql"], args["dl"])


@pytest.mark.parametrize("kwargs", [{"ties": "random"}, {"zero_hit": "nan"}, {"topk": 0},
                                    {"radius": -1}, {"ns": [0, 10]}])
def test_bad_conventions_raise_value_error(rng, kwargs):
    q, d, ql, dl = random_case(rng, 4, 20, 8, classes=3)
    with pytest.raises(ValueError):
        metrics.evaluate_codes(q, d, ql, dl, **kwargs)
