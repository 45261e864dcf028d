"""Every output knows where it came from: the findings of a hostile attempt at silent reuse and
silent mixing, each shown refused (or done right) — re-runs with changed settings, resumes,
mixed code files, imports named like runs, labels in another order, square code files."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import fake_datasets
from test_plan import hold_lock
from reproduce import compare, evaluate, train
from reproduce.data.lists import write_list
from reproduce.datasets import custom
from reproduce.errors import UserError
from reproduce.model.checkpoint import load_checkpoint, save_checkpoint
from reproduce.model.nets import DHNNet

FAST = ["--bits", "12", "--variants", "dhn", "--baselines", "lsh", "--methods", "--workers", "0",
        "--device", "cpu", "--smoke"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, random_caffenet):
    """A finished `custom --smoke` reproduction (DHN 12 bits, LSH) and the arguments it ran with."""
    d = tmp_path_factory.mktemp("provenance")
    argv = fake_datasets.make_toy_list_dataset(d, random_caffenet) + [
        "--out", str(d / "res"), "--work", str(d / "work")] + FAST
    custom.main(argv)
    return d, argv


def plan_of(argv, capsys):
    capsys.readouterr()
    custom.main(argv + ["--plan"])
    lines = capsys.readouterr().out.splitlines()
    jobs = {line.split()[0]: line.split()[1] for line in lines if len(line.split()) >= 3 and "/" in line.split()[0]
            or line.startswith("summary")}
    return jobs, lines


def test_plan_shows_every_job_done_after_a_run(finished, capsys):
    _, argv = finished
    jobs, lines = plan_of(argv, capsys)
    assert set(jobs.values()) == {"done"} and lines[-1] == f"{len(jobs)} jobs: {len(jobs)} done"
    assert {"train/dhn_12bits_seed0", "encode/dhn_12bits_seed0/query", "evaluate/DHN_12bits_seed0",
            "cache/train", "features/train", "baseline/LSH_12bits_seed0", "summary"} <= set(jobs)


@pytest.mark.parametrize("change, first, why", [
    (["--max-iter", "5"], "work/train/dhn_12bits_seed0", "trained with solver.max_iter 3, now 5"),
    (["--base-lr", "0.1"], "work/train/dhn_12bits_seed0", "trained with solver.base_lr 2e-05, now 0.1"),
    (["--pipeline", "pycaffe"], "res/codes/dhn_12bits_seed0_query.h5", "encoded with pipeline 'imagedata', now 'pycaffe'"),
    (["--topk", "5"], "res/metrics/DHN_12bits_seed0", "evaluated with protocol.topk null, now 5"),
])
def test_a_rerun_with_other_settings_is_refused_before_any_work(finished, change, first, why):
    d, argv = finished
    final = d / "work" / "train" / "dhn_12bits_seed0" / "final.pth"
    before = final.stat().st_mtime_ns
    args = list(argv)
    for option, value in zip(change[::2], change[1::2]):
        if option in args:
            args[args.index(option) + 1] = value
        else:
            args += [option, value]
    with pytest.raises(UserError, match=rf"{first}: {why}") as e:
        custom.main(args)
    assert "pass --rerun-stale" in str(e.value) and final.stat().st_mtime_ns == before


def test_other_weights_or_other_images_under_the_same_names_are_stale(finished, capsys, tmp_path):
    d, argv = finished
    other = tmp_path / "other.pth"
    torch.manual_seed(1)
    save_checkpoint(other, DHNNet("caffenet", bits=0).state_dict(), "caffenet", 0)
    args = list(argv)
    args[args.index("--weights") + 1] = str(other)
    jobs, lines = plan_of(args, capsys)
    assert jobs["train/dhn_12bits_seed0"] == "stale" and jobs["features/train"] == "stale"
    assert any(line.startswith("stale: train/dhn_12bits_seed0: made from weights with sha1") for line in lines)
    # the same list names under another root: the image cache and everything made from it
    shutil.copytree(d / "data", tmp_path / "copy")
    args = list(argv)
    args[args.index("--root") + 1] = str(tmp_path / "copy")
    jobs, lines = plan_of(args, capsys)
    assert jobs["cache/train"] == "stale" and jobs["train/dhn_12bits_seed0"] == "stale"
    assert any("made from lists/train with root" in line for line in lines)
    # one image replaced in place (same path, new content)
    image = d / "data" / "mirflickr" / "im1.jpg"
    saved, stat = image.read_bytes(), image.stat()
    try:
        image.write_bytes(saved + b"\0")
        jobs, lines = plan_of(argv, capsys)
        assert jobs["cache/train"] == "stale" and any("with images" in line for line in lines)
    finally:              # as it was, for the module's other tests
        image.write_bytes(saved)
        os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_new_bit_lengths_add_jobs_and_the_tables_hold_only_this_plan(finished, capsys):
    _, argv = finished
    args = [a if a != "12" else "16" for a in argv]
    jobs, _ = plan_of(args, capsys)
    assert jobs["train/dhn_16bits_seed0"] == "pending" and "train/dhn_12bits_seed0" not in jobs
    assert jobs["summary"] == "pending" and jobs["features/train"] == "done"


def test_a_deleted_training_is_trained_again_and_its_codes_are_not_kept(finished, capsys, tmp_path):
    d, argv = finished
    run = d / "work" / "train" / "dhn_12bits_seed0"
    shutil.move(run, tmp_path / "moved")
    try:
        jobs, _ = plan_of(argv, capsys)
    finally:
        shutil.move(tmp_path / "moved", run)
    assert jobs["train/dhn_12bits_seed0"] == "pending"
    assert jobs["encode/dhn_12bits_seed0/query"] == "pending" and jobs["evaluate/DHN_12bits_seed0"] == "pending"
    assert jobs["baseline/LSH_12bits_seed0"] == "done"


def test_rerun_stale_trains_again_a_run_whose_final_checkpoint_is_damaged(finished, capsys):
    # "its identity cannot be read ...; pass --rerun-stale to recompute it", and --rerun-stale
    # then failed on the same damaged final.pth, run after run
    d, argv = finished
    final = d / "work" / "train" / "dhn_12bits_seed0" / "final.pth"
    before = load_checkpoint(final)["meta"]["identity"]["hex"]
    os.truncate(final, 100_000)                        # a disk error, a copy cut short
    with pytest.raises(UserError, match=r"dhn_12bits_seed0: its identity cannot be read .* pass --rerun-stale"):
        custom.main(argv)
    custom.main(argv + ["--rerun-stale"])
    assert load_checkpoint(final)["meta"]["identity"]["hex"] == before
    jobs, _ = plan_of(argv, capsys)
    assert set(jobs.values()) == {"done"}


def test_sweep_settings_and_the_validation_split_are_in_the_identities(finished):
    from reproduce.pipeline.reproduction import Reproduction, config_from_args, get_args_parser
    _, argv = finished

    def jobs(*extra):
        args = get_args_parser(custom.TEMPLATE).parse_args(argv + ["--sweep", "--sweep-bits", "12"] + list(extra))
        preset = custom.Preset("toy", "toy", None, custom.make_lists, protocol={"topk": None, "ties": "index",
                               "zero_hit": "skip", "radius": 2, "ns": [100]})
        config = config_from_args(custom.TEMPLATE, args)
        return {j.name: j.identity["hex"] for j in Reproduction(preset, config).plan(dry=True).jobs}
    base = jobs()
    for extra in (["--validation-fraction", "0.2"], ["--sweep-lrs", "1e-3"], ["--sweep-max-iter", "2"],
                  ["--sweep-quant-weights", "1"]):
        other = jobs(*extra)
        assert other.get("sweep/dhn") != base["sweep/dhn"], extra
        assert other["train/dhn_12bits_seed0"] != base["train/dhn_12bits_seed0"], extra


# ------------------------------------------------------------------------------ resumes
@pytest.fixture
def small(tmp_path):
    fake_datasets.make_command_inputs(tmp_path, np.random.default_rng(0), 4)
    return tmp_path, ["--train-list", str(tmp_path / "list.txt"), "--root", str(tmp_path / "imgs"), "--weights",
                      str(tmp_path / "base.pth"), "--bits", "8", "--batch-size", "2", "--workers", "0", "--quiet",
                      "--device", "cpu", "--snapshot", "1", "--out", str(tmp_path / "run")]


def test_resume_of_a_finished_run_changes_nothing(small, capsys):
    d, argv = small
    train.main(argv + ["--max-iter", "2", "--keep-snapshots", "1"])
    final, log = d / "run" / "final.pth", d / "run" / "log.jsonl"
    (d / "run" / "snapshot_iter_2.pth").unlink()            # as the dataset commands do
    before = (final.stat().st_mtime_ns, log.read_bytes())
    capsys.readouterr()
    train.main(argv + ["--max-iter", "2", "--resume"])
    said = capsys.readouterr().out
    assert "finished at iteration 2; nothing to do" in said
    assert "wrote" not in said                  # nothing was written: no "wrote final.pth" after it
    assert (final.stat().st_mtime_ns, log.read_bytes()) == before
    with pytest.raises(UserError, match=r"finished at iteration 2; continuing it to 3 needs snapshot_iter_2.pth"):
        train.main(argv + ["--max-iter", "3", "--resume"])
    with pytest.raises(UserError, match=r"finished at iteration 2; --max-iter 1 is below it"):
        train.main(argv + ["--max-iter", "1", "--resume"])
    assert (final.stat().st_mtime_ns, log.read_bytes()) == before


def test_resume_continues_a_finished_run_from_its_last_snapshot(small, capsys):
    d, argv = small
    train.main(argv + ["--max-iter", "2"])
    capsys.readouterr()
    train.main(argv + ["--max-iter", "3", "--resume"])
    assert "continuing the finished run from iteration 2 to 3" in capsys.readouterr().out
    assert load_checkpoint(d / "run" / "final.pth")["meta"]["iteration"] == 3
    with pytest.raises(UserError, match=r"final.pth: the run finished at iteration 3; --max-iter 2 is below it"):
        train.main(argv + ["--max-iter", "2", "--resume"])
    # killed after its snapshot at 3 (no final.pth): a resume to 2 would label iteration 3's weights 2
    (d / "run" / "final.pth").unlink()
    with pytest.raises(UserError, match=r"snapshot_iter_3.pth: the run is already at iteration 3, beyond "
                                        r"--max-iter 2"):
        train.main(argv + ["--max-iter", "2", "--resume"])
    assert not (d / "run" / "final.pth").exists()


def test_resume_after_the_list_or_images_changed_is_refused_with_or_without_a_cache(small):
    d, argv = small
    for cache in ([], ["--cache", "none"]):
        shutil.rmtree(d / "run", ignore_errors=True)
        train.main(argv + ["--max-iter", "1"] + cache)
        lines = (d / "list.txt").read_text().splitlines()
        (d / "list2.txt").write_text("\n".join([lines[1].split()[0] + " 1 0"] + lines[1:]) + "\n")
        args = [a if a != str(d / "list.txt") else str(d / "list2.txt") for a in argv]
        with pytest.raises(UserError, match=r"config.json: this run was made from lists/train with entries"):
            train.main(args + ["--max-iter", "2", "--resume"] + cache)


def test_train_removes_what_a_killed_train_left_in_its_run_folder(small):
    # SIGKILL while a snapshot was written left .tmp-snapshot_iter_<N>.pth-* (a partial file as
    # large as a snapshot: 455 MB for CaffeNet); `train --resume` never removed it
    d, argv = small
    train.main(argv + ["--max-iter", "1"])
    tmp = d / "run" / ".tmp-snapshot_iter_2.pth-killed"
    tmp.write_bytes(b"partial")
    (d / "run" / ".staging-killed").mkdir()
    train.main(argv + ["--max-iter", "2", "--resume"])
    assert not tmp.exists() and not (d / "run" / ".staging-killed").exists()
    assert load_checkpoint(d / "run" / "final.pth")["meta"]["iteration"] == 2


def test_a_deep_baselines_checkpoint_is_not_the_weights_of_another_method(small):
    d, argv = small
    argv[argv.index("--batch-size") + 1] = "4"          # DNNH's triplets need 3 images or more
    train.main(argv + ["--max-iter", "1", "--method", "dnnh"])
    base = [a if a != str(d / "base.pth") else str(d / "run" / "final.pth") for a in argv]
    for method, name in (([], "DHN"), (["--method", "cnnh"], "--method cnnh")):
        with pytest.raises(UserError, match=rf"trained as the deep baseline dnnh; it cannot be the --weights of {name}"):
            train.main([a if a != str(d / "run") else str(d / "run2") for a in base] + ["--max-iter", "1"] + method)


# ------------------------------------------------------------------------------ consumers
def encode(d, checkpoint, out, extra=()):
    subprocess.run([sys.executable, "-m", "reproduce.encode", "--checkpoint", str(checkpoint), "--list",
                    str(d / "list.txt"), "--root", str(d / "imgs"), "--out", str(out), "--workers", "0",
                    "--device", "cpu", *extra], check=True, capture_output=True)


def test_codes_of_two_checkpoints_or_pipelines_are_not_evaluated_together(tmp_path):
    d = tmp_path
    fake_datasets.make_command_inputs(d, np.random.default_rng(0), 6)
    torch.manual_seed(3)
    save_checkpoint(d / "dhn2.pth", DHNNet("caffenet", bits=8).state_dict(), "caffenet", 8)
    encode(d, d / "dhn.pth", d / "a.h5")
    encode(d, d / "dhn2.pth", d / "b.h5")
    encode(d, d / "dhn.pth", d / "c.h5", ["--oversample"])
    for other, what in (("b.h5", "checkpoint_sha1"), ("c.h5", "transform")):
        with pytest.raises(UserError, match=rf"a.h5 and .*{other}: codes of different models or image pipelines \({what}"):
            evaluate.main(["--query", str(d / "a.h5"), "--database", str(d / other), "--out", str(d / "m")])
    evaluate.main(["--query", str(d / "a.h5"), "--database", str(d / "b.h5"), "--out", str(d / "m"), "--allow-mixed"])
    doc = json.load(open(d / "m" / "metrics.json"))
    assert "checkpoint_sha1" in doc["inputs"]["mixed"] and doc["identity"]["inputs"]["query"]
    # compare: features of two checkpoints (the baselines would be fitted on one, tested on another)
    for name, ckpt in (("f1.h5", "base.pth"), ("f2.h5", "dhn.pth")):
        encode(d, d / ckpt, d / name, ["--features"])
    with pytest.raises(UserError, match=r"f1.h5 and .*f2.h5: features of different models"):
        compare.main(["--dataset", "cifar10", "--out", str(d / "cmp"), "--baselines", "lsh",
                      "--features", str(d / "f1.h5"), str(d / "f1.h5"), str(d / "f2.h5"), "--bits", "4"])


def test_imports_named_like_a_run_and_runs_of_another_protocol_are_refused(tmp_path, rng):
    codes = np.where(rng.standard_normal((60, 16)) > 0, 1, -1)
    labels = np.eye(4, dtype=np.uint8)[np.arange(60) % 4]
    np.savez(tmp_path / "c.npz", codes=codes, labels=labels)
    evaluate.main(["--query", str(tmp_path / "c.npz"), "--database", str(tmp_path / "c.npz"), "--out",
                   str(tmp_path / "runs" / "dhn"), "--method", "DHN", "--dataset", "cifar10", "--seed", "0"])
    with pytest.raises(UserError, match=r"--import DHN:16:.*the runs already hold DHN; give the import another name"):
        compare.main(["--dataset", "cifar10", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "o"),
                      "--import", f"DHN:16:{tmp_path / 'c.npz'}:{tmp_path / 'c.npz'}"])
    # HashNet's MS-COCO protocol counts a query without hits as AP 0; a run that left them out
    evaluate.main(["--query", str(tmp_path / "c.npz"), "--database", str(tmp_path / "c.npz"), "--out",
                   str(tmp_path / "coco" / "dhn"), "--method", "DHN", "--dataset", "coco", "--seed", "0"])
    with pytest.raises(UserError, match=r"evaluated with zero_hit='skip', but the coco protocol here is zero_hit='zero'"):
        compare.main(["--dataset", "coco", "--topk", "all", "--runs", str(tmp_path / "coco"), "--out", str(tmp_path / "o")])


def test_compare_refuses_to_average_as_seeds_runs_made_with_other_settings(finished, tmp_path):
    """compare --runs of two plans' folders averaged DHN seed 0 (--max-iter 3) and a seed 1 of
    another plan (--max-iter 5) into one "mean ± std over seeds" without a word."""
    d, _ = finished
    record = json.loads((d / "res" / "metrics" / "DHN_12bits_seed0" / "metrics.json").read_text())

    def other_plan(folder, **changes):
        doc = json.loads(json.dumps(record).replace("_seed0", "_seed1"))
        doc["seed"] = 1
        doc["identity"]["lineage"]["evaluate/DHN_12bits_seed1"]["seed"] = 1
        doc["identity"]["lineage"]["train/dhn_12bits_seed1"].update(seed=1, **changes)
        out = tmp_path / folder / "metrics" / "DHN_12bits_seed1"
        out.mkdir(parents=True)
        (out / "metrics.json").write_text(json.dumps(doc))
        return str(tmp_path / folder)

    same, longer = other_plan("same"), other_plan("longer", **{"solver.max_iter": 5})
    with pytest.raises(UserError, match=r"DHN_12bits_seed1/metrics.json: DHN 12 bits seed 1 was not made like seed 0 "
                                        r"in .*DHN_12bits_seed0/metrics.json \(train/dhn_12bits_seed\* with "
                                        r"solver.max_iter 3, here 5\)"):
        compare.main(["--dataset", "toy", "--topk", "all", "--runs", str(d / "res" / "metrics"), longer,
                      "--out", str(tmp_path / "o")])
    assert not (tmp_path / "o").exists()
    # the seeds of one setting run in two folders are averaged as before
    compare.main(["--dataset", "toy", "--topk", "all", "--runs", str(d / "res" / "metrics"), same,
                  "--out", str(tmp_path / "o")])
    assert "seed0=" in (tmp_path / "o" / "table1.md").read_text()


def test_query_and_database_swapped_are_refused(finished, tmp_path):
    """evaluate --query DB --database Q (or one file as both), compare --import NAME:BITS:DB:Q and
    compare --features in another order were evaluated without a word, though the per-dataset
    commands' files record their split."""
    d, _ = finished
    q, db = (str(d / "res" / "codes" / f"dhn_12bits_seed0_{s}.h5") for s in ("query", "database"))
    train_f, query_f, db_f = (str(d / "work" / "features" / f"{s}.h5") for s in ("train", "query", "database"))
    out = str(tmp_path / "m")
    with pytest.raises(UserError, match=r"_database.h5: codes of the database split \(its attribute split\), "
                                        r"given as the query; pass --allow-mixed"):
        evaluate.main(["--query", db, "--database", q, "--out", out])
    with pytest.raises(UserError, match=r"_query.h5: codes of the query split .*given as the database"):
        evaluate.main(["--query", q, "--database", q, "--out", out])
    with pytest.raises(UserError, match=r"--import X:12:.*_database.h5: codes of the database split"):
        compare.main(["--dataset", "toy", "--topk", "all", "--import", f"X:12:{db}:{q}", "--out", out])
    with pytest.raises(UserError, match=r"features/query.h5: features of the query split .*given as the train"):
        compare.main(["--dataset", "toy", "--topk", "all", "--baselines", "lsh", "--bits", "12",
                      "--features", query_f, train_f, db_f, "--out", out])
    assert not os.path.exists(out)
    evaluate.main(["--query", q, "--database", db, "--out", out])
    evaluate.main(["--query", db, "--database", q, "--out", out + "2", "--allow-mixed"])     # on purpose
    assert "given as the query" in json.loads(open(os.path.join(out + "2", "metrics.json")).read())["inputs"]["mixed"]


