"""The encode command: codes equal the network run on OpenCV's image pipeline; HDF5 layout; errors."""
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from reproduce.cli import run_cli
from reproduce.data.lists import read_list
from reproduce.encode import main
from reproduce.errors import UserError
from reproduce.evaluation.encoding import EncodeSettings, encode_list
from reproduce.model.checkpoint import save_checkpoint
from reproduce.model.nets import DHNNet

cv2 = pytest.importorskip("cv2")
BITS = 12
MEAN = np.array([104, 117, 123], np.float32).reshape(3, 1, 1)
LIST = ["a.jpg 1 0 1", "sub/b.png 0 1 0", "c.png 0 0 1", "d.jpg 1 1 0"]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return DHNNet("caffenet", bits=BITS).eval()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, model):
    """A checkpoint (random weights, 12 bits), four images of mixed kinds and a list."""
    d = tmp_path_factory.mktemp("encode")
    rng = np.random.default_rng(0)
    (d / "imgs" / "sub").mkdir(parents=True)
    smooth = np.clip(np.cumsum(rng.integers(-6, 7, (375, 500, 3)), axis=1) + 128, 0, 255).astype(np.uint8)
    Image.fromarray(smooth).save(d / "imgs" / "a.jpg", quality=90)
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(d / "imgs" / "sub" / "b.png")
    Image.fromarray(rng.integers(0, 256, (256, 256), dtype=np.uint8)).save(d / "imgs" / "c.png")
    Image.fromarray(smooth[:200, :300]).save(d / "imgs" / "d.jpg", quality=80)
    (d / "list.txt").write_text("\n".join(LIST) + "\n")
    save_checkpoint(d / "ckpt.pth", model.state_dict(), "caffenet", BITS)
    return d


def opencv_blobs(root, paths, ten_crops=False):
    """Caffe's TEST input computed with OpenCV: imread, resize 256, centre crop (or 10 crops), mean."""
    blobs = []
    for p in paths:
        img = cv2.resize(cv2.imread(os.path.join(root, p), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION),
                         (256, 256), interpolation=cv2.INTER_LINEAR)
        chw = img.transpose(2, 0, 1).astype(np.float32) - MEAN
        if not ten_crops:
            blobs.append(chw[None, :, 14:241, 14:241])
            continue
        crops = [chw[:, i:i + 227, j:j + 227] for i in (0, 29) for j in (0, 29)] + [chw[:, 14:241, 14:241]]
        blobs.append(np.stack(crops + [c[:, :, ::-1] for c in crops]))
    return torch.from_numpy(np.ascontiguousarray(np.stack(blobs)))     # N x crops x 3 x 227 x 227


def expected(model, blobs):
    """(codes, fc7) of the network on the blobs, averaged over the crops of each image."""
    n = blobs.shape[0]
    with torch.no_grad():
        fc7 = model.features(blobs.flatten(0, 1))
        codes = model.hash(fc7).view(n, -1, BITS).mean(1).numpy() if model.bits else None
    return codes, fc7.view(n, -1, 4096).mean(1).numpy()


def test_encode_command_matches_opencv_pipeline(dataset, model):
    out = dataset / "codes.h5"
    main(["--checkpoint", str(dataset / "ckpt.pth"), "--list", str(dataset / "list.txt"),
          "--root", str(dataset / "imgs"), "--out", str(out), "--features", "--workers", "0",
          "--batch-size", "3", "--device", "cpu"])
    paths = [line.split()[0] for line in LIST]
    codes, fc7 = expected(model, opencv_blobs(dataset / "imgs", paths))
    with h5py.File(out, "r") as f:
        assert f["codes"].dtype == np.float32 and f["codes"].shape == (4, BITS)
        np.testing.assert_allclose(f["codes"][:], codes, rtol=1e-5, atol=1e-6)
        assert np.abs(codes).min() > 1e-3          # the comparison is not between near-zeros
        assert f["features"].dtype == np.float32 and f["features"].shape == (4, 4096)
        np.testing.assert_allclose(f["features"][:], fc7, rtol=1e-5, atol=1e-5)
        assert (f["features"][:] >= 0).all()       # after relu7
        np.testing.assert_array_equal(f["labels"][:], [[int(v) for v in line.split()[1:]] for line in LIST])
        assert f["labels"].dtype == np.uint8
        assert [p.decode() for p in f["paths"][:]] == paths
        a = dict(f.attrs)
    assert a["arch"] == "caffenet" and a["bits"] == BITS and a["transform"] == "center-crop-227"
    np.testing.assert_array_equal(a["mean"], [104, 117, 123])
    assert a["checkpoint"] == str(dataset / "ckpt.pth") and a["list"] == str(dataset / "list.txt")
    import hashlib
    assert a["checkpoint_sha1"] == hashlib.sha1((dataset / "ckpt.pth").read_bytes()).hexdigest()
    with pytest.raises(UserError, match="already exists"):
        main(["--checkpoint", str(dataset / "ckpt.pth"), "--list", str(dataset / "list.txt"),
              "--root", str(dataset / "imgs"), "--out", str(out)])


