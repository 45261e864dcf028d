"""The training loop: batch order, cache, resume after SIGKILL, DDP = single process, the CLI."""
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from reproduce import train
from reproduce.data import batches, cache as image_cache, images
from reproduce.data.lists import read_list, write_list
from reproduce.errors import UserError
from reproduce.model.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from reproduce.model.nets import DHNNet
from reproduce.training import engine

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from train_worker import tiny_model  # noqa: E402


def make_images(root, n=24, num_labels=3, seed=0, size=(40, 30)):
    """n small PNG images whose colour depends on the label; returns the list path."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "img"), exist_ok=True)
    labels = np.zeros((n, num_labels), dtype=np.uint8)
    labels[np.arange(n), np.arange(n) % num_labels] = 1
    labels[rng.random((n, num_labels)) < 0.15] = 1
    paths = []
    for i in range(n):
        base = np.zeros((size[1], size[0], 3)) + 200 * labels[i, :3]
        img = np.clip(base + rng.normal(0, 30, base.shape), 0, 255).astype(np.uint8)
        paths.append(f"img/{i:03d}.png")
        Image.fromarray(img).save(os.path.join(root, paths[-1]))
    write_list(os.path.join(root, "train.txt"), paths, labels)
    return os.path.join(root, "train.txt")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("images"))
    return root, make_images(root)


def config(root, list_path, out, **over):
    argv = ["--train-list", list_path, "--root", root, "--weights", "unused.pth", "--arch", "caffenet",
            "--out", out, "--bits", "8", "--batch-size", "8", "--max-iter", "12", "--snapshot", "4",
            "--display", "1", "--workers", "0", "--base-lr", "0.01", "--stepsize", "5", "--quiet"]
    for k, v in over.items():
        argv += [f"--{k.replace('_', '-')}"] + ([] if v is True else [str(v)])
    args = train.get_args_parser().parse_args(argv)
    return train.config_from_args(args, ckpt={"arch": "caffenet"})


# ------------------------------------------------------------------------------- batch order

def test_batch_order_is_a_function_of_seed_and_iteration():
    order = batches.BatchOrder(10, 4, seed=3)
    stream = np.concatenate([order.batch(t)[0] for t in range(10)])   # 40 = 4 passes of 10
    for e in range(4):
        assert sorted(stream[10 * e:10 * (e + 1)]) == list(range(10))          # each pass a permutation
    assert not all((stream[:10] == stream[10 * e:10 * (e + 1)]).all() for e in range(1, 4))  # reshuffled
    again = batches.BatchOrder(10, 4, seed=3)
    for t in (7, 2, 9):                                                    # any order of asking
        for a, b in zip(order.batch(t), again.batch(t)):
            np.testing.assert_array_equal(a, b)
    _, offsets, mirror = order.batch(5)
    assert offsets.min() >= 0 and offsets.max() <= 29 and mirror.dtype == bool
    assert not np.array_equal(batches.BatchOrder(10, 4, seed=4).batch(0)[0], order.batch(0)[0])


def test_batch_order_indices_are_the_batches_indices():
    """indices(t) (no crop and mirror draws) is batch(t)[0], inside a pass, across passes and
    with batches longer than the list; writing into it does not change later batches."""
    for n, size in ((10, 4), (500, 64), (7, 16), (64, 64)):
        order = batches.BatchOrder(n, size, seed=2)
        for t in list(range(40)) + [10**6 + 3]:
            index = order.indices(t)
            assert index.dtype == np.int64
            np.testing.assert_array_equal(index, order.batch(t)[0])
            index[:] = -1
            np.testing.assert_array_equal(order.indices(t), order.batch(t)[0])


def test_batches_do_not_depend_on_workers_or_processes(dataset, tmp_path):
    root, list_path = dataset
    image_list = read_list(list_path)
    cache = image_cache.build_cache(image_list, root, str(tmp_path / "cache.h5"), workers=0, progress=False)
    order = batches.BatchOrder(len(image_list), 8, seed=1)
    mean = np.array([104, 117, 123], np.float32)
    whole = list(batches.make_loader(batches.TrainBatches(image_list, order, mean, 2, 6, cache_path=cache), workers=2))
    direct = [batches.TrainBatches(image_list, order, mean, 2, 6, root=root)[i] for i in range(4)]
    halves = [[batches.TrainBatches(image_list, order, mean, 2, 6, cache_path=cache, rank=r, world_size=2)[i]
               for r in (0, 1)] for i in range(4)]
    for (x, y, err), (xd, yd, _), parts in zip(whole, direct, halves):
        assert err == ""
        assert x.shape == (8, 3, 227, 227)
        torch.testing.assert_close(x, xd, rtol=0, atol=0)          # cache == decoding on the fly
        torch.testing.assert_close(x, torch.cat([p[0] for p in parts]), rtol=0, atol=0)
        torch.testing.assert_close(y, torch.cat([p[1] for p in parts]), rtol=0, atol=0)


def test_cache_is_resumable_and_bound_to_its_list(dataset, tmp_path):
    root, list_path = dataset
    image_list = read_list(list_path)
    cache = str(tmp_path / "c.h5")
    image_cache.build_cache(image_list.subset(range(3)), root, str(tmp_path / "other.h5"), workers=0, progress=False)
    # An interrupted build: a partial file with some images done.
    with pytest.raises(RuntimeError):
        with_failure = image_cache._ResizedImages.__getitem__
        calls = {"n": 0}

        def flaky(self, j):
            calls["n"] += 1
            if calls["n"] > 5:
                raise RuntimeError("killed")
            return with_failure(self, j)
        image_cache._ResizedImages.__getitem__ = flaky
        try:
            image_cache.build_cache(image_list, root, cache, workers=0, progress=False)
        finally:
            image_cache._ResizedImages.__getitem__ = with_failure
    assert not os.path.exists(cache) and os.path.exists(cache + ".partial")
    image_cache.build_cache(image_list, root, cache, workers=0, progress=False)
    with image_cache.open_cache(cache, image_list) as f:
        for i in (0, 7, len(image_list) - 1):
            np.testing.assert_array_equal(f["images"][i], images.load_resized(image_list, root, i))
    with pytest.raises(UserError, match="another list"):
        image_cache.open_cache(str(tmp_path / "other.h5"), image_list)


def test_missing_image_names_list_line_and_path(dataset, tmp_path):
    root, list_path = dataset
    bad = tmp_path / "bad.txt"
    bad.write_text(open(list_path).read() + "img/nothere.png 1 0 0\n")
    with pytest.raises(UserError, match=r"bad.txt:25: image .*nothere.png not found \(1 of 25"):
        images.check_images_exist(read_list(str(bad)), root)


# ------------------------------------------------------------------------------- training runs

def run_worker(cfg, path, **popen):
    with open(path, "w") as f:
        json.dump(cfg.to_dict(), f)
    return subprocess.Popen([sys.executable, os.path.join(HERE, "train_worker.py"), str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)


def final_weights(run_dir):
    return load_checkpoint(os.path.join(run_dir, "final.pth"))["state_dict"]


def test_resume_after_sigkill_is_bit_identical(dataset, tmp_path):
    root, list_path = dataset
    cache = str(tmp_path / "cache.h5")
    ref = config(root, list_path, str(tmp_path / "ref"), dropout=0.5, max_iter=40, cache=cache)
    engine.train(ref, model=tiny_model(8, 0.5), progress=False)
    cfg = dataclasses.replace(ref, out=str(tmp_path / "killed"))
    proc = run_worker(cfg, tmp_path / "cfg.json")
    deadline = time.time() + 120
    while not os.path.exists(os.path.join(cfg.out, "snapshot_iter_8.pth")) and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not os.path.exists(os.path.join(cfg.out, "final.pth")), "the run ended before it was killed"
    engine.train(cfg, model=tiny_model(8, 0.5, seed=99), resume=True, progress=False)
    a, b = final_weights(ref.out), final_weights(cfg.out)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    logs = [json.loads(line) for line in open(os.path.join(cfg.out, "log.jsonl"))]
    assert [r["iteration"] for r in logs] == list(range(1, 41))


@pytest.mark.parametrize("dropout", [0.0, 0.5])
def test_two_processes_equal_one(dataset, tmp_path, dropout):
    """2 gloo processes x 32 images = 1 process x 64 after 5 iterations, within float32
    rounding, also with dropout: the masks of the global batch come from one stream that both
    processes advance identically, each taking its rows (nets.SharedDropout)."""
    root, list_path = dataset
    cache = str(tmp_path / "cache.h5")
    one = config(root, list_path, str(tmp_path / "one"), dropout=dropout, batch_size=64, max_iter=5, cache=cache)
    engine.train(one, model=tiny_model(8, dropout), progress=False)
    two = dataclasses.replace(one, out=str(tmp_path / "two"))
    with open(tmp_path / "two.json", "w") as f:
        json.dump(two.to_dict(), f)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_port", "29517", os.path.join(HERE, "train_worker.py"),
                          str(tmp_path / "two.json")], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    a, b = final_weights(one.out), final_weights(two.out)
    for k in a:
        rel = (a[k] - b[k]).norm() / a[k].norm()
        assert rel <= 1e-5, (k, float(rel))
    assert not torch.equal(a["hash_layer.weight"], tiny_model(8, 0.0).hash_layer.weight)   # it trained


def test_shared_dropout_draws_the_global_batch_masks():
    """One process draws what nn.Dropout draws from torch's RNG in the same state (the masks of
    single-process runs are those of earlier versions, on CPU); with G processes, process r gets
    rows r*b ... (r+1)*b - 1 of the global batch's masks, for drop6 then drop7."""
    from reproduce.model.nets import SharedDropout, share_dropout_stream
    x6, x7 = torch.rand(64, 4096) + 0.5, torch.rand(64, 4096) + 0.5
    torch.manual_seed(5)
    plain = torch.nn.Dropout(0.5)
    want6, want7 = plain(x6), plain(x7)
    net = torch.nn.Sequential(SharedDropout(0.5), SharedDropout(0.5))
    share_dropout_stream(net, 5)
    assert torch.equal(net[0](x6), want6) and torch.equal(net[1](x7), want7)
    for rank in (0, 1):
        share_dropout_stream(net, 5, rank, 2)
        rows = slice(32 * rank, 32 * (rank + 1))
        assert torch.equal(net[0](x6[rows]), want6[rows]) and torch.equal(net[1](x7[rows]), want7[rows])
    net.eval()
    assert torch.equal(net[0](x6), x6)


