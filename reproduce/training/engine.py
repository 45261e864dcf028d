"""The DHN training loop shared by every dataset and variant (one Caffe solver run).

`train(cfg)` (cfg: a reproduce.training.config.RunConfig) follows the authors' Caffe run step for step: global batch of `batch_size` images in
the ImageData order (reproduce.data.batches.BatchOrder), forward to the tanh codes, the DHN loss on all
B x B pairs of the batch, backward, one Caffe SGD update (reproduce.training.solver.CaffeSGD). Under
torchrun the global batch is split across processes and the codes are all-gathered, so the
pairwise loss still sees the same B x B pairs as one Caffe process.

Run folder (rank 0 writes): config.json, log.jsonl (Caffe's fields at every display interval),
snapshot_iter_<N>.pth (model + solver + RNG state, written atomically), final.pth (the model,
loadable by reproduce.encode).
"""
import json
import math
import os
import re
import time

import torch
import torch.distributed as dist
from tqdm import tqdm

from ..data.batches import BatchOrder, TrainBatches, checked_batches, make_loader
from ..data.cache import build_cache, open_cache
from ..data.images import check_images_exist
from ..data.lists import read_list
from ..data.preprocessing import preprocessing_for
from ..data.transforms import load_mean_file
from ..errors import UserError
from ..model.checkpoint import checkpoint_method_name, load_checkpoint, model_from_checkpoint, save_checkpoint
from ..model.nets import pick_device, share_dropout_stream
from ..pipeline import identity as ids
from ..utils.fileio import check_output_folder, read_json, write_text_atomic
from ..utils.messages import one_line
from ..utils.signals import deferred_signals
from .config import read_run_config
from .distributed import Distributed
from .solver import caffe_param_groups

SNAPSHOT_RE = re.compile(r"^snapshot_iter_(\d+)\.pth$")


def snapshots(run_dir):
    """{iteration: path} of the snapshots in run_dir."""
    found = {}
    for name in os.listdir(run_dir) if os.path.isdir(run_dir) else ():
        m = SNAPSHOT_RE.match(name)
        if m:
            found[int(m.group(1))] = os.path.join(run_dir, name)
    return found


def _write_log(path, records):
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in records))


FINISHED = object()        # prepare_run_dir: the run is complete at cfg's max_iter


def run_identity(cfg, name="train", image_list=None, inputs=None):
    """The identity (reproduce.pipeline.identity) of training run `cfg`: its settings
    (RunConfig.identity_settings) made from the weights file, the training list and its images,
    the mean file, and `inputs` (identity documents that replace those or add to them, e.g. the
    sweep that chose its base_lr). image_list: the list already read (default: read it)."""
    docs = {"weights": ids.file_identity("weights", cfg.model.weights)}
    if "lists/train" not in (inputs or {}):
        image_list = image_list or read_list(cfg.data.train_list, num_labels=cfg.data.num_labels)
        docs["lists/train"] = ids.images_identity("lists/train", image_list, cfg.data.root)
    if cfg.data.mean_file:
        docs["mean_file"] = ids.file_identity("mean_file", cfg.data.mean_file)
    docs.update(inputs or {})
    return ids.make_identity(name, "train", cfg.identity_settings(), docs)


def recorded_run(run_dir):
    """(RunConfig, identity document or None) of a run folder's config.json; (None, None) if none."""
    cfg = read_run_config(run_dir)
    if cfg is None:
        return None, None
    doc = read_json(os.path.join(run_dir, "config.json"), "run configuration")
    return cfg, ids.checked(doc.get("identity"))


def final_iteration(path):
    """The iteration a final.pth or snapshot holds (its meta), read memory-mapped."""
    return load_checkpoint(path, mmap=True).get("meta", {}).get("iteration")