def test_labels_from_a_list_are_matched_by_path(tmp_path):
    d = tmp_path
    fake_datasets.make_command_inputs(d, np.random.default_rng(0), 6)
    encode(d, d / "dhn.pth", d / "q.h5")
    evaluate.main(["--query", str(d / "q.h5"), "--database", str(d / "q.h5"), "--out", str(d / "m1")])
    lines = (d / "list.txt").read_text().splitlines()
    (d / "shuffled.txt").write_text("\n".join(lines[::-1]) + "\n")
    evaluate.main(["--query", str(d / "q.h5"), "--database", str(d / "q.h5"), "--out", str(d / "m2"),
                   "--query-labels", str(d / "shuffled.txt"), "--database-labels", str(d / "shuffled.txt")])
    first, second = (json.load(open(d / m / "metrics.json"))["metrics"] for m in ("m1", "m2"))
    assert first == second
    write_list(d / "short.txt", ["0.png"], np.array([[1, 0]]))
    with pytest.raises(UserError, match=r"short.txt: has no line for 1.png"):
        evaluate.main(["--query", str(d / "q.h5"), "--database", str(d / "q.h5"), "--out", str(d / "m3"),
                       "--query-labels", str(d / "short.txt")])


def test_square_code_files_need_their_orientation(tmp_path, rng):
    codes = np.where(rng.standard_normal((16, 16)) > 0, 1, -1)
    classes = np.arange(16) % 3
    np.savez(tmp_path / "sq.npz", codes=codes, labels=classes)
    np.savez(tmp_path / "db.npz", codes=np.where(rng.standard_normal((50, 16)) > 0, 1, -1), labels=np.arange(50) % 3)
    args = ["--query", str(tmp_path / "sq.npz"), "--database", str(tmp_path / "db.npz"), "--out", str(tmp_path / "m")]
    with pytest.raises(UserError, match=r"sq.npz: codes are 16 x 16: the samples could be the rows or the columns; "
                                        r"say which with --orientation"):
        evaluate.main(args)
    evaluate.main(args + ["--orientation", "NxK"])
    assert json.load(open(tmp_path / "m" / "metrics.json"))["inputs"]["query"]["orientation"] == "N x K (given)"