def test_non_finite_loss_stops_with_the_iteration(dataset, tmp_path):
    root, list_path = dataset
    model = tiny_model(8, 0.0)
    calls = {"n": 0}

    def poison(module, inputs, output):
        calls["n"] += 1
        return output * float("nan") if calls["n"] == 7 else output
    model.register_forward_hook(poison)
    cfg = config(root, list_path, str(tmp_path / "nan"), cache="none")
    with pytest.raises(UserError, match=r"non-finite loss \(nan\) at iteration 6; .*snapshot_iter_4.pth"):
        engine.train(cfg, model=model, progress=False)
    assert os.path.exists(tmp_path / "nan" / "snapshot_iter_4.pth")


def cli(*argv):
    return subprocess.run([sys.executable, "-m", "reproduce.train", *argv], capture_output=True, text=True,
                          timeout=600)


def test_train_command_decreases_the_loss(random_caffenet, tmp_path):
    root = str(tmp_path)
    list_path = make_images(root, n=8)   # one batch of 8: the network can fit it in a few steps
    out = str(tmp_path / "run")
    train.main(["--train-list", list_path, "--root", root, "--weights", random_caffenet, "--bits", "12",
                "--out", out, "--batch-size", "8", "--max-iter", "10", "--snapshot", "5", "--display", "1",
                "--base-lr", "0.0002", "--dropout", "0", "--workers", "0", "--quiet", "--keep-snapshots", "1"])
    assert sorted(os.listdir(out)) == ["config.json", "final.pth", "log.jsonl", "snapshot_iter_10.pth",
                                       "train_cache.h5"]
    log = [json.loads(line) for line in open(os.path.join(out, "log.jsonl"))]
    assert set(log[0]) >= {"iteration", "lr", "total", "pair_loss", "quantization_loss",
                           "quantization_loss_caffe", "images_per_s"}
    assert np.mean([r["total"] for r in log[-3:]]) < 0.75 * log[0]["total"]
    ckpt = load_checkpoint(os.path.join(out, "final.pth"))
    model = model_from_checkpoint(ckpt, "final.pth")
    assert model.bits == 12 and ckpt["meta"]["config"]["solver"]["base_lr"] == 0.0002
    # An existing run is never clobbered.
    res = cli("--train-list", list_path, "--root", root, "--weights", random_caffenet, "--out", out, "--workers", "0")
    assert res.returncode == 2 and "already holds a training run" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize("case", ["labels", "missing", "arch", "bits"])
