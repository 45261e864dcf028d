"""Real Caffe, driven through pycaffe: the `caffe` test tier's oracle (runs under Debian's python3).

    LD_LIBRARY_PATH=<oracle>/lib PYTHONPATH=<oracle>/python python3 oracle.py TASK IN.npz OUT.npz

The tests (in the package's venv) write IN.npz — arrays, and the task's settings as JSON under
the key "params" — run this script through tests/caffe_oracle.py, and read OUT.npz. Nothing here
imports the package: every number in OUT.npz is what Caffe computed. Tasks:

  net_params      load a prototxt + caffemodel (Caffe upgrades V1 files on read), report every
                  parameter blob; optionally Net.save it (V2 binary) and write a solver's HDF5
                  snapshot (snapshot_format: HDF5).
  forward         deploy prototxt + weights + input blob -> the named blobs.
  loss_backward   train prototxt with Input layers + weights + (data, label) -> the loss, the
                  named blobs and every parameter's diff after one forward/backward.
  solver          SGDSolver on a solver prototxt, fixed Input blobs; at each step the raw
                  gradients Caffe computed and the parameters after its update, at given flat
                  indices of every blob.
  gradient_check  the PairwiseLoss layer alone: its backward against central finite differences
                  of its top value (Caffe's GradientChecker rule: stepsize 1e-2, threshold 1e-3).
  image_data      an ImageData layer (TEST or TRAIN phase) forwarded `batches` times.
  parse_net       Caffe's own parse of prototxt files (caffe_pb2 + text_format), as JSON.
  pycaffe_predict caffe.Classifier.predict as thuml/hash-caffe's predict_parallel.py and
                  dhn-caffe's generate.py call it (image_dims 256, raw_scale 255, channel_swap
                  (2, 1, 0), per-channel mean), with scikit-image's anti-aliasing turned off as in
                  the scikit-image of 2016.
"""
import functools
import json
import os
import sys
import tempfile

import numpy as np

os.environ.setdefault("GLOG_minloglevel", "2")   # Caffe's INFO/WARNING lines would flood stderr
import caffe  # noqa: E402

caffe.set_mode_cpu()


def _params(net):
    """{"<layer>/<blob index>": float32 array} of every learnable blob, in the net's order."""
    return {f"{name}/{i}": np.array(blob.data) for name, blobs in net.params.items()
            for i, blob in enumerate(blobs)}


def net_params(p, arrays):
    net = caffe.Net(p["prototxt"], caffe.TEST, weights=p["weights"])
    out = {f"param/{k}": v for k, v in _params(net).items()}
    if p.get("save"):
        net.save(p["save"])
    if p.get("snapshot_prefix"):
        # A solver whose net is the same prototxt; its weights copied from the file, then one
        # HDF5 snapshot (Solver::Snapshot -> SnapshotToHDF5) at iteration 0.
        solver_txt = (f'net: "{p["prototxt"]}"\nbase_lr: 0.01\nlr_policy: "fixed"\nmax_iter: 1\n'
                      f'snapshot_format: HDF5\nsnapshot_prefix: "{p["snapshot_prefix"]}"\n')
        with tempfile.NamedTemporaryFile("w", suffix=".prototxt", delete=False) as f:
            f.write(solver_txt)
        solver = caffe.SGDSolver(f.name)
        os.unlink(f.name)
        solver.net.copy_from(p["weights"])
        solver.snapshot()
    return out


def forward(p, arrays):
    net = caffe.Net(p["prototxt"], caffe.TEST, weights=p["weights"])
    net.blobs["data"].reshape(*arrays["data"].shape)
    net.blobs["data"].data[...] = arrays["data"]
    net.forward()
    return {f"blob/{b}": np.array(net.blobs[b].data) for b in p["blobs"]}


def _set_inputs(net, arrays):
    for name in ("data", "label"):
        net.blobs[name].reshape(*arrays[name].shape)
        net.blobs[name].data[...] = arrays[name]


def loss_backward(p, arrays):
    net = caffe.Net(p["prototxt"], caffe.TRAIN, weights=p["weights"])
    _set_inputs(net, arrays)
    net.reshape()
    loss = net.forward()[p["loss_blob"]]
    net.backward()
    out = {"loss": np.array(loss)}
    out.update({f"blob/{b}": np.array(net.blobs[b].data) for b in p.get("blobs", ())})
    out.update({f"diff/{name}/{i}": np.array(blob.diff) for name, blobs in net.params.items()
                for i, blob in enumerate(blobs)})
    return out