def test_oversample_with_workers_matches_opencv_ten_crops(dataset, model, tmp_path):
    image_list = read_list(dataset / "list.txt").subset([0, 1, 3])
    out = encode_list(model, image_list, dataset / "imgs", tmp_path / "ten.h5",
                      EncodeSettings(batch_size=20, oversample=True, workers=2, device="cpu"), progress=False,
                      attrs={"split": "query"})
    codes, _ = expected(model, opencv_blobs(dataset / "imgs", image_list.paths, ten_crops=True))
    with h5py.File(out, "r") as f:
        np.testing.assert_allclose(f["codes"][:], codes, rtol=1e-5, atol=1e-6)
        assert f.attrs["transform"] == "oversample-10" and f.attrs["split"] == "query"
        assert "features" not in f
    centre, _ = expected(model, opencv_blobs(dataset / "imgs", image_list.paths))
    assert np.abs(codes - centre).max() > 1e-4     # 10 crops are not the centre crop


def test_mean_file_is_subtracted_at_the_crop(dataset, model, tmp_path):
    caffe_format = pytest.importorskip("reproduce.caffe.caffe_format")
    from reproduce.caffe import caffe_writer
    rng = np.random.default_rng(3)
    mean = (rng.random((3, 256, 256)) * 255).astype(np.float32)
    caffe_writer.write_binaryproto(tmp_path / "mean.binaryproto", mean[None])
    np.save(tmp_path / "mean.npy", mean.astype(np.float64))
    (tmp_path / "list.txt").write_text(LIST[0] + "\n")
    img = cv2.resize(cv2.imread(str(dataset / "imgs" / "a.jpg"), cv2.IMREAD_COLOR), (256, 256))
    blob = img.transpose(2, 0, 1)[:, 14:241, 14:241] - mean[:, 14:241, 14:241]
    codes, _ = expected(model, torch.from_numpy(np.ascontiguousarray(blob[None, None])))
    main(["--checkpoint", str(dataset / "ckpt.pth"), "--list", str(tmp_path / "list.txt"),
          "--root", str(dataset / "imgs"), "--out", str(tmp_path / "out.h5"),
          "--mean-file", str(tmp_path / "mean.binaryproto"), "--workers", "0"])
    encode_list(model, read_list(tmp_path / "list.txt"), dataset / "imgs", tmp_path / "npy.h5",
                EncodeSettings(mean=caffe_format.read_mean(tmp_path / "mean.npy"), workers=0), progress=False)
    for out in ("out.h5", "npy.h5"):
        with h5py.File(tmp_path / out, "r") as f:
            np.testing.assert_allclose(f["codes"][:], codes, rtol=1e-5, atol=1e-6)
    with h5py.File(tmp_path / "out.h5", "r") as f:
        assert f.attrs["mean_file"] == str(tmp_path / "mean.binaryproto")
    np.save(tmp_path / "small.npy", mean[:, :255, :255])
    with pytest.raises(UserError, match="small.npy"):
        main(["--checkpoint", str(dataset / "ckpt.pth"), "--list", str(tmp_path / "list.txt"),
              "--root", str(dataset / "imgs"), "--out", str(tmp_path / "x.h5"),
              "--mean-file", str(tmp_path / "small.npy")])


