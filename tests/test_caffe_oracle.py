"""The `caffe` tier: the package against real BVLC Caffe running the authors' PairwiseLoss layer.

Each test runs a task of tests/caffe/oracle.py under the Debian python3 that pycaffe was built for
(tests/caffe_oracle.py) and compares with the package. Without the built oracle every test here
skips with one line (CI builds it and requires it). The figures each test prints (pytest -s) are
the ones in README.md's "Checked against real Caffe".

Where both sides compute in float32 with different summation orders, "equal" means: the
package's float64 run is the reference, and Caffe's distance from it is of the size of the
package's own float32 distance from it (the float32 noise), layer by layer.
"""
import json

import numpy as np
import pytest
import torch

from caffe_oracle import run
from reproduce.caffe.caffe_format import read_caffemodel
from reproduce.caffe.caffe_net import caffe_to_state_dict, deploy_prototxt, train_val_prototxt
from reproduce.caffe.caffe_writer import write_caffemodel
from reproduce.data.transforms import MEAN_VALUE
from reproduce.model.nets import DHNNet
from reproduce.training.losses import DHNLoss
from reference import random_net_layers

pytestmark = pytest.mark.caffe

BITS = 12
LABELS = 5


def random_layers(bits=BITS, seed=2016):
    """{Caffe layer: [weight, bias]} float32 for conv1..fc7 + hash_layer, He-like scales."""
    return random_net_layers(bits, seed)


def pixels(n, seed=7):
    """n x 3 x 227 x 227 float32: 0-255 pixels minus the authors' BGR mean, as Caffe's data layer."""
    rng = np.random.default_rng(seed)
    return (rng.uniform(0, 255, (n, 3, 227, 227)) - np.array(MEAN_VALUE)[None, :, None, None]).astype(np.float32)


def multi_labels(n, c=LABELS, seed=3):
    """n x c 0/1 labels, some rows all zero, none all one (the authors' layer leaves pairs whose
    label inner product reaches c out; DHNLoss counts them: see README, Where we deviate)."""
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, c)) < 0.3).astype(np.float32)
    labels[labels.sum(1) == c, 0] = 0
    return labels


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A V1 caffemodel (the zoo's format) of random weights with a 12-bit hash layer."""
    folder = tmp_path_factory.mktemp("caffe_weights")
    layers = random_layers()
    path = folder / "random_v1.caffemodel"
    write_caffemodel(path, layers, fmt="v1")
    yield {"path": path, "layers": layers, "folder": folder}
    path.unlink()


def model_from(path, arch, dtype=torch.float32, dropout=0.5):
    state_dict, _ = caffe_to_state_dict(read_caffemodel(path), arch, str(path))
    model = DHNNet(arch, bits=BITS, dropout=dropout)
    model.load_state_dict(state_dict)
    return model.to(dtype)


def rel_max(a, b, scale):
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max() / scale)


# ----------------------------------------------------------------------------- 3. loss and backward
def test_pairwise_layer_gradient_check(tmp_path):
    """The CPU port of the authors' layer passes Caffe's gradient-checker rule (finite differences
    of its top value, stepsize 1e-2, |computed - estimated| <= 1e-3 * max(|.|, 1)), in the
    configuration where the gradient it applies is the derivative of the value it reports:
    q_gamma = 1/K, inner products below l_threshold."""
    n, k = 6, 8
    rng = np.random.default_rng(11)
    z = np.tanh(rng.standard_normal((n, k))).astype(np.float32)
    prototxt = tmp_path / "loss.prototxt"
    prototxt.write_text(
        'force_backward: true\n'   # the codes are an Input blob: Caffe backpropagates to it only then
        'layer { name: "data" type: "Input" top: "data" '
        f'input_param {{ shape: {{ dim: {n} dim: {k} }} }} }}\n'
        'layer { name: "label" type: "Input" top: "label" '
        f'input_param {{ shape: {{ dim: {n} dim: {LABELS} }} }} }}\n'
        'layer { name: "loss" type: "PairwiseLoss" bottom: "data" bottom: "label" top: "loss" '
        f'pairwise_param {{ l_threshold: 15 q_threshold: 15 l_lambda: 1 q_gamma: {1.0 / k} }} }}\n')
    out = run("gradient_check", tmp_path, {"prototxt": str(prototxt)},
              data=z, label=multi_labels(n, seed=5))
    computed, estimated = out["computed"], out["estimated"]
    scale = np.maximum(np.maximum(np.abs(computed), np.abs(estimated)), 1.0)
    worst = float((np.abs(computed - estimated) / scale).max())
    print(f"\nPairwiseLoss CPU port, gradient check over {z.size} elements: max |computed - "
          f"estimated| / max(|.|, 1) = {worst:.2e} (Caffe's threshold 1e-3)")
    assert np.abs(computed).max() > 1e-3          # a real gradient, not zeros
    assert worst <= 1e-3