def prepare_run_dir(cfg, resume, identity=None, log=print):
    """Refuse to clobber an existing run; with `resume` check what it resumes and return
    (iteration, snapshot path or None) to continue from, or FINISHED. A resume continues only the
    same run: same settings, weights, list, root and images (`identity`, with or without a
    cache); max_iter may grow (not below the last snapshot), a finished run continues from the
    snapshot at its end, and is left as it is when max_iter is reached."""
    run_dir = cfg.out
    check_output_folder(run_dir, "--out")
    found = snapshots(run_dir)
    final = os.path.join(run_dir, "final.pth")
    if (found or os.path.exists(final)) and not resume:
        raise UserError(f"{run_dir}: already holds a training run; pass --resume to continue it, "
                        "or choose another --out")
    if not resume:
        return 0, None
    _check_same_run(cfg, identity)
    if os.path.exists(final):
        done = final_iteration(final)
        if done == cfg.solver.max_iter:
            log(f"{run_dir}: finished at iteration {done}; nothing to do")
            return FINISHED
        if not isinstance(done, int) or done > cfg.solver.max_iter:
            raise UserError(f"{final}: the run finished at iteration {done}; --max-iter "
                            f"{cfg.solver.max_iter} is below it (use another --out)")
        if done not in found:
            raise UserError(f"{final}: the run finished at iteration {done}; continuing it to "
                            f"{cfg.solver.max_iter} needs snapshot_iter_{done}.pth (weights, momentum, "
                            "random state), which is not there (removed); start a new run instead")
        log(f"{run_dir}: continuing the finished run from iteration {done} to {cfg.solver.max_iter}")
    if found:
        last = max(found)
        held = final_iteration(found[last])
        if held != last:
            raise UserError(f"{found[last]}: holds iteration {held!r}, but its name says {last}; the "
                            "snapshot was renamed or damaged (remove it to resume from the one before)")
        if last > cfg.solver.max_iter:
            raise UserError(f"{found[last]}: the run is already at iteration {last}, beyond --max-iter "
                            f"{cfg.solver.max_iter}; its final weights would not be those of iteration "
                            f"{cfg.solver.max_iter} (use another --out)")
        return last, found[last]
    return 0, None


def _check_same_run(cfg, identity):
    """UserError unless `cfg` (and `identity`) continue the run recorded in cfg.out."""
    run_dir = cfg.out
    old, old_identity = recorded_run(run_dir)
    path = os.path.join(run_dir, "config.json")
    if old is None:
        return
    differ = old.resume_differences(cfg)
    if differ:
        k = differ[0]
        raise UserError(f"{path}: the run was started with {k}={old.flat().get(k)!r}, now "
                        f"{cfg.flat().get(k)!r} ({len(differ)} setting(s) differ); resume with the same "
                        "settings or use another --out")
    if old.solver.max_iter != cfg.solver.max_iter and cfg.solver.lr_policy == "poly":
        raise UserError(f"{path}: lr_policy poly depends on max_iter ({old.solver.max_iter}, now "
                        f"{cfg.solver.max_iter}): a longer run is another trajectory; use another --out")
    if identity is not None:
        change = ids.differences(old_identity, identity, ignore=("solver.max_iter",))
        if change:
            raise UserError(f"{path}: this run was {change}; it cannot be resumed with other "
                            "inputs (use another --out)")


def _make_method(cfg):
    """The deep baseline of `cfg` (None: DHN), checked against the batch size it needs."""
    method = cfg.method.make(cfg.model.bits) if cfg.method else None
    if method is not None and cfg.solver.batch_size < method.min_batch_size:
        raise UserError(f"--batch-size {cfg.solver.batch_size}: {method.name} needs batches of at least "
                        f"{method.min_batch_size} images")
    return method


def _build_model(cfg, ckpt, method):
    weights = cfg.model.weights
    ckpt = ckpt or load_checkpoint(weights)
    trained_as = checkpoint_method_name(ckpt)
    wanted = cfg.method.name if cfg.method else None
    if trained_as is not None and (wanted or "").lower() != trained_as.lower():
        # Its head is that method's: another loss on it trains something no paper describes.
        raise UserError(f"{weights}: a checkpoint trained as the deep baseline {trained_as}; it cannot "
                        f"be the --weights of {'--method ' + wanted if wanted else 'DHN'} (start from the "
                        "ImageNet weights, or pass --method " + trained_as.lower() + ")")
    return model_from_checkpoint(ckpt, weights, bits=cfg.model.bits, arch=cfg.model.arch,
                                 dropout=cfg.model.dropout, method=method,
                                 generator=torch.Generator().manual_seed(cfg.seed))


def _train_loader(cfg, image_list, transform, start, ddp, targets, device):
    """Iterator over this rank's batches from iteration `start` on, in the seeded order of
    Caffe's ImageData layer (data.BatchOrder), transformed as the backbone's image convention
    (`transform`, a data.preprocessing.Preprocessing); `targets` replace the labels (a method's)."""
    data = cfg.data
    order = BatchOrder(len(image_list), cfg.solver.batch_size, cfg.seed, mirror=data.mirror,
                       crop_size=transform.crop_size, preprocessing=transform.name)
    batches = TrainBatches(image_list, order, transform, start, cfg.solver.max_iter, cache_path=data.cache,
                           root=data.root, rank=ddp.rank, world_size=ddp.world_size, targets=targets)
    with deferred_signals():                  # the workers start here (signals.deferred_signals)
        return checked_batches(iter(make_loader(batches, workers=data.workers, pin_memory=device.type == "cuda")))


