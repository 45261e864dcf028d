"""The jobs of a per-dataset reproduction, as functions an executor can call anywhere.

Each takes the job's identity (reproduce.pipeline.identity) and JSON arguments (reproduce.pipeline.plan.Job.args),
checks what it reads against the identities its job was made from — the image list and its
images, the checkpoint, the code or feature files, the sweep's choice — and records its own
identity in what it writes. A check that fails means something changed after the plan was made
(another command, a user's edit): the job stops with one line instead of computing from it.

Arguments that name an image list are {"path", "name", "hex", "num_labels"}; those that name
another job's output are {"path", "hex"} (the producing job's identity).
"""
import dataclasses
import glob
import json
import os
import time

from . import identity as ids
from ..data.cache import build_cache
from ..data.images import check_images_exist
from ..data.lists import read_list
from ..errors import UserError
from ..evaluation.codes import codes_backbone, read_codes
from ..evaluation.encoding import EncodeSettings, encode_list
from ..evaluation.records import check_records, read_record, write_record
from ..model.checkpoint import load_checkpoint, model_from_checkpoint
from ..reporting.comparison import comparison_outputs, evaluate_baselines, evaluate_method, write_comparison
from ..reporting.figures import default_curve_bits
from ..reporting.paper import read_paper_numbers
from ..training.config import RunConfig
from ..training.engine import NonFiniteLoss, recorded_run, snapshots, train
from ..utils.fileio import read_json, staged_outputs, write_text_atomic
from ..utils.provenance import git_revision, versions
from .grid import sweep_choice, write_diverged
from .plan import recorded_identity

RUN_FILES = ("final.pth", "config.json", "log.jsonl")   # + snapshot_iter_<N>.pth


def read_checked_list(spec, root):
    """The ImageList of `spec`, its images there and unchanged since the plan was made."""
    image_list = read_list(spec["path"], num_labels=spec.get("num_labels"))
    check_images_exist(image_list, root)
    if ids.images_identity(spec["name"], image_list, root)["hex"] != spec["hex"]:
        raise UserError(f"{spec['path']}: the list or its images under {root} changed since this "
                        "command planned its work; run the command again")
    return image_list


def require_identity(path, expected_hex, what):
    """UserError unless the output `path` records the identity `expected_hex`."""
    found = recorded_identity(path)
    if not (isinstance(found, dict) and found["hex"] == expected_hex):
        raise UserError(f"{path}: not the {what} this job was planned from (missing, replaced or "
                        "made with other settings); run the command again")


def build_image_cache(identity, image_list, root, cache, workers, preprocessing="caffe"):
    """Job: the image cache of a list for the image convention `preprocessing`
    (reproduce.data.cache.build_cache); one made from other images, another list or for another
    convention is replaced (the plan runs this job only when that is wanted)."""
    images = read_checked_list(image_list, root)
    if os.path.exists(cache) and not _carries(cache, identity):
        os.remove(cache)
    partial = cache + ".partial"
    if os.path.exists(partial) and (_attribute(partial, "images") != image_list["hex"]
                                    or (_attribute(partial, "preprocessing") or "caffe") != preprocessing):
        os.remove(partial)               # an interrupted build from other images or for another convention
    build_cache(images, root, cache, workers=workers, images=image_list["hex"],
                attrs={"identity": ids.to_attr(identity)}, preprocessing=preprocessing)


def _clear_run(run_dir):
    """Remove a training run made with another identity (its snapshots, final.pth, config, log)."""
    for path in [os.path.join(run_dir, n) for n in RUN_FILES] + list(snapshots(run_dir).values()):
        if os.path.exists(path):
            os.remove(path)


def _holds_run(run_dir, identity):
    """Whether what run_dir holds is (part of) the training of `identity`, or nothing: its
    config.json and final.pth record it. A damaged one (the plan called it stale, and the user
    asked for it to be recomputed) is not resumed: a resume would stop on it, run after run."""
    try:
        _, old = recorded_run(run_dir)
    except UserError:
        return False
    if os.path.exists(os.path.join(run_dir, "config.json")) and (old is None or old["hex"] != identity["hex"]):
        return False
    final = recorded_identity(os.path.join(run_dir, "final.pth"))
    return final is None or (isinstance(final, dict) and final["hex"] == identity["hex"])


def train_run(identity, config, train_list, cache=None, sweep=None, progress=True):
    """Job: one training (reproduce.training.engine.train), resumed from its last snapshot when its folder
    holds one of the same identity; its snapshots are removed once final.pth is written.
    cache: {"path", "hex"} of the image cache job; sweep: {"path", "hex", "keys"}: the settings
    (base_lr, quant_weight) taken from that sweep's choice."""
    cfg = RunConfig.from_dict(config, "job configuration")
    if sweep:
        best = sweep_choice(sweep["path"], sweep["hex"])
        solver = dataclasses.replace(cfg.solver, base_lr=best["base_lr"])
        loss = cfg.loss
        if "quant_weight" in sweep["keys"] and best.get("quant_weight") is not None:
            loss = dataclasses.replace(loss, quant_weight=best["quant_weight"])
        cfg = dataclasses.replace(cfg, solver=solver, loss=loss)
    read_checked_list(train_list, cfg.data.root)
    if cache is not None:
        require_identity(cache["path"], cache["hex"], "image cache")
    if not _holds_run(cfg.out, identity):
        _clear_run(cfg.out)
    final = train(cfg, resume=True, identity=identity, progress=progress)
    for path in snapshots(cfg.out).values():      # a finished run is never resumed
        os.remove(path)
    return final