@pytest.mark.parametrize("variant,quant_weight", [("DHN", 0.3), ("DHN-Q", 0.0)])
def test_loss_and_backward_match_caffe(weights, tmp_path, variant, quant_weight):
    """Loss value and every parameter gradient of one forward/backward of the authors' training net
    (dropout 0: no random masks) equal Caffe's up to float32 noise."""
    n = 8
    data, labels = pixels(n), multi_labels(n)
    prototxt = tmp_path / "train.prototxt"
    prototxt.write_text(train_val_prototxt("caffenet", BITS, n, LABELS, dropout=0.0,
                                           quant_weight=quant_weight))
    caffe = run("loss_backward", tmp_path, {"prototxt": str(prototxt), "weights": str(weights["path"]),
                                            "loss_blob": "pairwise_loss", "blobs": ["hash_layer"]},
                data=data, label=labels)
    ours = {}
    for dtype in (torch.float32, torch.float64):
        model = model_from(weights["path"], "caffenet", dtype, dropout=0.0).train()
        loss_fn = DHNLoss(quant_weight=quant_weight)
        z = model(torch.from_numpy(data).to(dtype))
        loss_fn(z, torch.from_numpy(labels)).backward()
        ours[dtype] = {"loss": loss_fn.last["total_caffe"], "z": z.detach().numpy(),
                       "grads": {name: p.grad.numpy().copy() for name, p in model.named_parameters()}}
    o32, o64 = ours[torch.float32], ours[torch.float64]
    assert 0.05 < np.abs(o64["z"]).mean() < 0.95           # codes not saturated
    assert abs(float(caffe["loss"]) - o64["loss"]) <= 1e-5 * max(1.0, abs(o64["loss"]))
    assert np.abs(caffe["blob/hash_layer"] - o64["z"]).max() <= 1e-5
    print(f"\n{variant}: loss caffe {float(caffe['loss']):.7f} ours64 {o64['loss']:.7f}; "
          "per parameter max|ours32-ours64| / max|ours64|  vs  max|caffe32-ours64| / max|ours64|")
    for name, g64 in o64["grads"].items():
        layer, part = name.split(".")
        g_caffe = caffe[f"diff/{layer}/{0 if part == 'weight' else 1}"].reshape(g64.shape)
        scale = float(np.abs(g64).max())
        assert scale > 0
        ours_err = rel_max(o32["grads"][name], g64, scale)
        caffe_err = rel_max(g_caffe, g64, scale)
        print(f"  {name:18s} {ours_err:.2e}   {caffe_err:.2e}")
        assert caffe_err <= 3 * ours_err + 1e-7, name


# ------------------------------------------------------------------------- 1. files Caffe writes/reads
@pytest.mark.parametrize("arch", ["caffenet", "alexnet"])
def test_files_caffe_writes_and_reads(weights, tmp_path, arch):
    """Caffe loads the package's V1 file (upgrading V1 on read) to exactly the weights the package
    converts from it; Caffe's own Net.save (V2 binary) and solver HDF5 snapshot convert back to
    exactly the weights Caffe held."""
    from reproduce.model.checkpoint import load_checkpoint
    from reproduce.model.pretrained import convert
    prototxt = tmp_path / "deploy.prototxt"
    prototxt.write_text(deploy_prototxt(arch, BITS))
    saved, prefix = tmp_path / "saved_v2.caffemodel", tmp_path / "snap"
    caffe = run("net_params", tmp_path, {"prototxt": str(prototxt), "weights": str(weights["path"]),
                                         "save": str(saved), "snapshot_prefix": str(prefix)})
    caffe_weights = {f"{layer}.{'weight' if i == '0' else 'bias'}": v
                     for key, v in caffe.items() for layer, i in [key[len("param/"):].split("/")]}
    h5 = tmp_path / "snap_iter_0.caffemodel.h5"
    assert saved.is_file() and h5.is_file()
    for source in (weights["path"], saved, h5):
        out = tmp_path / f"{source.name}.pth"
        convert(source, out, arch=arch, log=lambda *a: None)
        state_dict = load_checkpoint(out)["state_dict"]
        assert set(state_dict) == set(caffe_weights)
        for key, value in state_dict.items():
            np.testing.assert_array_equal(value.numpy(), caffe_weights[key].reshape(value.shape),
                                          err_msg=f"{source.name} {key}")
    print(f"\n{arch}: V1 (ours) -> Caffe, Caffe V2 Net.save -> ours, Caffe HDF5 snapshot -> ours: "
          f"{len(caffe_weights)} blobs, {sum(v.size for v in caffe_weights.values()):,} values bit-identical")


