"""CaffeSGD against a float64 reference of Caffe's SGDSolver, the lr policies, resume, presets
and the solver.prototxt reader."""
import dataclasses
import io
import math

import numpy as np
import pytest
import torch

from reproduce.caffe.solver_prototxt import read_solver_prototxt
from reproduce.errors import UserError
from reproduce.model.nets import DHNNet
from reproduce.training import solver as solver_module
from reproduce.training.solver import PRESETS, CaffeSGD, SolverSettings, caffe_param_groups, learning_rate

SHAPES = [(4, 3), (3,), (5,), (2, 2)]
MULTS = [(1.0, 1.0), (2.0, 0.0), (10.0, 1.0), (0.0, 1.0)]    # weight, bias, hash weight, frozen


def caffe_rate(policy, it, base_lr, gamma=None, stepsize=None, power=None, stepvalue=(),
               max_iter=None):
    """sgd_solver.cpp GetLearningRate, written out again (multistep via the stateful loop)."""
    if policy == "fixed":
        return base_lr
    if policy == "step":
        return base_lr * math.pow(gamma, it // stepsize)
    if policy == "exp":
        return base_lr * math.pow(gamma, it)
    if policy == "inv":
        return base_lr * math.pow(1 + gamma * it, -power)
    if policy == "multistep":
        current_step = 0
        for i in range(it + 1):        # GetLearningRate runs once per iteration 0 .. it
            if current_step < len(stepvalue) and i >= stepvalue[current_step]:
                current_step += 1
        return base_lr * math.pow(gamma, current_step)
    if policy == "poly":
        return base_lr * math.pow(1 - it / max_iter, power)
    if policy == "sigmoid":
        return base_lr * (1 / (1 + math.exp(-gamma * (it - stepsize))))
    raise AssertionError(policy)


POLICIES = {
    "fixed": dict(),
    "step": dict(gamma=0.3, stepsize=500),
    "exp": dict(gamma=0.999),
    "inv": dict(gamma=1e-3, power=0.75),
    "multistep": dict(gamma=0.5, stepvalue=(300, 100, 100, 1200)),   # Caffe: one step per iter
    "poly": dict(power=0.9, max_iter=2000),
    "sigmoid": dict(gamma=0.01, stepsize=900),     # Caffe CHECKs gamma >= 0: a warm-up
}


def random_grads(seed, iters, dtype=np.float64):
    gen = np.random.default_rng(seed)
    return [[gen.standard_normal(s).astype(dtype) for s in SHAPES] for _ in range(iters)]


def reference_caffe_sgd(w0, grads, rate, momentum, weight_decay):
    """Plain float64 loops of Regularize / ComputeUpdateValue / Net::Update."""
    w = [x.astype(np.float64).copy() for x in w0]
    h = [np.zeros_like(x) for x in w]
    for it, g in enumerate(grads):
        lr = rate(it)
        for i, (lr_mult, decay_mult) in enumerate(MULTS):
            diff = g[i] + weight_decay * decay_mult * w[i]
            h[i] = momentum * h[i] + lr * lr_mult * diff
            w[i] = w[i] - h[i]
    return w


def make_params(seed, dtype=torch.float64):
    gen = np.random.default_rng(seed)
    return [torch.nn.Parameter(torch.tensor(gen.standard_normal(s), dtype=dtype)) for s in SHAPES]


def groups_of(params):
    return [{"params": [p], "lr_mult": lm, "decay_mult": dm, "name": f"p{i}"}
            for i, (p, (lm, dm)) in enumerate(zip(params, MULTS))]


def run(opt, params, grads):
    for g in grads:
        for p, gi in zip(params, g):
            p.grad = torch.tensor(gi, dtype=p.dtype)
        opt.step()


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_trajectory_equals_float64_reference(policy):
    iters = 3000 if policy == "step" else 1500
    kwargs = POLICIES[policy]
    base_lr, momentum, weight_decay = 0.01, 0.9, 5e-4
    params = make_params(1)
    w0 = [p.detach().numpy().copy() for p in params]
    grads = random_grads(2, iters)
    opt = CaffeSGD(groups_of(params), base_lr, momentum, weight_decay, lr_policy=policy, **kwargs)
    run(opt, params, grads)
    ref = reference_caffe_sgd(w0, grads, lambda it: caffe_rate(policy, it, base_lr, **kwargs),
                              momentum, weight_decay)
    for p, r in zip(params, ref):
        np.testing.assert_allclose(p.detach().numpy(), r, rtol=1e-9, atol=1e-12)
    assert opt.iter == iters
    np.testing.assert_array_equal(params[3].detach().numpy(), w0[3])   # lr_mult 0: never moves


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_every_policy_follows_caffe_formula(policy):
    kwargs = POLICIES[policy]
    opt = CaffeSGD([torch.nn.Parameter(torch.zeros(1))], 0.02, lr_policy=policy, **kwargs)
    for it in list(range(0, 40)) + list(range(95, 105)) + list(range(290, 310)) + \
            list(range(495, 505)) + list(range(1195, 1205)) + [1999, 2000]:
        assert opt.get_lr(it) == pytest.approx(caffe_rate(policy, it, 0.02, **kwargs),
                                               rel=1e-12, abs=0), it
    if policy == "multistep":   # stepvalues (300, 100, 100, 1200): steps at 300, 301, 302, 1200
        assert [opt.get_lr(i) / 0.02 for i in (100, 299, 300, 301, 302, 1199, 1200)] == \
            [1.0, 1.0, 0.5, 0.25, 0.125, 0.125, 0.0625]


def test_current_lr_and_group_lr_follow_the_iteration():
    p = torch.nn.Parameter(torch.zeros(2))
    q = torch.nn.Parameter(torch.zeros(2))
    opt = CaffeSGD([{"params": [p]}, {"params": [q], "lr_mult": 20.0, "decay_mult": 0.0}],
                   2e-5, gamma=0.3, stepsize=3)
    seen = []
    for _ in range(7):
        seen.append((opt.current_lr, opt.param_groups[1]["lr"]))
        p.grad, q.grad = torch.ones(2), torch.ones(2)
        opt.step()
    for it, (lr, group_lr) in enumerate(seen):
        assert lr == pytest.approx(2e-5 * 0.3 ** (it // 3))
        assert group_lr == pytest.approx(20 * lr)
    assert opt.param_groups[0]["lr_mult"] == 1.0 and opt.param_groups[0]["decay_mult"] == 1.0


def test_missing_grad_is_a_zero_diff():
    # Caffe updates every learnable blob: decay and momentum act on an unused parameter too.
    p = torch.nn.Parameter(torch.tensor([2.0], dtype=torch.float64))
    opt = CaffeSGD([p], 0.1, momentum=0.5, weight_decay=0.1, lr_policy="fixed")
    p.grad = torch.tensor([1.0], dtype=torch.float64)
    opt.step()                          # h = 0.1 * (1 + 0.2) = 0.12, w = 1.88
    p.grad = None
    opt.step()                          # h = 0.06 + 0.1 * 0.188 = 0.0788, w = 1.8012
    assert p.item() == pytest.approx(1.8012, rel=1e-14)


@pytest.mark.parametrize("policy, split", [("step", 700), ("multistep", 301)])
def test_resume_is_bit_exact(policy, split):
    # step: stepsize 300, resumed between two rate changes; multistep: resumed between the
    # steps Caffe takes at 300, 301 and 302 (one per iteration).
    kwargs = dict(POLICIES[policy], **({"stepsize": 300} if policy == "step" else {}))
    grads = random_grads(5, 1600, dtype=np.float32)

    def fresh(params):
        return CaffeSGD(groups_of(params), 0.01, 0.9, 5e-4, lr_policy=policy, **kwargs)

    straight = make_params(3, torch.float32)
    run(fresh(straight), straight, grads)

    first = make_params(3, torch.float32)
    opt = fresh(first)
    run(opt, first, grads[:split])
    buf = io.BytesIO()
    torch.save({"solver": opt.state_dict(), "w": [p.detach().clone() for p in first]}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    resumed = [torch.nn.Parameter(w) for w in saved["w"]]
    opt2 = fresh(resumed)
    opt2.load_state_dict(saved["solver"])
    assert opt2.iter == split and opt2.current_lr == opt.current_lr
    run(opt2, resumed, grads[split:])
    for a, b in zip(straight, resumed):
        assert torch.equal(a, b)


def test_load_state_dict_refuses_other_settings():
    p = torch.nn.Parameter(torch.zeros(3))
    opt = CaffeSGD([p], 0.01, gamma=0.3, stepsize=500)
    p.grad = torch.ones(3)
    opt.step()
    other = CaffeSGD([torch.nn.Parameter(torch.zeros(3))], 0.01, gamma=0.5, stepsize=500)
    with pytest.raises(ValueError, match="gamma"):
        other.load_state_dict(opt.state_dict())
    with pytest.raises(ValueError, match="CaffeSGD"):
        other.load_state_dict(torch.optim.SGD([p], lr=0.1).state_dict())
    # max_iter only shapes the "poly" policy: a longer run may resume a "step" one
    longer = CaffeSGD([torch.nn.Parameter(torch.zeros(3))], 0.01, gamma=0.3, stepsize=500,
                      max_iter=20000)
    longer.load_state_dict(opt.state_dict())
    assert longer.iter == 1


def test_torch_sgd_differs_after_a_step_change():
    """Why CaffeSGD exists: torch.optim.SGD scales the whole momentum buffer by the new rate."""
    base_lr, gamma, stepsize, iters = 0.01, 0.1, 50, 120
    grads = random_grads(7, iters)
    caffe_params, torch_params = make_params(8), make_params(8)
    caffe = CaffeSGD([{"params": [p]} for p in caffe_params], base_lr, 0.9, 5e-4,
                     gamma=gamma, stepsize=stepsize)
    plain = torch.optim.SGD(torch_params, lr=base_lr, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.StepLR(plain, step_size=stepsize, gamma=gamma)
    gaps = []
    for g in grads:
        for a, b, gi in zip(caffe_params, torch_params, g):
            a.grad, b.grad = torch.tensor(gi), torch.tensor(gi)
        caffe.step()
        plain.step()
        sched.step()
        gaps.append(max((a - b).abs().max().item() for a, b in zip(caffe_params, torch_params)))
    assert max(gaps[:stepsize]) < 1e-12            # constant rate: the same trajectory
    assert gaps[stepsize] > 1e-4                   # first update at the new rate differs


def test_errors_for_missing_policy_settings():
    p = [torch.nn.Parameter(torch.zeros(1))]
    cases = [(dict(lr_policy="step", gamma=0.1), "stepsize"),
             (dict(lr_policy="step", stepsize=10), "gamma"),
             (dict(lr_policy="step", gamma=0.1, stepsize=0), "stepsize > 0"),
             (dict(lr_policy="inv", gamma=0.1), "power"),
             (dict(lr_policy="multistep", gamma=0.1), "stepvalue"),
             (dict(lr_policy="poly", power=1.0), "max_iter"),
             (dict(lr_policy="sigmoid", gamma=0.1), "stepsize"),
             (dict(lr_policy="cosine"), "unknown lr_policy")]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            CaffeSGD(p, 0.01, **kwargs)
    with pytest.raises(ValueError, match="base_lr"):
        CaffeSGD(p, -1.0, lr_policy="fixed")
    with pytest.raises(ValueError, match="past max_iter"):
        learning_rate(11, 0.1, "poly", power=1.0, max_iter=10)
    assert learning_rate(10, 0.1, "poly", power=1.0, max_iter=10) == 0.0
    assert learning_rate(10**6, 0.1, "sigmoid", gamma=1.0, stepsize=1) == 0.1   # no overflow
    assert learning_rate(0, 0.1, "sigmoid", gamma=1.0, stepsize=10**6) == 0.0


def test_param_groups_carry_the_authors_multipliers():
    model = DHNNet("caffenet", bits=12, dropout=0.0)
    groups = caffe_param_groups(model)
    mults = {g["name"]: (g["lr_mult"], g["decay_mult"]) for g in groups}
    assert list(mults) == [n for n, _ in model.named_parameters()]
    assert all(len(g["params"]) == 1 for g in groups)
    for name, m in mults.items():
        layer, blob = name.split(".")
        want = {"weight": (1.0, 1.0), "bias": (2.0, 0.0)}[blob]
        if layer == "hash_layer":
            want = {"weight": (10.0, 1.0), "bias": (20.0, 0.0)}[blob]
        assert m == want, name
    opt = PRESETS["dhn-caffe"].make_optimizer(groups)
    assert opt.param_groups[-1]["name"] == "hash_layer.bias"
    assert opt.param_groups[-1]["lr"] == pytest.approx(20 * 2e-5)
    # overrides, and a DDP-style prefix still finds the hash layer
    wrapped = torch.nn.ModuleDict({"module": model})
    groups = caffe_param_groups(wrapped, lr_mults={"module.fc7.weight": (0.0, 0.0)})
    mults = {g["name"]: (g["lr_mult"], g["decay_mult"]) for g in groups}
    assert mults["module.fc7.weight"] == (0.0, 0.0)
    assert mults["module.hash_layer.weight"] == (10.0, 1.0)
    with pytest.raises(ValueError, match="fc8.weight"):
        caffe_param_groups(model, lr_mults={"fc8.weight": (1, 1)})


def test_presets_are_the_authors_settings():
    from reproduce.training.losses import LOSS_PRESETS, LossSettings
    dhn, hashc = PRESETS["dhn-caffe"], PRESETS["hash-caffe"]
    assert (dhn.base_lr, dhn.lr_policy, dhn.gamma, dhn.stepsize, dhn.max_iter, dhn.momentum,
            dhn.weight_decay, dhn.snapshot, dhn.batch_size, LOSS_PRESETS["dhn-caffe"].quant_weight) == \
        (2e-5, "step", 0.3, 500, 10000, 0.9, 5e-4, 1000, 64, 0.3)
    assert dataclasses.replace(dhn, gamma=0.5, max_iter=3000) == hashc
    assert LOSS_PRESETS["hash-caffe"] == dataclasses.replace(LossSettings(), quant_weight=0.2)
    assert SolverSettings() == dhn
    assert SolverSettings(**dhn.to_dict()) == dhn
    with pytest.raises(ValueError, match="stepsize"):
        SolverSettings(stepsize=None)
    with pytest.raises(ValueError, match="batch_size"):
        SolverSettings(batch_size=0)


AUTHORS_SOLVER = """\
# dhn-caffe solver for NUS-WIDE (official_settings.md, Solver)
net: "./models/DHN/nus_wide/train_val.prototxt"
test_iter: 100
test_interval: 100000
base_lr: 0.00002
lr_policy: "step"
gamma: 0.3
stepsize: 500
display: 100
max_iter: 10000
momentum: 0.9
weight_decay: 0.0005
snapshot: 1000
snapshot_prefix: "./models/DHN/nus_wide/DHN"   # comment after a value
solver_mode: GPU
"""


@pytest.fixture
def authors_solver(tmp_path):
    path = tmp_path / "solver.prototxt"
    path.write_text(AUTHORS_SOLVER)
    return path


def test_read_authors_solver_prototxt(authors_solver, tmp_path):
    assert read_solver_prototxt(authors_solver) == PRESETS["dhn-caffe"]
    hash_caffe = tmp_path / "hash.prototxt"
    hash_caffe.write_text(AUTHORS_SOLVER.replace("gamma: 0.3", "gamma: 0.5")
                          .replace("max_iter: 10000", "max_iter: 3000"))
    assert read_solver_prototxt(hash_caffe, defaults=PRESETS["hash-caffe"]) == PRESETS["hash-caffe"]


def test_read_other_policies_and_caffe_defaults(tmp_path):
    path = tmp_path / "multistep.prototxt"
    path.write_text("base_lr: 1e-3 lr_policy: 'multistep'  gamma: 0.1\n"
                    "stepvalue: 100\nstepvalue: 200 # second\nmax_iter: 300\n")
    s = read_solver_prototxt(path)
    assert (s.lr_policy, s.stepvalue, s.base_lr, s.gamma, s.max_iter) == \
        ("multistep", (100, 200), 1e-3, 0.1, 300)
    # keys the file leaves out take Caffe's proto defaults, not the authors' values
    assert (s.momentum, s.weight_decay, s.snapshot, s.display) == (0.0, 0.0, 0, 0)
    assert s.batch_size == 64


@pytest.mark.parametrize("text, where, message", [
    ("base_lr: 0.01\nlr_polcy: \"step\"\n", ":2:", "unknown solver key 'lr_polcy'"),
    ("base_lr 0.01\n", ":1:", "expected `key: value`"),
    ("base_lr: 0.01\nnet_param {\n", ":2:", "nested messages"),
    ("base_lr: 0.01\nbase_lr: 0.02\n", ":2:", "given twice"),
    ("stepsize: 5.5\n", ":1:", "not an integer"),
    ("base_lr: fast\n", ":1:", "not a number"),
    ("type: \"Adam\"\n", ":1:", "not supported"),
    ("iter_size: 2\n", ":1:", "not supported"),
    ("base_lr: 0.01\nlr_policy: \"step\"\nmax_iter: 10\n", ":2:", "needs gamma and stepsize"),
    ("base_lr: 0.01\nmax_iter: 10\n", ": ", "missing required key(s) lr_policy"),
])
def test_read_solver_prototxt_errors(tmp_path, text, where, message):
    path = tmp_path / "bad.prototxt"
    path.write_text(text)
    with pytest.raises(UserError) as err:
        read_solver_prototxt(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}{where}") and message in msg and "\n" not in msg, msg


def test_read_solver_prototxt_missing_file(tmp_path):
    with pytest.raises(UserError, match="cannot read"):
        read_solver_prototxt(tmp_path / "nope.prototxt")


def test_settings_beyond_caffes_types_are_refused():
    """SolverParameter's real fields are float32 and its counts int32 (caffe.proto); a config.json
    or solver.prototxt beyond them is refused as the command line is."""
    for kwargs, message in [(dict(base_lr=1e39), r"base_lr 1e\+39 is beyond float32"),
                            (dict(weight_decay=1e300), "weight_decay"),
                            (dict(gamma=1e39), "gamma"),
                            (dict(max_iter=2**31), r"max_iter must be an integer in 0..2147483647"),
                            (dict(stepsize=2**31), "stepsize"),
                            (dict(batch_size=4097), r"batch_size must be an integer in 1..4096"),
                            (dict(lr_policy="multistep", stepvalue=(2**31,)), "stepvalue")]:
        with pytest.raises(ValueError, match=message):
            SolverSettings(**kwargs)
    SolverSettings(base_lr=3.4e38, max_iter=2**31 - 1, batch_size=4096)      # the limits themselves


def test_a_rate_that_outgrows_float32_stops_the_step():
    """A growing schedule (step with gamma > 1, which Caffe allows) reaches a rate torch cannot
    apply to float32 weights: an OverflowError naming the iteration (the engine reports it as the
    run's one-line stop), not torch's RuntimeError in the middle of an update."""
    p = torch.nn.Parameter(torch.zeros(3))
    opt = CaffeSGD([{"params": [p], "lr_mult": 1.0, "decay_mult": 1.0}], 1.0, lr_policy="step",
                   gamma=1e20, stepsize=1)
    p.grad = torch.ones(3)
    opt.step()
    opt.step()                                       # rate 1e20: still a float32
    with pytest.raises(OverflowError, match="iteration 2 is beyond float32's range"):
        opt.step()                                   # rate 1e40
    assert opt.iter == 2


def _one_parameter_at_a_time(params, groups, rate, momentum, weight_decay, histories):
    """CaffeSGD's update as the loop it replaced, one parameter after the other (float32)."""
    for group, p in zip(groups, params):
        diff = p.grad if p.grad is not None else torch.zeros_like(p)
        if weight_decay * group["decay_mult"]:
            diff = diff.add(p, alpha=weight_decay * group["decay_mult"])
        histories[p].mul_(momentum).add_(diff, alpha=rate * group["lr_mult"])
        p.data.sub_(histories[p])


@pytest.mark.parametrize("foreach", [True, False])
def test_grouped_update_is_bitwise_the_per_parameter_loop(monkeypatch, foreach):
    """step() applies the same float32 operations to each parameter as a per-parameter loop,
    with many parameters sharing a rate or a decay (foreach calls over them on the CPU; the
    per-tensor calls the other devices take, forced here), a None grad, and rate changes of the
    step policy."""
    if not foreach:
        each = solver_module._each
        monkeypatch.setattr(solver_module, "_each", lambda op, cpu, *args, **kw: each(op, False, *args, **kw))
    gen = torch.Generator().manual_seed(0)
    shapes = [(7, 5), (5,), (1, 9), (1,)] * 6 + [(3, 3)]
    mults = [(1.0, 1.0), (2.0, 0.0), (10.0, 1.0), (20.0, 0.0)] * 6 + [(0.5, 3.0)]
    params = [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in shapes]
    mirror = [p.detach().clone() for p in params]
    groups = [{"params": [p], "lr_mult": lm, "decay_mult": dm} for p, (lm, dm) in zip(params, mults)]
    opt = CaffeSGD(groups, 0.01, lr_policy="step", gamma=0.3, stepsize=4)
    histories = {m: torch.zeros_like(m) for m in mirror}
    for it in range(13):
        for i, (p, m) in enumerate(zip(params, mirror)):
            g = None if i == 5 else torch.randn(p.shape, generator=gen)
            p.grad, m.grad = g, g
        _one_parameter_at_a_time(mirror, groups, opt.get_lr(), 0.9, 5e-4, histories)
        opt.step()
    for p, m in zip(params, mirror):
        assert torch.equal(p.detach().view(torch.int32), m.view(torch.int32))


def test_a_refused_step_updates_the_parameters_before_the_refused_one():
    """As the per-parameter loop did: the groups before the one whose rate overflows, or before
    a sparse gradient, are updated; the rest are not."""
    params = [torch.nn.Parameter(torch.zeros(2)) for _ in range(3)]
    opt = CaffeSGD([{"params": [params[0]], "lr_mult": 1.0}, {"params": [params[1]], "lr_mult": 1e39},
                    {"params": [params[2]], "lr_mult": 1.0}], 1.0, lr_policy="fixed", weight_decay=0)
    for p in params:
        p.grad = torch.ones(2)
    with pytest.raises(OverflowError):
        opt.step()
    assert params[0].tolist() == [-1.0, -1.0] and params[1].tolist() == params[2].tolist() == [0.0, 0.0]
    q = [torch.nn.Parameter(torch.zeros(2)) for _ in range(2)]
    opt = CaffeSGD([q[0], q[1]], 1.0, lr_policy="fixed", weight_decay=0)
    q[0].grad, q[1].grad = torch.ones(2), torch.ones(2).to_sparse()
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()
    assert q[0].tolist() == [-1.0, -1.0] and q[1].tolist() == [0.0, 0.0] and opt.iter == 0