def test_bad_input_stops_before_training(dataset, random_caffenet, tmp_path, case):
    root, list_path = dataset
    list_path = str(list_path)
    args = ["--train-list", list_path, "--root", root, "--weights", random_caffenet, "--bits", "12",
            "--out", str(tmp_path / "run"), "--workers", "0"]
    expect = {"labels": "bad.txt:2: 2 labels, but earlier lines have 3",
              "missing": "bad.txt:3: image", "arch": "checkpoint is arch 'caffenet', but 'alexnet'",
              "bits": "hash_layer.weight has shape (12, 4096) (12 bits), but 16 bits"}[case]
    bad = tmp_path / "bad.txt"
    if case == "labels":
        bad.write_text("img/000.png 1 0 0\nimg/001.png 0 1\n")
        args[1] = str(bad)
    elif case == "missing":
        bad.write_text("img/000.png 1 0 0\nimg/001.png 0 1 0\nimg/gone.png 0 0 1\n")
        args[1] = str(bad)
    elif case == "arch":
        args += ["--arch", "alexnet"]
    else:
        dhn = str(tmp_path / "dhn.pth")
        save_checkpoint(dhn, DHNNet("caffenet", bits=12).state_dict(), "caffenet", 12)
        args[5] = dhn
        args[7] = "16"
    res = cli(*args)
    assert res.returncode == 2, res.stderr
    assert expect in res.stderr and "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not os.path.exists(tmp_path / "run")