# ------------------------------------------------------------------------------------- 2. forward
@pytest.mark.parametrize("arch", ["caffenet", "alexnet"])
def test_forward_matches_caffe(weights, tmp_path, arch):
    """fc7 (after relu7/drop7) and the tanh codes of Caffe's TEST-phase forward equal DHNNet's."""
    n = 4
    data = pixels(n, seed=arch == "alexnet")
    prototxt = tmp_path / "deploy.prototxt"
    prototxt.write_text(deploy_prototxt(arch, BITS, batch=n))
    caffe = run("forward", tmp_path, {"prototxt": str(prototxt), "weights": str(weights["path"]),
                                      "blobs": ["fc7", "tanh"]}, data=data)
    model = model_from(weights["path"], arch).eval()
    with torch.no_grad():
        fc7 = model.features(torch.from_numpy(data))
        codes = model.hash(fc7)
    other = model_from(weights["path"], "alexnet" if arch == "caffenet" else "caffenet").eval()
    with torch.no_grad():
        wrong = other(torch.from_numpy(data)).numpy()
    fc7_err = rel_max(fc7, caffe["blob/fc7"], np.abs(caffe["blob/fc7"]).max())
    code_err = rel_max(codes, caffe["blob/tanh"], np.abs(caffe["blob/tanh"]).max())
    wrong_err = rel_max(wrong, caffe["blob/tanh"], np.abs(caffe["blob/tanh"]).max())
    print(f"\n{arch} forward: max relative |ours - caffe| fc7 {fc7_err:.1e}, codes {code_err:.1e} "
          f"(the other arch: {wrong_err:.1e})")
    assert 0.2 < np.abs(caffe["blob/tanh"]).mean() < 0.9
    assert fc7_err <= 1e-4 and code_err <= 1e-4
    assert wrong_err > 1e-2


# --------------------------------------------------------------- the authors' training prototxt
def _without_data_layers(text):
    """Drop the `layer { ... }` blocks of type ImageData / MultiLabelData (their multi-label
    fields, e.g. label_dim, exist only in the authors' Caffe forks)."""
    out, depth, block = [], 0, []
    for line in text.splitlines(keepends=True):
        if depth == 0 and line.strip().startswith("layer"):
            block = []
        if depth or line.strip().startswith("layer"):
            block.append(line)
            depth += line.count("{") - line.count("}")
            if depth == 0:
                joined = "".join(block)
                if '"ImageData"' not in joined and '"MultiLabelData"' not in joined:
                    out.append(joined)
            continue
        out.append(line)
    return "".join(out)


def test_train_val_prototxt_is_the_authors(tmp_path):
    """reproduce.caffe.caffe_net.train_val_prototxt parses (by Caffe) to the authors' dhn-caffe
    models/nus_wide/train_val.prototxt, layer for layer — names, types, bottoms, tops, lr_mult /
    decay_mult, every layer parameter — but for the data layer (Input layers here) and the fillers
    (the weights are loaded). The authors' file is not part of this project: point
    $REPRODUCE_AUTHORS_TRAIN_VAL at it (e.g. `git show HEAD:models/nus_wide/train_val.prototxt` of
    zhuhan1236/dhn-caffe); without it the test skips."""
    import os
    authors = os.environ.get("REPRODUCE_AUTHORS_TRAIN_VAL")
    if not authors or not os.path.isfile(authors):
        pytest.skip("set REPRODUCE_AUTHORS_TRAIN_VAL to the authors' train_val.prototxt to compare")
    theirs = tmp_path / "authors.prototxt"
    with open(authors) as f:
        theirs.write_text(_without_data_layers(f.read()))
    ours = tmp_path / "ours.prototxt"
    ours.write_text(train_val_prototxt("caffenet", bits=48, label_dim=21))
    parsed = run("parse_net", tmp_path, {"files": {"theirs": str(theirs), "ours": str(ours)}})

    def layers(key):
        found = []
        for layer in json.loads(str(parsed[key]))["layer"]:
            if layer["type"] == "Input":
                continue
            for spec in layer.values():
                if isinstance(spec, dict):
                    spec.pop("weightFiller", None)
                    spec.pop("biasFiller", None)
            found.append(layer)
        return found

    assert layers("ours") == layers("theirs")
    print(f"\ntrain_val_prototxt == the authors' train_val.prototxt: {len(layers('ours'))} layers")