def test_a_killed_writers_staging_folder_is_never_a_result(tmp_path, rng):
    codes = np.where(rng.standard_normal((60, 16)) > 0, 1, -1)
    np.savez(tmp_path / "c.npz", codes=codes, labels=np.eye(4, dtype=np.uint8)[np.arange(60) % 4])
    evaluate.main(["--query", str(tmp_path / "c.npz"), "--database", str(tmp_path / "c.npz"), "--out",
                   str(tmp_path / "runs" / "a"), "--method", "DHN", "--seed", "0"])
    staging = tmp_path / "runs" / "a" / ".staging-x1"            # left by a kill -9
    staging.mkdir()
    shutil.copy(tmp_path / "runs" / "a" / "metrics.json", staging / "metrics.json")
    # read, the staging copy would be "a second result for DHN 16 bits seed 0"
    compare.main(["--dataset", "cifar10", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "o")])
    evaluate.main(["--query", str(tmp_path / "c.npz"), "--database", str(tmp_path / "c.npz"), "--out",
                   str(tmp_path / "runs" / "a"), "--method", "DHN", "--seed", "0", "--force"])
    assert not staging.exists()                                    # the next writer there removed it


def test_a_killed_summarys_staging_folder_is_removed_by_the_next_run(finished):
    # kill -9 while the tables were written left out/.staging-*; the summary's outputs named
    # only run.json, so the re-run's clean-up never looked into out itself
    d, argv = finished
    staging = d / "res" / ".staging-killed"
    staging.mkdir()
    (staging / ".tmp-fig_a_precision_radius2.png-x").write_bytes(b"partial")
    tmp = d / "res" / ".tmp-run.json-killed"
    tmp.write_text("{")
    os.remove(d / "res" / "run.json")                  # the summary runs again, nothing else
    custom.main(argv)
    assert not staging.exists() and not tmp.exists() and (d / "res" / "run.json").is_file()