def test_resume_of_a_run_from_an_older_version_is_refused(dataset, tmp_path):
    """A run folder whose config.json predates the RunConfig format (a flat dict of options) is
    refused with one line naming the file, before anything is written."""
    root, list_path = dataset
    run = tmp_path / "old"
    run.mkdir()
    old = {"train_list": list_path, "root": root, "base_lr": 0.01, "quant_weight": 0.3, "out": str(run)}
    (run / "config.json").write_text(json.dumps(old))
    (run / "snapshot_iter_4.pth").write_bytes(b"old")
    cfg = config(root, list_path, str(run), cache="none")
    with pytest.raises(UserError, match=r"config.json: not a run configuration of this version .*cannot be resumed"):
        engine.train(cfg, model=tiny_model(8, 0.0), resume=True, progress=False)
    assert sorted(os.listdir(run)) == ["config.json", "snapshot_iter_4.pth"]


def test_solver_prototxt_without_snapshot_or_display_trains_as_caffe(dataset, tmp_path):
    """A solver file without `snapshot` / `display` (Caffe's default 0: no periodic snapshot or
    display, solver.cpp Step) trains; only the final snapshot and log record are written (Caffe's
    Solve snapshots after training, snapshot_after_train: true)."""
    root, list_path = dataset
    solver = tmp_path / "solver.prototxt"
    solver.write_text('base_lr: 0.01\nlr_policy: "fixed"\nmax_iter: 5\nmomentum: 0.9\n')
    out = str(tmp_path / "run")
    args = train.get_args_parser().parse_args([
        "--train-list", list_path, "--root", root, "--weights", "unused.pth", "--arch", "caffenet",
        "--out", out, "--bits", "8", "--batch-size", "8", "--workers", "0", "--cache", "none",
        "--solver-prototxt", str(solver), "--quiet"])
    cfg = train.config_from_args(args, ckpt={"arch": "caffenet"})
    assert (cfg.solver.snapshot, cfg.solver.display, cfg.solver.max_iter) == (0, 0, 5)
    engine.train(cfg, model=tiny_model(8, 0.0), progress=False)
    assert sorted(n for n in os.listdir(out) if n.endswith(".pth")) == ["final.pth", "snapshot_iter_5.pth"]
    assert [json.loads(line)["iteration"] for line in open(os.path.join(out, "log.jsonl"))] == [5]
    # a value the file gives that the run refuses is named with the file and its line
    solver.write_text('base_lr: 0.01\nlr_policy: "fixed"\nmax_iter: 0\n')
    args.solver_prototxt = str(solver)
    with pytest.raises(UserError, match=rf"^{solver}:3: max_iter must be positive, got 0$"):
        train.config_from_args(args, ckpt={"arch": "caffenet"})


def test_single_process_dropout_masks_are_those_of_torchs_rng(dataset, tmp_path):
    """One process trains exactly as when drop7 was a plain nn.Dropout drawing from torch's RNG
    seeded with the run's seed (earlier versions): the masks did not change (on CPU)."""
    root, list_path = dataset
    runs = {}
    for kind in ("shared", "plain"):
        cfg = config(root, list_path, str(tmp_path / kind), dropout=0.5, max_iter=4, cache="none")
        model = tiny_model(8, 0.5)
        if kind == "plain":
            model.drop7 = torch.nn.Dropout(0.5)
        engine.train(cfg, model=model, progress=False)
        runs[kind] = final_weights(cfg.out)
    for k in runs["shared"]:
        assert torch.equal(runs["shared"][k], runs["plain"][k]), k