# -------------------------------------------------------------------------------------- 4. solver
SOLVER_STEPS = 20
# One setting per Caffe lr policy, with its schedule changing within the 20 steps (sgd_solver.cpp
# GetLearningRate); momentum and weight decay are the authors'.
POLICIES = {
    "fixed": {},
    "step": dict(gamma=0.3, stepsize=5),
    "exp": dict(gamma=0.9),
    "inv": dict(gamma=0.2, power=0.75),
    "multistep": dict(gamma=0.3, stepvalue=(3, 8, 14)),
    "poly": dict(power=2.0, max_iter=25),
    "sigmoid": dict(gamma=0.5, stepsize=10),
}
SOLVER_BASE = dict(base_lr=1e-6, momentum=0.9, weight_decay=5e-4)


def solver_prototxt(net, policy, settings):
    lines = [f'net: "{net}"', f'lr_policy: "{policy}"', "display: 0", "type: \"SGD\""]
    lines += [f"{k}: {v}" for k, v in SOLVER_BASE.items()]
    lines.append(f"max_iter: {settings.get('max_iter', 100)}")
    for key, value in settings.items():
        if key == "stepvalue":
            lines += [f"stepvalue: {v}" for v in value]
        elif key != "max_iter":
            lines.append(f"{key}: {value}")
    return "\n".join(lines) + "\n"


def sample_indices(layers, rng, per_blob=4096):
    """Flat indices of the parameters followed: every value of a blob of <= 50k values (every bias,
    the hash layer), a fixed random sample of the others. Caffe's update is elementwise, so the
    followed values of a blob evolve exactly as they do inside the whole blob."""
    return {f"{layer}/{i}": (np.arange(blob.size) if blob.size <= 50_000
                             else np.sort(rng.choice(blob.size, per_blob, replace=False)))
            for layer, blobs in layers.items() for i, blob in enumerate(blobs)}


def followed_model(caffe, index, dtype):
    """A module whose parameters are the followed values, under the network's parameter names
    (conv1.weight ...), so that caffe_param_groups gives them the package's multipliers."""
    model = torch.nn.Module()
    for key in index:
        layer, i = key.split("/")
        if not hasattr(model, layer):
            model.add_module(layer, torch.nn.Module())
        value = torch.from_numpy(caffe[f"step0/param/{key}"]).to(dtype)
        setattr(getattr(model, layer), "weight" if i == "0" else "bias", torch.nn.Parameter(value))
    return model