def test_model_without_hash_layer_encodes_features_only(dataset, tmp_path):
    torch.manual_seed(1)
    imagenet = DHNNet("alexnet", bits=0).eval()
    image_list = read_list(dataset / "list.txt").subset([2])
    with pytest.raises(UserError, match="--features"):
        encode_list(imagenet, image_list, dataset / "imgs", tmp_path / "f.h5", EncodeSettings(workers=0), progress=False)
    assert not (tmp_path / "f.h5").exists()
    encode_list(imagenet, image_list, dataset / "imgs", tmp_path / "f.h5", EncodeSettings(features=True, workers=0),
                progress=False)
    _, fc7 = expected(imagenet, opencv_blobs(dataset / "imgs", image_list.paths))
    with h5py.File(tmp_path / "f.h5", "r") as f:
        assert "codes" not in f and f.attrs["bits"] == 0 and f.attrs["arch"] == "alexnet"
        np.testing.assert_allclose(f["features"][:], fc7, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bad", ["broken.jpg", "icon.ico", "image.tga"])
def test_undecodable_image_names_list_line_and_path(dataset, model, tmp_path, bad):
    """Also a file PIL reads but OpenCV's imread does not (ICO, TGA): one line naming the list
    file, line and path, from a loader worker as from the main process."""
    root = tmp_path / "imgs"
    root.mkdir()
    for name in ("a.jpg", "c.png"):
        (root / name).write_bytes((dataset / "imgs" / name).read_bytes())
    if bad == "broken.jpg":
        (root / bad).write_bytes(b"\xff\xd8\xff garbage")
    else:
        Image.open(dataset / "imgs" / "c.png").convert("RGB").save(root / bad)
    assert cv2.imread(str(root / bad)) is None
    (tmp_path / "list.txt").write_text(f"a.jpg 1 0\nc.png 0 1\n\n{bad} 1 1\n")
    with pytest.raises(UserError) as e:
        encode_list(model, read_list(tmp_path / "list.txt"), root, tmp_path / "out.h5",
                    EncodeSettings(batch_size=1, workers=1), progress=False)
    assert str(e.value).startswith(f"{tmp_path / 'list.txt'}:4: {root / bad}: cannot decode")
    assert "\n" not in str(e.value) and "BytesIO" not in str(e.value)
    assert sorted(os.listdir(tmp_path)) == ["imgs", "list.txt"]      # no output, no temporary file


def test_missing_image_exits_2_without_traceback_or_output(dataset, tmp_path):
    (tmp_path / "list.txt").write_text("a.jpg 1\nnope/x.jpg 0\nc.png 1\nmissing.png 0\n")
    out = tmp_path / "out.h5"
    r = subprocess.run([sys.executable, "-m", "reproduce.encode", "--checkpoint", str(dataset / "ckpt.pth"),
                        "--list", str(tmp_path / "list.txt"), "--root", str(dataset / "imgs"),
                        "--out", str(out), "--workers", "0"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"{tmp_path / 'list.txt'}:2: image {dataset / 'imgs' / 'nope/x.jpg'} not found" in r.stderr
    assert "2 of 4 images" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not out.exists() and os.listdir(tmp_path) == ["list.txt"]


def test_bad_checkpoint_or_existing_output_exit_2(dataset, tmp_path, capsys):
    # The same entry point as `python -m` (run_cli(main)), in-process to spare torch imports.
    out = tmp_path / "out.h5"
    common = ["--list", str(dataset / "list.txt"), "--root", str(dataset / "imgs"), "--out", str(out),
              "--workers", "0"]
    torch.save({"state_dict": {}}, tmp_path / "foreign.pth")                  # not this package's
    (tmp_path / "truncated.pth").write_bytes((dataset / "ckpt.pth").read_bytes()[:1 << 20])
    for bad in ("foreign.pth", "truncated.pth", "missing.pth"):
        with pytest.raises(SystemExit) as e:
            run_cli(main, ["--checkpoint", str(tmp_path / bad)] + common)
        err = capsys.readouterr().err
        assert e.value.code == 2 and "Traceback" not in err and err.startswith(f"error: {tmp_path / bad}: ")
        assert not out.exists()
    out.write_bytes(b"user data")
    with pytest.raises(SystemExit) as e:
        run_cli(main, ["--checkpoint", str(dataset / "ckpt.pth")] + common)
    assert e.value.code == 2 and "already exists" in capsys.readouterr().err
    assert out.read_bytes() == b"user data"


def test_an_output_that_is_an_input_is_never_replaced(dataset, tmp_path, capsys):
    """encode --out CKPT --force (or --out LIST, --out MEAN) read the input, then replaced it by
    the codes: the checkpoint or list was gone."""
    for name in ("ckpt.pth", "list.txt"):
        (tmp_path / name).write_bytes((dataset / name).read_bytes())
    np.save(tmp_path / "mean.npy", np.full((3, 256, 256), 120.0))
    files = {n: (tmp_path / n).read_bytes() for n in ("ckpt.pth", "list.txt", "mean.npy")}
    common = ["--checkpoint", str(tmp_path / "ckpt.pth"), "--list", str(tmp_path / "list.txt"), "--root",
              str(dataset / "imgs"), "--workers", "0", "--mean-file", str(tmp_path / "mean.npy"), "--force"]
    for option, name in (("--checkpoint", "ckpt.pth"), ("--list", "list.txt"), ("--mean-file", "mean.npy")):
        with pytest.raises(SystemExit) as e:
            run_cli(main, common + ["--out", str(tmp_path / "." / name)])
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.count("\n") == 1 and f"is the {option} file, an input" in err, err
        assert {n: (tmp_path / n).read_bytes() for n in files} == files


def test_non_utf8_stdout_does_not_crash_the_success_or_error_line(dataset, tmp_path):
    """Under an ASCII stdout/stderr (PYTHONIOENCODING=ascii) a path with a `ü` is printed with an
    escape: the success line after the output is written, and an error line, never a traceback."""
    env = dict(os.environ, PYTHONIOENCODING="ascii")
    args = [sys.executable, "-m", "reproduce.encode", "--checkpoint", str(dataset / "ckpt.pth"),
            "--root", str(dataset / "imgs"), "--workers", "0", "--device", "cpu"]
    (tmp_path / "list.txt").write_text("c.png 0 0 1\n")
    out = tmp_path / "dir_ü" / "x.h5"
    r = subprocess.run(args + ["--list", str(tmp_path / "list.txt"), "--out", str(out)],
                       capture_output=True, env=env, timeout=300)
    assert r.returncode == 0 and b"Traceback" not in r.stderr, r.stderr.decode(errors="replace")
    assert r.stdout.decode("ascii") == f"wrote {tmp_path}/dir_\\xfc/x.h5: 1 images, codes\n"
    assert out.exists()
    r = subprocess.run(args + ["--list", str(tmp_path / "missing_ü.txt"), "--out", str(tmp_path / "y.h5")],
                       capture_output=True, env=env, timeout=300)
    assert r.returncode == 2 and b"Traceback" not in r.stderr
    assert r.stderr.decode("ascii").startswith(f"error: {tmp_path}/missing_\\xfc.txt")


def test_a_failed_encode_leaves_no_folder_it_created(dataset, tmp_path, capsys):
    """`--out d/x.h5/` names a folder: refused before anything is created (it created d/ and then
    said that nothing was changed); a failure found later (an undecodable image) removes the
    folders made for the output again, and leaves a folder that existed."""
    root = tmp_path / "imgs"
    root.mkdir()
    (root / "c.png").write_bytes((dataset / "imgs" / "c.png").read_bytes())
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (tmp_path / "good.txt").write_text("c.png 0 1\n")
    (tmp_path / "bad.txt").write_text("c.png 0 1\nbroken.jpg 1 0\n")
    (tmp_path / "existing").mkdir()
    common = ["--checkpoint", str(dataset / "ckpt.pth"), "--root", str(root), "--workers", "0", "--device", "cpu"]
    cases = [("good.txt", str(tmp_path / "d" / "x.h5") + "/", "names a folder"),
             ("good.txt", str(tmp_path / "d" / "x.h5") + "/.", "names a folder"),
             ("bad.txt", str(tmp_path / "new" / "sub" / "x.h5"), "broken.jpg: cannot decode"),
             ("bad.txt", str(tmp_path / "existing" / "sub" / "x.h5"), "broken.jpg: cannot decode")]
    for list_name, out, message in cases:
        with pytest.raises(SystemExit) as e:
            run_cli(main, common + ["--list", str(tmp_path / list_name), "--out", out])
        err = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]   # after tqdm's lines
        assert e.value.code == 2 and err.startswith("error: ") and message in err, err
        assert sorted(os.listdir(tmp_path)) == ["bad.txt", "existing", "good.txt", "imgs"], out
        assert os.listdir(tmp_path / "existing") == []