def encode_codes(identity, checkpoint, image_list, root, out, pipeline="imagedata", oversample=False,
                 workers=2, device="auto", features=False, attrs=None):
    """Job: codes (or, with features, fc7 features) of an image list with a checkpoint.
    checkpoint: {"path", "hex"} of the training job, or {"path", "sha1"} of a weights file."""
    images = read_checked_list(image_list, root)
    path = checkpoint["path"]
    if "hex" in checkpoint:
        require_identity(path, checkpoint["hex"], "trained model")
    elif ids.file_identity("weights", path)["settings"]["sha1"] != checkpoint["sha1"]:
        raise UserError(f"{path}: the weights file changed since this command planned its work; "
                        "run the command again")
    model = model_from_checkpoint(load_checkpoint(path), path)
    settings = EncodeSettings(pipeline, oversample, features=features, workers=workers,
                              device=None if device == "auto" else device)
    encode_list(model, images, root, out, settings, overwrite=True,
                attrs=dict(attrs or {}, checkpoint=path, checkpoint_sha1=ids.file_identity("", path)["settings"]["sha1"],
                           identity=ids.to_attr(identity)))


def _checked_codes(spec, what):
    require_identity(spec["path"], spec["hex"], what)
    return read_codes(spec["path"], key_option=None)


def evaluate_run(identity, dataset, method, seed, binary, protocol, query, database, out):
    """Job: metrics.json (+ curves) of a run's query and database codes (reproduce.evaluation.records);
    binary False ranks the tanh codes by inner product (DHN-B)."""
    files = [_checked_codes(spec, "codes") for spec in (query, database)]
    codes = [f.binary_codes() if binary else f.codes for f in files]
    doc = evaluate_method(method, dataset, codes[0], codes[1], files[0].label_matrix(), files[1].label_matrix(),
                          seed=seed, binary=binary, protocol=protocol, backbone=codes_backbone(files),
                          inputs={k: {"path": s["path"], "identity": s["hex"]}
                                  for k, s in (("query", query), ("database", database))})
    write_record(out, dict(doc, identity=identity), force=True)
    print(f"{method} {doc['bits']} bits seed {seed}: MAP {doc['metrics']['map']:.4f}")


def fit_baseline(identity, dataset, name, bits, seed, protocol, features, out, options=None):
    """Job: a shallow baseline fitted on the training features and evaluated (metrics.json)."""
    paths = []
    for split in ("train", "query", "database"):
        require_identity(features[split]["path"], features[split]["hex"], "features")
        paths.append(features[split]["path"])
    doc = evaluate_baselines(dataset, [name], [bits], paths, seed=seed, protocol=protocol,
                             options={name: options} if options else None)[0]
    write_record(out, dict(doc, identity=identity), force=True)


def sweep_trial(identity, config, base_lr, quant_weight, out, train_list, query_list, cache, encode,
                dataset, method, protocol):
    """Job: one value of a sweep: train on the validation split's training part, encode its
    validation queries and database, and their MAP (out/metrics.json). Steps whose output already
    carries this identity (an interrupted trial) are not done again."""
    config = dict(config, out=out)
    config["solver"] = dict(config["solver"], base_lr=base_lr)
    if quant_weight is not None:
        config["loss"] = dict(config["loss"], quant_weight=quant_weight)
    final = os.path.join(out, "final.pth")
    if not _carries(final, identity):
        try:
            train_run(identity, config, train_list, cache=cache, progress=False)
        except NonFiniteLoss as e:
            return write_diverged(os.path.join(out, "metrics.json"), identity, e)
    codes = {}
    for split, spec in (("query", query_list), ("database", train_list)):
        codes[split] = {"path": os.path.join(out, f"codes_{split}.h5"), "hex": identity["hex"]}
        if not _carries(codes[split]["path"], identity):
            encode_codes(identity, {"path": final, "hex": identity["hex"]}, spec, config["data"]["root"],
                         codes[split]["path"], **encode)
    evaluate_run(identity, dataset, method, 0, True, protocol, codes["query"], codes["database"], out)


def _attribute(path, name):
    """An HDF5 file's attribute, or None if it cannot be read."""
    import h5py
    try:
        with h5py.File(path, "r") as f:
            value = f.attrs.get(name)
    except (OSError, ValueError):
        return None
    return value.decode() if isinstance(value, bytes) else value


def _carries(path, identity):
    found = recorded_identity(path)
    return isinstance(found, dict) and found["hex"] == identity["hex"]