def train(cfg, model=None, ckpt=None, resume=False, progress=True, identity=None):
    """Run (or, with `resume`, continue) the training run `cfg` (a reproduce.training.config.RunConfig).

    `model` may be given to train another network with the same loop (tests use a tiny one);
    otherwise it is built from `ckpt` (or cfg.model.weights). identity: the run's identity
    (run_identity), recorded in config.json, the snapshots and final.pth, and checked on resume.
    Every input is checked before anything is written. Returns the path of final.pth (None on
    ranks > 0).
    """
    device = pick_device(cfg.device)
    ddp = Distributed(device)
    run_dir, is_main, data = cfg.out, ddp.rank == 0, cfg.data
    resumed = prepare_run_dir(cfg, resume, identity, log=print if is_main else (lambda text: None))
    if resumed is FINISHED:
        return os.path.join(run_dir, "final.pth") if is_main else None
    start, snapshot_path = resumed
    image_list = read_list(data.train_list, num_labels=data.num_labels)
    # the backbone's image convention: crop size, and for Caffe's the mean (values or mean image)
    transform = preprocessing_for(cfg.model.arch, load_mean_file(data.mean_file) if data.mean_file else data.mean)
    method = _make_method(cfg)
    model = model if model is not None else _build_model(cfg, ckpt, method)
    snap = load_checkpoint(snapshot_path) if snapshot_path else None
    # a method's rows carry their own targets (CNNH: its stage-1 codes) instead of the labels;
    # computed (and checked) before the image cache is written into the run folder
    targets = method.prepare_targets(image_list.labels, cfg.model.bits, cfg.seed) if method else None
    _prepare_images(data, image_list, ddp, progress, _images_hex(cfg, image_list, identity), transform.name)
    model.to(device)
    head = getattr(model, "head", None)
    solver = cfg.solver.make_optimizer(caffe_param_groups(
        model, lr_mults=head.lr_mults("head.") if method is not None else None))
    torch.manual_seed(cfg.seed + ddp.rank)   # other randomness (a model's plain nn.Dropout)
    # drop6/drop7 draw the masks of the global batch from one stream, seeded alike on every
    # process, each taking its rows: G processes x B/G images train as one process x B
    dropout = share_dropout_stream(model, cfg.seed, ddp.rank, ddp.world_size)
    log_path = os.path.join(run_dir, "log.jsonl")
    records = _restore(snap, model, solver, ddp, log_path, start, snapshot_path, dropout)
    if is_main:
        os.makedirs(run_dir, exist_ok=True)
        write_text_atomic(os.path.join(run_dir, "config.json"),
                          json.dumps(dict(cfg.to_dict(), identity=identity), indent=2, sort_keys=True) + "\n")
        _write_log(log_path, records)

    net = model
    if ddp.enabled:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    net.train()
    loader = _train_loader(cfg, image_list, transform, start, ddp, targets, device)

    def log(rec):
        records.append(rec)
        _write_log(log_path, records)

    report = Report(cfg.solver.batch_size, cfg.solver.display, log=log if is_main else None,
                    progress=progress and is_main)
    try:
        fit(net, loader, method.make_loss() if method else cfg.loss.make_loss(), solver, start, cfg.solver.max_iter,
            report, device=device, gather=ddp.gather, world_size=ddp.world_size, snapshot_every=cfg.solver.snapshot,
            snapshot=lambda done: _snapshot(model, solver, cfg, done, ddp, is_main, dropout, identity))
    except NonFiniteLoss as e:
        good = max(snapshots(run_dir), default=None)
        raise NonFiniteLoss(f"{run_dir}: {e}; " + (f"the last good snapshot is snapshot_iter_{good}.pth"
                                                  if good is not None else "no snapshot was written")) from None
    if not is_main:
        return None
    final = os.path.join(run_dir, "final.pth")
    save_checkpoint(final, model.state_dict(), model.arch, model.bits,
                    meta=_meta(cfg, "dhn", cfg.solver.max_iter, identity), overwrite=True)
    return final