def test_a_local_run_refuses_while_jobs_of_its_plan_are_queued_in_slurm(finished, capsys, monkeypatch):
    # `--executor slurm --no-wait`, then the same command without --executor slurm: the local run
    # ran the jobs SLURM still held, and SLURM ran them again (failing on the job locks)
    from reproduce.pipeline import slurm_executor
    d, argv = finished
    status = d / "work" / "jobs" / "summary.json"
    status.parent.mkdir(parents=True, exist_ok=True)
    status.write_text(json.dumps({"state": "submitted", "identity": "x", "slurm_job": "4242"}))
    monkeypatch.setattr(slurm_executor, "squeue", lambda ids: {"4242": "PENDING"})
    try:
        with pytest.raises(UserError, match=r"1 job\(s\) of this plan are queued or running in SLURM "
                                             r"\(summary: pending \(SLURM job 4242"):
            custom.main(argv)
        jobs, _ = plan_of(argv, capsys)                   # --plan still shows it
        assert jobs["summary"] in ("done", "pending")
        monkeypatch.setattr(slurm_executor, "squeue", lambda ids: {})          # it ended
        custom.main(argv)
    finally:
        status.unlink(missing_ok=True)


def test_plan_writes_nothing_into_work(finished, capsys, tmp_path):
    # --plan wrote the lists into --work without its lock: beside a running command (an edited
    # list) it rewrote the lists that command's jobs read, and a fresh --work was created
    d, argv = finished
    lists = sorted((d / "work").rglob("lists*/*.txt"))
    before = [(p, p.stat().st_mtime_ns) for p in lists]
    jobs, _ = plan_of(argv, capsys)
    assert set(jobs.values()) == {"done"} and [(p, p.stat().st_mtime_ns) for p in lists] == before
    fresh = [str(tmp_path / "fresh") if a == str(d / "work") else a for a in argv]
    jobs, _ = plan_of(fresh, capsys)
    assert jobs["train/dhn_12bits_seed0"] == "pending" and not (tmp_path / "fresh").exists()