@pytest.mark.parametrize("policy", list(POLICIES))
def test_solver_matches_caffe_sgd(weights, tmp_path, policy):
    """Real caffe.SGDSolver on the authors' training net — lr_mult / decay_mult as Caffe parsed them
    from the prototxt — against CaffeSGD with caffe_param_groups: 20 steps on one fixed batch. At
    every step CaffeSGD is given the gradients Caffe computed (its forward/backward is
    test_loss_and_backward_match_caffe's subject: here a ReLU or max-pool decision flipped by
    float32 rounding would change a whole layer's gradient), and its parameters must equal Caffe's
    after the update up to float32 rounding, measured as there: |caffe32 - ours64| beside
    |ours32 - ours64|; and ours32 itself must be Caffe's to within one float32 ulp."""
    from reproduce.training.solver import SolverSettings, caffe_param_groups
    n = 2
    net = tmp_path / "train.prototxt"
    net.write_text(train_val_prototxt("caffenet", BITS, n, LABELS, dropout=0.0))
    solver_file = tmp_path / "solver.prototxt"
    solver_file.write_text(solver_prototxt(net, policy, POLICIES[policy]))
    index = sample_indices(weights["layers"], np.random.default_rng(1))
    caffe = run("solver", tmp_path, {"solver": str(solver_file), "weights": str(weights["path"]),
                                     "steps": SOLVER_STEPS, "loss_blob": "pairwise_loss"},
                data=pixels(n, seed=5), label=multi_labels(n, seed=6),
                **{f"index/{k}": v for k, v in index.items()})
    assert int(caffe["iter"]) == SOLVER_STEPS
    settings = SolverSettings(lr_policy=policy, **SOLVER_BASE, **dict(
        dict(gamma=None, stepsize=None, max_iter=100), **POLICIES[policy]))
    models = {dtype: followed_model(caffe, index, dtype) for dtype in (torch.float32, torch.float64)}
    optimizers = {dtype: settings.make_optimizer(caffe_param_groups(m)) for dtype, m in models.items()}
    worst = (0.0, 0.0, 0.0)
    for step in range(1, SOLVER_STEPS + 1):
        values = {}
        for dtype, model in models.items():
            for name, param in model.named_parameters():
                key = f"{name.split('.')[0]}/{0 if name.endswith('weight') else 1}"
                param.grad = torch.from_numpy(caffe[f"step{step}/grad/{key}"]).to(dtype)
            optimizers[dtype].step()
            values[dtype] = {name: p.detach().numpy() for name, p in model.named_parameters()}
        for name, o64 in values[torch.float64].items():
            key = f"{name.split('.')[0]}/{0 if name.endswith('weight') else 1}"
            assert (o64 != caffe[f"step{step - 1}/param/{key}"]).any(), (step, name)   # it moved
            # distances in units of float32's spacing at the blob's largest value (ulps)
            ulp = float(np.spacing(np.float32(np.abs(o64).max())))
            c32, o32 = caffe[f"step{step}/param/{key}"], values[torch.float32][name]
            ours_err = float(np.abs(o32 - o64).max()) / ulp
            caffe_err = float(np.abs(c32 - o64).max()) / ulp
            apart = float(np.abs(c32 - o32).max()) / ulp
            # the same float32 operations in the same order: measured bit-identical here (0 ulps)
            assert apart <= 1, (policy, step, name, apart)
            worst = max(worst, (caffe_err, ours_err, apart))

    losses = caffe["losses"]
    print(f"\nsolver {policy}: {SOLVER_STEPS} steps, Caffe's loss {np.round(losses, 3)}; "
          f"largest max|caffe32-ours64| {worst[0]:.1f} beside max|ours32-ours64| {worst[1]:.1f}, "
          f"max|caffe32-ours32| {worst[2]:.1f} (float32 ulps of each blob's largest value)")