def _images_hex(cfg, image_list, identity):
    """The identity hex of the training images (the run's input `lists/train`), for the cache."""
    if cfg.data.cache is None:
        return None
    if identity is not None and "lists/train" in identity.get("inputs", {}):
        return identity["inputs"]["lists/train"]
    check_images_exist(image_list, cfg.data.root)
    return ids.images_identity("lists/train", image_list, cfg.data.root)["hex"]


def _prepare_images(data, image_list, ddp, progress, images=None, preprocessing="caffe"):
    """Check that every image is there (or that the cache was built from this very list and
    these images, for the image convention `preprocessing`) before anything is written; then
    build the cache if there is none yet."""
    if data.cache is not None and os.path.exists(data.cache):
        open_cache(data.cache, image_list, images, preprocessing).close()
    else:
        check_images_exist(image_list, data.root)
    if data.cache is not None:
        if ddp.rank == 0 and not os.path.exists(data.cache):
            build_cache(image_list, data.root, data.cache, workers=data.workers, progress=progress,
                        images=images, preprocessing=preprocessing)
        if ddp.enabled:      # every process waits for the cache (same branch on every rank)
            dist.barrier()


def _meta(cfg, kind, iteration, identity=None):
    """A checkpoint's meta: the run configuration and identity, and the method it is (encode
    rebuilds it)."""
    meta = {"kind": kind, "iteration": iteration, "config": cfg.to_dict(), "identity": identity}
    if cfg.method is not None:
        meta["method"] = {"name": cfg.method.name, "options": dict(cfg.method.options)}
    return meta


def _restore(snap, model, solver, ddp, log_path, start, source, dropout):
    """Load a snapshot's weights, solver history and RNG states (torch's and the `dropout` mask
    stream's); the log records up to `start`.
    A snapshot that is not what its name says (another iteration, other parameters, non-finite
    values, no solver or RNG state) is a UserError naming `source`: a resume never trains on."""
    if snap is None:
        return []
    meta_iter = snap.get("meta", {}).get("iteration")
    if meta_iter != start:
        raise UserError(f"{source}: holds iteration {meta_iter!r}, but its name says {start}; the "
                        "snapshot was renamed or damaged (remove it to resume from the one before)")
    try:
        tensors = list(snap["state_dict"].values()) + [
            v for state in snap["solver"]["state"].values() for v in state.values()]
        if not all(torch.is_tensor(t) and torch.isfinite(t).all() for t in tensors):
            raise ValueError("non-finite weights or momentum")
        model.load_state_dict(snap["state_dict"])
        solver.load_state_dict(snap["solver"])
        for group in solver.param_groups:
            for p in group["params"]:
                buffer = solver.state[p].get("momentum_buffer")
                if buffer is not None and buffer.shape != p.shape:
                    raise ValueError(f"a momentum history of shape {tuple(buffer.shape)} for a "
                                     f"parameter of shape {tuple(p.shape)}")
        torch.set_rng_state(snap["rng"][ddp.rank])
        # A snapshot of an earlier version has no stream: its dropout drew from torch's RNG,
        # whose state (of rank 0, seeded as the stream) continues the same masks in one process.
        dropout.set_state(snap.get("dropout_rng", snap["rng"][0]))
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError, AttributeError) as e:
        raise UserError(f"{source}: not a usable snapshot of this run ({one_line(e)})") from None
    return _read_log(log_path, start)


def _read_log(log_path, start):
    """The records of log.jsonl up to iteration `start` (the resumed run rewrites the rest)."""
    if not os.path.exists(log_path):
        return []
    records, lineno = [], 0
    try:
        with open(log_path) as f:
            for lineno, line in enumerate(f, 1):
                rec = json.loads(line)
                if not isinstance(rec, dict) or not isinstance(rec.get("iteration"), int):
                    raise ValueError("not a record with an integer 'iteration'")
                if rec["iteration"] <= start:
                    records.append(rec)
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise UserError(f"{log_path}:{lineno}: unreadable training log "
                        f"({one_line(e)}); move it away to resume without the log") from None
    return records


class NonFiniteLoss(UserError):
    """The loss became NaN or infinite; the run stops (Caffe would silently go on)."""