# ------------------------------------------------------------------------------ two writers
def test_a_dataset_commands_training_and_train_resume_exclude_each_other(tmp_path, random_caffenet):
    # The training job held only its job lock (<work>/jobs/train/<run>.lock), not the run folder's:
    # `train --resume --out <work>/train/<run>` with the same settings trained in the same folder
    # beside it, both writing snapshots, log.jsonl and final.pth.
    argv = fake_datasets.make_toy_list_dataset(tmp_path, random_caffenet) + [
        "--out", str(tmp_path / "res"), "--work", str(tmp_path / "work")] + FAST
    run = tmp_path / "work" / "train" / "dhn_12bits_seed0"
    proc = hold_lock(run)
    try:
        with pytest.raises(UserError, match=rf"^{run}: in use by PID {proc.pid} on \S+ since \d{{4}}-.*one writer"):
            custom.main(argv)
        assert os.listdir(run) == [".lock"]                          # the holder's, nothing beside it
    finally:
        proc.kill()
        proc.wait()


def test_train_names_the_run_folder_another_writer_holds(small):
    d, argv = small
    proc = hold_lock(d / "run")                                      # e.g. a dataset command's job
    try:
        with pytest.raises(UserError, match=rf"^--out {d / 'run'}: in use by PID {proc.pid} "):
            train.main(argv + ["--max-iter", "1", "--resume"])
    finally:
        proc.kill()
        proc.wait()