def summarize(identity, dataset, title, records, sweeps, out, run, paper_csv=None, paper_default=True,
              backbone=None):
    """Job: Tables 1-2 and Figures (a)-(c) of the plan's evaluations (and no other metrics.json in
    the folder), sweep.md, and run.json (the stamp, written last). records / sweeps: [{"path",
    "hex"}] of the evaluation and sweep jobs; backbone: named in the titles (None: the authors'
    caffenet, as in the paper)."""
    loaded = []
    for spec in records:
        require_identity(spec["path"], spec["hex"], "evaluation")
        loaded.append(read_record(spec["path"]))
    loaded = check_records(loaded, dataset)
    paper = read_paper_numbers(paper_csv, dataset) if paper_csv else (None if paper_default else {})
    curve_bits = default_curve_bits(loaded)
    names = summary_names(curve_bits, bool(sweeps))
    with staged_outputs(out, remove=earlier_summary_outputs(out, names)) as stage:
        written = write_comparison(loaded, dataset, stage, curve_bits, dataset_title=title, paper=paper,
                                   backbone=backbone)
        if sweeps:
            with open(os.path.join(stage, "sweep.md"), "w", encoding="utf-8") as f:
                f.write(sweep_markdown(sweeps))
    _note_foreign_records(out, records)
    doc = dict(run, identity=identity, versions=versions(), git_revision=git_revision(),
               finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"), outputs=names)
    write_text_atomic(os.path.join(out, "run.json"), json.dumps(doc, indent=2, default=str) + "\n")
    print("wrote " + ", ".join(os.path.relpath(os.path.join(out, os.path.relpath(p, stage)), out)
                               for p in written) + f" in {out}")


def summary_names(curve_bits, sweep):
    """The files a summary writes into its folder besides run.json: the tables, the figures at
    `curve_bits`, and sweep.md when there was a sweep."""
    names = [os.path.basename(p) for p in comparison_outputs("", curve_bits)]
    return names + (["sweep.md"] if sweep else [])


SUMMARY_PATTERNS = ("table[12].md", "table[12].csv", "table[12].tex", "fig_a_precision_radius*.png",
                    "fig_a_precision_radius*.pdf", "fig_b_pr_curve_*bits.png", "fig_b_pr_curve_*bits.pdf",
                    "fig_c_precision_at_n_*bits.png", "fig_c_precision_at_n_*bits.pdf", "sweep.md")


def earlier_summary_outputs(out, names):
    """The files an earlier summary wrote into `out` that this one (writing `names`) does not
    replace: its figures at other bits, its sweep.md. Left there, they would stand beside this
    plan's tables as if made from it. The earlier run.json lists them; one written before it did
    is taken to have written what a summary writes (SUMMARY_PATTERNS)."""
    try:
        doc = read_json(os.path.join(out, "run.json"), "run record")
    except UserError:
        doc = None
    listed = doc.get("outputs") if isinstance(doc, dict) else None
    if isinstance(listed, list) and all(isinstance(n, str) and n == os.path.basename(n) for n in listed):
        earlier = listed
    elif isinstance(doc, dict):
        earlier = [os.path.basename(p) for pattern in SUMMARY_PATTERNS
                   for p in glob.glob(os.path.join(glob.escape(out), pattern))]
    else:
        earlier = []
    return sorted(n for n in set(earlier) - set(names) if n not in ("", ".", "..")
                  and os.path.isfile(os.path.join(out, n)))


def _note_foreign_records(out, records):
    """metrics.json files in out/metrics that this run did not make are left, but named."""
    mine = {os.path.realpath(s["path"]) for s in records}
    for path in sorted(glob.glob(os.path.join(glob.escape(out), "metrics", "*", "metrics.json"))):
        if os.path.realpath(path) not in mine:
            print(f"note: {os.path.dirname(path)}: not part of this run (other bits, seeds or "
                  "methods); left as it is, not in the tables")


def sweep_markdown(sweeps):
    """sweep.md: every unit's grid, validation MAP per value, the values added past an edge."""
    lines = []
    for spec in sweeps:
        require_identity(spec["path"], spec["hex"], "sweep")
        with open(spec["path"], encoding="utf-8") as f:
            doc = json.load(f)
        unit, best = doc["unit"], doc["best"]
        lines += [f"## {unit['trained']} at {unit['bits']} bits", "",
                  "| base_lr | λ | validation MAP | |", "|---|---|---|---|"]
        lines += [f"| {r['base_lr']:g} | {'—' if r['quant_weight'] is None else format(r['quant_weight'], 'g')} "
                  f"| {'diverged' if r['validation_map'] is None else format(r['validation_map'], '.4f')} "
                  f"| {'added: the best was at an edge of the grid' if r['extended'] else ''} |"
                  for r in doc["rows"]]
        lines += ["", f"best: base_lr {best['base_lr']:g}" + ("" if best["quant_weight"] is None
                                                               else f", λ {best['quant_weight']:g}"), ""]
    return "\n".join(lines)