class Report:
    """What a training run reports (fit): a progress bar (`progress`), and every `display`
    iterations and at the end a record with Caffe's fields to `log(record)` (None: no records)
    and, with `echo`, a line in Caffe's style on the console. An interval of 0 means none but the
    one at the end (Caffe's default display: 0, solver.cpp Step). batch_size: the global batch,
    for the images per second."""

    def __init__(self, batch_size, display, log=None, progress=True, echo=True):
        self.batch_size, self.display, self.log, self.progress, self.echo = batch_size, display, log, progress, echo
        self.bar = None

    def start(self, start, max_iter):
        self.max_iter = max_iter
        self.bar = tqdm(total=max_iter, initial=start, desc="train", unit="it", disable=not self.progress)
        self._time, self._it = time.perf_counter(), start

    def iteration(self, done, lr, parts):
        """Iteration `done` finished with learning rate `lr` and the loss's parts (criterion.last)."""
        self.bar.update(1)
        if self.log is None or not (_every(done, self.display) or done == self.max_iter):
            return
        now = time.perf_counter()
        rec = {"iteration": done, "lr": lr, **parts,
               "images_per_s": (done - self._it) * self.batch_size / max(now - self._time, 1e-9)}
        self._time, self._it = now, done
        self.log(rec)
        if self.echo:
            text = ", ".join(f"{k} = {v:.6g}" for k, v in parts.items() if k != "total")
            self.bar.write(f"Iteration {done}, lr = {lr:.6g}, loss = {rec['total']:.6g} ({text}), "
                           f"{rec['images_per_s']:.1f} images/s")

    def close(self):
        self.bar.close()


def fit(net, batches, criterion, solver, start, max_iter, report, *, device="cpu", gather=None, world_size=1,
        snapshot=None, snapshot_every=0):
    """Caffe's Solver::Step from iteration `start` to `max_iter`: forward, loss, backward, update.

    batches: yields (x, labels) for iterations start, start+1, ... (x: b x ... network input,
    labels: b x C; a loader's errors and signals are checked before, data.checked_batches);
    report: a Report; gather: concatenates the rows of every process (multi-process training);
    snapshot(done) every `snapshot_every` iterations and at the end (0: only at the end, as
    Caffe's default snapshot: 0; Solve still snapshots after training).
    """
    gather = gather or (lambda t: t)
    report.start(start, max_iter)
    for it, (x, labels) in zip(range(start, max_iter), batches):
        x, labels = x.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        loss = criterion(gather(net(x)), gather(labels))
        value = loss.item()
        if not math.isfinite(value):
            raise NonFiniteLoss(f"non-finite loss ({value}) at iteration {it}; stopped")
        solver.zero_grad(set_to_none=True)
        # Every process computes the same loss on the gathered B x B pairs but back-propagates only
        # into its own rows; DDP averages gradients over processes, hence the factor (one process:
        # none, which saves a graph node and gives the same gradient, loss * 1 being loss).
        (loss * world_size if world_size > 1 else loss).backward()
        lr = solver.current_lr
        try:
            solver.step()
        except OverflowError as e:
            raise NonFiniteLoss(f"{e}; stopped") from None
        done = it + 1
        report.iteration(done, lr, criterion.last)
        if snapshot is not None and (_every(done, snapshot_every) or done == max_iter):
            snapshot(done)
    report.close()


def _every(done, interval):
    """True at every `interval` iterations; never for interval 0 (Caffe: `param_.snapshot() &&
    iter_ % param_.snapshot() == 0`, the same for display)."""
    return interval > 0 and done % interval == 0


def _snapshot(model, solver, cfg, done, ddp, is_main, dropout, identity=None):
    """snapshot_iter_<done>.pth (Caffe's _iter_<N> naming): weights, solver history and RNG states
    (torch's of every process, and the dropout mask stream's, the same on every process)."""
    rng = torch.get_rng_state()
    rngs = [torch.empty_like(rng) for _ in range(ddp.world_size)] if ddp.enabled else [rng]
    if ddp.enabled:
        dist.all_gather(rngs, rng)
    if not is_main:
        return
    run_dir = cfg.out
    path = os.path.join(run_dir, f"snapshot_iter_{done}.pth")
    save_checkpoint(path, model.state_dict(), model.arch, model.bits,
                    meta=_meta(cfg, "dhn-snapshot", done, identity), overwrite=True,
                    extra={"solver": solver.state_dict(), "rng": rngs, "dropout_rng": dropout.get_state()})
    keep = cfg.keep_snapshots
    if keep:
        for it in sorted(snapshots(run_dir))[:-keep]:
            os.remove(os.path.join(run_dir, f"snapshot_iter_{it}.pth"))