def test_plan_refuses_an_out_or_work_that_is_a_file_as_the_run_does(tmp_path, random_caffenet, capsys):
    # --plan exited 0 with --out (or --work) naming a regular file, which the run itself refuses
    from reproduce import demo
    mine = tmp_path / "mine.txt"
    mine.write_text("a user's file\n")
    base = fake_datasets.make_toy_list_dataset(tmp_path, random_caffenet) + FAST
    for option in ("--out", "--work"):
        places = {"--out": str(tmp_path / "res"), "--work": str(tmp_path / "work"), option: str(mine)}
        for command, argv in ((custom, base), (demo, ["--bits", "8", "--seeds", "0", "--max-iter", "2"])):
            said = []
            for extra in ([], ["--plan"]):
                with pytest.raises(UserError, match=rf"^{option}: ") as e:
                    command.main(argv + [a for kv in places.items() for a in kv] + extra)
                said.append(str(e.value))
            assert said[0] == said[1] and str(mine) in said[0] and "\n" not in said[0]
    assert mine.read_text() == "a user's file\n"
    assert not (tmp_path / "res").exists() and not (tmp_path / "work").exists()


def test_figures_of_an_earlier_plan_do_not_stay_beside_the_tables_of_this_one(tmp_path, random_caffenet):
    # --bits 12 16, then --bits 12 into the same --out: the tables were rebuilt from the 12-bit
    # runs, but fig_b/fig_c at 16 bits of the first plan stayed beside them, as if made from it
    argv = fake_datasets.make_toy_list_dataset(tmp_path, random_caffenet) + [
        "--out", str(tmp_path / "res"), "--work", str(tmp_path / "work")] + FAST
    custom.main(argv[:argv.index("--bits") + 2] + ["16"] + argv[argv.index("--bits") + 2:])
    res = tmp_path / "res"
    assert (res / "fig_b_pr_curve_16bits.png").is_file() and not (res / "fig_b_pr_curve_12bits.png").exists()
    (res / "notes.txt").write_text("a user's file\n")
    custom.main(argv)
    figures = sorted(p.name for p in res.glob("fig_*"))
    assert figures == sorted(f"{n}.{e}" for n in ("fig_a_precision_radius2", "fig_b_pr_curve_12bits",
                                                    "fig_c_precision_at_n_12bits") for e in ("png", "pdf"))
    assert (res / "notes.txt").read_text() == "a user's file\n"
    assert json.load(open(res / "run.json"))["outputs"][0] == "table1.md"