# --------------------------------------------------------------------------- 5-7. image pipelines
SKIMAGE_DATA = "/usr/lib/python3/dist-packages/skimage/data"   # Debian python3-skimage (test-only)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Real photographs and images of many kinds: every PNG, JPEG and TIFF of scikit-image's data
    folder that decodes (grey, RGB, RGBA, palette, 1-bit, 16-bit TIFF; 3x5 to 1411x1411 px), plus
    variants made from them: 28 x 28 RGB PNG and grey JPEG, 16-bit grey PNG, grey+alpha PNG,
    palette PNG with transparency, CMYK JPEG, and a 1200 x 900 JPEG."""
    import glob
    import os
    from PIL import Image
    found = []
    for path in sorted(glob.glob(os.path.join(SKIMAGE_DATA, "*"))):
        if not path.endswith((".png", ".jpg", ".tif")):
            continue
        try:
            with Image.open(path) as im:
                im.load()
        except Exception:
            continue                     # truncated.jpg, multipage_rgb.tif: not images
        found.append(path)
    if len(found) < 20:
        pytest.skip(f"scikit-image's data folder {SKIMAGE_DATA} is missing (Debian python3-skimage)")
    folder = tmp_path_factory.mktemp("photos")
    astronaut = Image.open(os.path.join(SKIMAGE_DATA, "astronaut.png"))
    moon = np.asarray(Image.open(os.path.join(SKIMAGE_DATA, "moon.png")))
    made = {
        "small_rgb.png": astronaut.resize((28, 28), Image.BILINEAR),
        "small_grey.jpg": astronaut.convert("L").resize((28, 28), Image.BILINEAR),
        "grey_alpha.png": astronaut.convert("LA").resize((300, 200)),
        "palette_transparent.png": astronaut.convert("P").resize((120, 90)),
        "cmyk.jpg": astronaut.convert("CMYK").resize((256, 300)),
        "large.jpg": astronaut.resize((1200, 900), Image.BICUBIC),
    }
    made["palette_transparent.png"].info["transparency"] = 0
    for name, im in made.items():
        kwargs = {"transparency": 0} if name == "palette_transparent.png" else {}
        im.save(folder / name, **kwargs)
        found.append(str(folder / name))
    deep = Image.fromarray(moon.astype(np.uint16) * 257 + np.arange(moon.shape[1], dtype=np.uint16))
    deep.save(folder / "grey16.png")
    found.append(str(folder / "grey16.png"))
    return found


def image_data_prototxt(source, batch, phase):
    mirror = "true" if phase == "TRAIN" else "false"
    return ('layer { name: "data" type: "ImageData" top: "data" top: "label"\n'
            f'  transform_param {{ mirror: {mirror} crop_size: 227 '
            'mean_value: 104 mean_value: 117 mean_value: 123 }\n'
            f'  image_data_param {{ source: "{source}" batch_size: {batch} shuffle: false '
            'new_height: 256 new_width: 256 } }\n')


@pytest.mark.filterwarnings("ignore:Palette images")
def test_test_transform_matches_image_data_layer(photos, tmp_path):
    """Caffe's ImageData layer in the TEST phase (the authors' transform_param) and
    reproduce.data.transforms.load_test_image give bit-identical blobs on every photograph."""
    from PIL import Image
    from reproduce.data.transforms import load_test_image
    source = tmp_path / "list.txt"
    source.write_text("".join(f"{p} 0\n" for p in photos))
    prototxt = tmp_path / "data.prototxt"
    prototxt.write_text(image_data_prototxt(source, len(photos), "TEST"))
    caffe = run("image_data", tmp_path, {"prototxt": str(prototxt), "phase": "TEST", "batches": 1})
    kinds = set()
    for path, blob in zip(photos, caffe["data"]):
        np.testing.assert_array_equal(load_test_image(path), blob, err_msg=path)
        with Image.open(path) as im:
            kinds.add((im.format, im.mode))
    sizes = [Image.open(p).size for p in photos]
    print(f"\nTEST transform: {len(photos)} images bit-identical ({len(kinds)} format/mode kinds: "
          f"{', '.join(sorted(f'{f} {m}' for f, m in kinds))}; {min(map(min, sizes))} to "
          f"{max(map(max, sizes))} px)")


def test_train_transform_matches_image_data_layer(photos, tmp_path):
    """Every TRAIN-phase blob of Caffe's ImageData layer (random crop 227 and mirror) is the
    package's crop of the same resized image at one (h_off, w_off, mirror) in 0..29 x 0..29 x
    {no, yes}; over 400 draws the offsets and flips are consistent with uniform (chi-square)."""
    from scipy import stats
    from reproduce.data.transforms import MEAN_VALUE, crop_and_subtract, read_image_bgr, resize_linear
    chosen = [p for p in photos if p.endswith(("astronaut.png", "coffee.png", "rocket.jpg", "chelsea.png"))]
    assert len(chosen) == 4
    source = tmp_path / "list.txt"
    source.write_text("".join(f"{p} 0\n" for p in chosen))
    prototxt = tmp_path / "data.prototxt"
    prototxt.write_text(image_data_prototxt(source, len(chosen), "TRAIN"))
    draws = 100
    caffe = run("image_data", tmp_path, {"prototxt": str(prototxt), "phase": "TRAIN",
                                         "batches": draws, "seed": 2016})
    resized = [resize_linear(read_image_bgr(p)) for p in chosen]
    found = []
    for i, blob in enumerate(caffe["data"]):
        img = resized[i % len(chosen)]
        matches = [(h, w, m) for m in (False, True) for h in range(30) for w in range(30)
                   if blob[0, 0, 0] == np.float32(img[h, w + 226 if m else w, 0]) - np.float32(MEAN_VALUE[0])
                   and np.array_equal(crop_and_subtract(img, h, w, MEAN_VALUE, mirror=m), blob)]
        assert len(matches) == 1, (i, matches)
        found.append(matches[0])
    h, w, m = (np.array(v) for v in zip(*found))
    p_h = stats.chisquare(np.bincount(h, minlength=30)).pvalue
    p_w = stats.chisquare(np.bincount(w, minlength=30)).pvalue
    p_m = stats.binomtest(int(m.sum()), len(m)).pvalue
    print(f"\nTRAIN transform: {len(found)} Caffe blobs, each equal to exactly one of the package's "
          f"1,800 crops; uniformity p-values: h_off {p_h:.2f}, w_off {p_w:.2f}, mirror {p_m:.2f}")
    assert min(p_h, p_w, p_m) > 0.001


PREDICT_IMAGES = ("astronaut.png", "camera.png", "logo.png", "palette_color.png", "green_palette.png",
                  "chessboard_GRAY_U16.tif", "checker_bilevel.png", "retina.jpg", "rocket.jpg",
                  "small_rgb.png", "small_grey.jpg", "grey16.png", "grey_alpha.png", "cmyk.jpg")


@pytest.mark.filterwarnings("ignore:Palette images")
@pytest.mark.parametrize("oversample", [False, True], ids=["centre", "oversample"])
def test_pycaffe_pipeline_matches_classifier_predict(photos, weights, tmp_path, oversample):
    """`encode --pipeline pycaffe` (reproduce.data.pycaffe_pipeline) against real pycaffe:
    caffe.io.load_image + caffe.Classifier(image_dims 256, raw_scale 255, channel_swap (2,1,0),
    mean = ilsvrc_2012_mean.npy averaged per channel).predict(oversample=...), as the authors'
    predict scripts, with scikit-image's anti-aliasing off (as in 2016): the decoded images, the
    network inputs and the codes agree to float precision. Also measures how far the two pipelines'
    codes are apart on the same images."""
    from reproduce.data.pycaffe_pipeline import ILSVRC_2012_MEAN_BGR, load_image, predict_inputs
    from reproduce.data.transforms import load_test_image, oversample as ten_crops, resize_linear, read_image_bgr
    chosen = [p for name in PREDICT_IMAGES for p in photos if p.endswith("/" + name)]
    assert len(chosen) == len(PREDICT_IMAGES)
    crops = 10 if oversample else 1
    prototxt = tmp_path / "deploy.prototxt"
    prototxt.write_text(deploy_prototxt("caffenet", BITS, batch=crops * len(chosen)))
    caffe = run("pycaffe_predict", tmp_path, {"prototxt": str(prototxt), "weights": str(weights["path"]),
                                              "mean": list(ILSVRC_2012_MEAN_BGR), "images": chosen,
                                              "oversample": oversample})
    loaded = np.concatenate([load_image(p).ravel() for p in chosen])
    assert np.abs(loaded - caffe["loaded"]).max() <= 1e-7
    inputs = np.concatenate([predict_inputs(p, oversample=oversample) for p in chosen])
    input_err = float(np.abs(inputs - caffe["data"]).max())
    model = model_from(weights["path"], "caffenet").eval()
    with torch.no_grad():
        codes = model(torch.from_numpy(inputs)).view(len(chosen), crops, BITS).mean(1).numpy()
        if oversample:
            imagedata = np.stack([ten_crops(resize_linear(read_image_bgr(p))) for p in chosen])
        else:
            imagedata = np.stack([load_test_image(p)[None] for p in chosen])
        other = model(torch.from_numpy(imagedata.reshape(-1, 3, 227, 227))).view(
            len(chosen), crops, BITS).mean(1).numpy()
    code_err = float(np.abs(codes - caffe["codes"]).max())
    input_apart = np.abs(imagedata.reshape(inputs.shape) - caffe["data"])
    apart = float(np.abs(other - caffe["codes"]).max())
    flipped = float(np.mean(np.sign(other) != np.sign(caffe["codes"])))
    print(f"\npycaffe pipeline ({'10 crops' if oversample else 'centre crop'}), {len(chosen)} images: "
          f"max |ours - pycaffe| decoded {np.abs(loaded - caffe['loaded']).max():.1e}, network input "
          f"{input_err:.1e} (0-255 scale), codes {code_err:.1e}; ImageData pipeline vs pycaffe: "
          f"network input mean |Δ| {input_apart.mean():.2f}, max {input_apart.max():.0f}; "
          f"max |Δcode| {apart:.3f}, {100 * flipped:.1f}% of bits of another sign (random weights)")
    assert input_err <= 1e-3
    assert code_err <= 1e-5