def solver(p, arrays):
    """solver.step(1) `steps` times; a callback records each step's raw gradients (Solver::Step
    calls on_gradients_ready after ForwardBackward, before ApplyUpdate), then the parameters."""
    s = caffe.SGDSolver(p["solver"])
    s.net.copy_from(p["weights"])
    _set_inputs(s.net, arrays)
    s.net.reshape()
    out, losses, step = {}, [], [0]

    def sample(key, values):
        return values.ravel()[arrays[f"index/{key}"]].copy()

    def on_gradients_ready():
        step[0] += 1
        for name, blobs in s.net.params.items():
            for i, blob in enumerate(blobs):
                out[f"step{step[0]}/grad/{name}/{i}"] = sample(f"{name}/{i}", blob.diff)

    s.add_callback(lambda: None, on_gradients_ready)
    for key, values in _params(s.net).items():
        out[f"step0/param/{key}"] = sample(key, values)
    for _ in range(p["steps"]):
        s.step(1)
        losses.append(float(s.net.blobs[p["loss_blob"]].data))
        for key, values in _params(s.net).items():
            out[f"step{step[0]}/param/{key}"] = sample(key, values)
    out["losses"] = np.array(losses)
    out["iter"] = np.array(s.iter)
    return out


def gradient_check(p, arrays):
    """Caffe's GradientChecker (test_gradient_check_util.hpp) over every element of the codes."""
    net = caffe.Net(p["prototxt"], caffe.TRAIN)
    _set_inputs(net, arrays)
    net.reshape()
    net.forward()
    net.backward()
    computed = np.array(net.blobs["data"].diff)
    z = net.blobs["data"].data
    estimated = np.empty_like(computed)
    h = np.float32(p.get("stepsize", 1e-2))
    for idx in np.ndindex(z.shape):
        keep = z[idx].copy()
        z[idx] = keep + h
        plus = float(net.forward()["loss"])
        z[idx] = keep - h
        minus = float(net.forward()["loss"])
        z[idx] = keep
        estimated[idx] = (plus - minus) / (2 * h)
    return {"computed": computed, "estimated": estimated}


def image_data(p, arrays):
    caffe.set_random_seed(p.get("seed", 1))    # Caffe's crop / mirror draws, repeatable
    net = caffe.Net(p["prototxt"], caffe.TRAIN if p["phase"] == "TRAIN" else caffe.TEST)
    blobs = []
    for _ in range(p["batches"]):
        net.forward()
        blobs.append(np.array(net.blobs["data"].data))
    return {"data": np.concatenate(blobs)}


def pycaffe_predict(p, arrays):
    import skimage.io
    import skimage.transform
    # caffe.io.load_image passes `as_grey`, which scikit-image renamed `as_gray` (0.16); and
    # scikit-image >= 0.19 anti-aliases when resize shrinks, which the 2016 version did not.
    imread = skimage.io.imread

    def imread_as_grey(fname, as_grey=False, **kw):
        return imread(fname, as_gray=as_grey, **kw)

    skimage.io.imread = imread_as_grey
    caffe.io.resize = functools.partial(skimage.transform.resize, anti_aliasing=False)
    net = caffe.Classifier(p["prototxt"], p["weights"], image_dims=(256, 256),
                           mean=np.asarray(p["mean"], dtype=np.float64), raw_scale=255,
                           channel_swap=(2, 1, 0))
    images = [caffe.io.load_image(path) for path in p["images"]]
    codes = net.predict(images, oversample=p["oversample"])
    return {"codes": np.array(codes), "data": np.array(net.blobs["data"].data),
            "loaded": np.concatenate([im.ravel() for im in images])}


def parse_net(p, arrays):
    """Caffe's own parse (caffe_pb2 + text_format) of prototxt files, as JSON."""
    from caffe.proto import caffe_pb2
    from google.protobuf import json_format, text_format
    out = {}
    for key, path in p["files"].items():
        net = caffe_pb2.NetParameter()
        with open(path) as f:
            text_format.Merge(f.read(), net)
        out[key] = np.array(json_format.MessageToJson(net))
    return out


TASKS = dict(net_params=net_params, parse_net=parse_net, forward=forward, loss_backward=loss_backward, solver=solver,
             gradient_check=gradient_check, image_data=image_data, pycaffe_predict=pycaffe_predict)


def main(task, in_path, out_path):
    with np.load(in_path) as f:
        arrays = {k: f[k] for k in f.files}
    params = json.loads(str(arrays.pop("params")))
    out = TASKS[task](params, arrays)
    np.savez(out_path, **out)


if __name__ == "__main__":
    main(*sys.argv[1:])
