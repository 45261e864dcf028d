"""The job plan (reproduce.pipeline.plan), identities (reproduce.pipeline.identity) and writer locks
(reproduce.utils.locks) on toy jobs: states, staleness, forcing downstream, failures, leftovers."""
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

import toy_jobs
from reproduce.data.lists import ImageList
from reproduce.errors import UserError
from reproduce.pipeline import identity as ids
from reproduce.pipeline.executors import ExecutorSettings, plan_main
from reproduce.pipeline.plan import Job, Plan, run_inline
from reproduce.utils.locks import writer_lock


def toy_plan(tmp_path, a=1, b=2, scale=1, title="t"):
    """value/a, value/b -> cache (intermediate) -> total -> summary."""
    def value(name, v):
        out = str(tmp_path / f"{name}.json")
        return Job(f"value/{name}", "value", {"value": v}, "toy_jobs:write_value", {"out": out, "value": v},
                   stamp=out, verb="written")
    ja, jb = value("a", a), value("b", b)
    cache_out = str(tmp_path / "cache.json")
    cache = Job("cache", "cache", {}, "toy_jobs:total", {"out": cache_out, "parts": [ja.stamp]}, stamp=cache_out,
                inputs={ja.name: ja.identity}, deps=(ja.name,), intermediate=True)
    total_out = str(tmp_path / "total.json")
    total = Job("total", "total", {"scale": scale}, "toy_jobs:total",
                {"out": total_out, "parts": [ja.stamp, jb.stamp, cache.stamp]}, stamp=total_out,
                inputs={j.name: j.identity for j in (ja, jb)}, deps=(ja.name, jb.name, cache.name), verb="summed")
    summary_out = str(tmp_path / "summary.json")
    summary = Job("summary", "summary", {"title": title}, "toy_jobs:total",
                  {"out": summary_out, "parts": [total.stamp]}, stamp=summary_out,
                  inputs={total.name: total.identity}, deps=(total.name,), summary=True, lineage=False)
    return Plan([ja, jb, cache, total, summary], str(tmp_path / "jobs"))


def ran(plan, **kw):
    toy_jobs.CALLS.clear()
    state, why = plan.states()
    plan.check_stale(kw.get("rerun_stale", False), state, why)
    run_inline(plan, state, log=lambda text: None)
    return [os.path.basename(out) for _, out in toy_jobs.CALLS]


def test_a_jobs_identity_does_not_hold_where_its_function_lives(tmp_path):
    """Moving a job's function to another module (reproduce.jobs -> reproduce.pipeline.jobs) makes no
    output stale: the identity holds the job's kind, settings and inputs, not its `func`."""
    def job(func):
        return Job("value/a", "value", {"value": 1}, func, {"out": str(tmp_path / "a.json"), "value": 1},
                   stamp=str(tmp_path / "a.json"))
    moved, before = job("toy_jobs:write_value"), job("old.place.toy_jobs:write_value")
    assert moved.identity == before.identity and "toy_jobs" not in json.dumps(moved.identity)
    assert ran(Plan([moved], str(tmp_path / "jobs"))) == ["a.json"]
    state, _ = Plan([before], str(tmp_path / "jobs")).states()      # its function is not even importable
    assert state == {"value/a": "done"}


def test_done_means_done_with_these_settings(tmp_path):
    assert ran(toy_plan(tmp_path)) == ["a.json", "b.json", "cache.json", "total.json", "summary.json"]
    assert json.load(open(tmp_path / "summary.json"))["value"] == 4
    assert ran(toy_plan(tmp_path)) == []                               # all done: nothing runs
    state, _ = toy_plan(tmp_path).states()
    assert set(state.values()) == {"done"}
    # another setting upstream: refused before any work, naming the first output and what changed
    with pytest.raises(UserError, match=r"a.json: written with value 1, now 5 \(2 more stale output\(s\)\); "
                                        "pass --rerun-stale"):
        ran(toy_plan(tmp_path, a=5))
    assert json.load(open(tmp_path / "a.json"))["value"] == 1 and toy_jobs.CALLS == []
    state, why = toy_plan(tmp_path, a=5).states()
    assert state == {"value/a": "stale", "value/b": "done", "cache": "stale", "total": "stale", "summary": "pending"}
    assert why["total"] == "made from value/a with value 1, now 5"
    # --rerun-stale recomputes the stale jobs and everything downstream, nothing else
    assert ran(toy_plan(tmp_path, a=5), rerun_stale=True) == ["a.json", "cache.json", "total.json", "summary.json"]
    assert json.load(open(tmp_path / "summary.json"))["value"] == 12
    # a summary (the tables) is rebuilt when its identity changes, never refused as stale
    assert ran(toy_plan(tmp_path, a=5, title="u")) == ["summary.json"]


def test_a_deleted_output_redoes_what_depends_on_it(tmp_path):
    """A training folder removed: the re-run retrains, and the codes made from the old model are
    made again (not kept) although their recorded identity is the same."""
    ran(toy_plan(tmp_path))
    os.remove(tmp_path / "b.json")
    state, _ = toy_plan(tmp_path).states()
    assert state["value/b"] == "pending" and state["total"] == "pending" and state["value/a"] == "done"
    assert state["cache"] == "done"               # intermediate, and nothing that reads it runs
    assert ran(toy_plan(tmp_path)) == ["b.json", "total.json", "summary.json"]


def test_an_intermediate_output_is_redone_only_for_a_job_that_runs(tmp_path):
    ran(toy_plan(tmp_path))
    os.remove(tmp_path / "cache.json")          # an image cache removed to free the disk
    assert ran(toy_plan(tmp_path)) == []
    os.remove(tmp_path / "total.json")
    assert ran(toy_plan(tmp_path)) == ["cache.json", "total.json", "summary.json"]


def test_failed_jobs_are_recorded_and_run_again(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TOY_FAIL", "b.json")
    with pytest.raises(UserError, match="toy failure"):
        ran(toy_plan(tmp_path))
    plan = toy_plan(tmp_path)
    state, _ = plan.states()
    assert state["value/a"] == "done" and state["value/b"] == "failed" and state["total"] == "pending"
    status = json.load(open(plan.status_path(plan.by_name["value/b"])))
    assert status["state"] == "failed" and "toy failure" in status["error"]
    plan_main(plan, ExecutorSettings(show_plan=True))
    printed = capsys.readouterr().out.splitlines()
    assert printed[1].split() == ["value/b", "failed", str(tmp_path / "b.json")]
    assert printed[-1] == "5 jobs: 1 done, 3 pending, 1 failed"
    monkeypatch.delenv("TOY_FAIL")
    assert ran(toy_plan(tmp_path)) == ["b.json", "cache.json", "total.json", "summary.json"]
    assert not os.path.exists(plan.status_path(plan.by_name["value/b"]))


def test_unreadable_or_foreign_outputs_are_stale(tmp_path):
    ran(toy_plan(tmp_path))
    (tmp_path / "a.json").write_text("{not json")
    (tmp_path / "b.json").write_text('{"value": 2}')           # an output of an older version
    state, why = toy_plan(tmp_path).states()
    assert state["value/a"] == "stale" and "cannot be read" in why["value/a"]
    assert state["value/b"] == "stale" and "cannot be read" in why["value/b"]


def test_leftovers_of_a_killed_writer_are_removed_before_the_job_runs(tmp_path):
    ran(toy_plan(tmp_path))
    os.remove(tmp_path / "a.json")
    junk = tmp_path / ".tmp-a.json-x1y2"
    junk.write_text("half")
    ran(toy_plan(tmp_path))
    assert not junk.exists() and (tmp_path / "a.json").exists()


# ------------------------------------------------------------------------------- identities
def test_identity_is_a_merkle_hash_of_settings_and_inputs():
    a = ids.make_identity("a", "value", {"x": 1})
    b = ids.make_identity("b", "total", {"y": [1, 2]}, {"a": a})
    assert ids.make_identity("renamed", "total", {"y": [1, 2]}, {"a": a})["hex"] == b["hex"]   # names don't count
    a2 = ids.make_identity("a", "value", {"x": 2})
    b2 = ids.make_identity("b", "total", {"y": [1, 2]}, {"a": a2})
    assert b2["hex"] != b["hex"] and ids.differences(b, b2) == "made from a with x 1, now 2"
    assert ids.differences(b, ids.make_identity("b", "total", {"y": [1, 3]}, {"a": a}), verb="summed") == \
        "summed with y [1, 2], now [1, 3]"
    assert ids.differences(b, b) is None and "older version" in ids.differences(None, b)
    nested = ids.make_identity("n", "k", {"solver": {"max_iter": 2, "lr": 0.1}})
    assert nested["settings"] == {"solver.lr": 0.1, "solver.max_iter": 2}
    longer = ids.make_identity("n", "k", {"solver": {"max_iter": 9, "lr": 0.1}})
    assert ids.differences(nested, longer, ignore=("solver.max_iter",)) is None
    assert ids.from_attr(ids.to_attr(b)) == b and ids.from_attr("garbage") is None


def test_images_identity_is_root_sizes_and_mtimes(tmp_path):
    for root in ("r1", "r2"):
        (tmp_path / root).mkdir()
        for name in ("a.jpg", "b.jpg"):
            (tmp_path / root / name).write_bytes(b"x" * 10)
            os.utime(tmp_path / root / name, ns=(1, 1))
    il = ImageList(["a.jpg", "b.jpg"], np.eye(2, dtype=np.uint8), "l.txt", [1, 2])
    first = ids.images_identity("lists/train", il, tmp_path / "r1")
    assert ids.images_identity("lists/train", il, tmp_path / "r1")["hex"] == first["hex"]
    other_root = ids.images_identity("lists/train", il, tmp_path / "r2")
    assert ids.differences(first, other_root).startswith("made with root ")
    (tmp_path / "r1" / "b.jpg").write_bytes(b"y" * 10)           # same size, new mtime
    assert ids.differences(first, ids.images_identity("lists/train", il, tmp_path / "r1")).startswith("made with images")
    relabelled = ImageList(["a.jpg", "b.jpg"], np.eye(2, dtype=np.uint8)[::-1], "l.txt", [1, 2])
    assert "entries" in ids.differences(first, ids.images_identity("lists/train", relabelled, tmp_path / "r1"))
    os.remove(tmp_path / "r1" / "a.jpg")
    with pytest.raises(UserError, match="l.txt:1: image .*a.jpg"):
        ids.images_identity("lists/train", il, tmp_path / "r1")


# ------------------------------------------------------------------------------- locks
HOLD = """
import sys, time
from reproduce.utils.locks import writer_lock
with writer_lock(sys.argv[1], "--out"):
    print("held", flush=True)
    time.sleep(120)
"""


def hold_lock(folder):
    """A process holding `folder`'s writer lock, as `train --out folder` does while it trains."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_one_writer_at_a_time_and_a_dead_holder_is_taken_over(tmp_path):
    out = tmp_path / "out"
    proc = hold_lock(out)
    try:
        with pytest.raises(UserError, match=rf"--out: in use by PID {proc.pid} on \S+ since \d{{4}}-"):
            with writer_lock(out, "--out"):
                pass
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    notes = []
    with writer_lock(out, "--out", log=notes.append):
        assert json.load(open(out / ".lock"))["pid"] == os.getpid()
    assert len(notes) == 1 and f"took over from PID {proc.pid}" in notes[0] and "no longer running" in notes[0]
    assert not (out / ".lock").exists()                  # released: the lock file goes


def test_standalone_commands_do_not_write_inside_a_running_plans_folders(tmp_path):
    """A dataset command holds its --work and --out while it runs; its jobs lock their own files
    under other names, so `evaluate --out <work>/...` or `encode --out <work>/codes/x.h5` took no
    lock the plan holds and wrote beside it. Now they stop, naming the holder; once it is gone
    (even with its lock file left by a kill) they write."""
    from reproduce import evaluate
    from reproduce.utils.locks import refuse_inside_a_writer
    rng = np.random.default_rng(0)
    codes = tmp_path / "codes.npz"
    np.savez(codes, codes=np.where(rng.standard_normal((20, 8)) > 0, 1, -1).astype(np.int8),
             labels=np.eye(4, dtype=np.uint8)[rng.integers(0, 4, 20)])
    work = tmp_path / "work"
    argv = ["--query", str(codes), "--database", str(codes), "--out", str(work / "eval" / "mine")]
    proc = hold_lock(work)
    try:
        with pytest.raises(UserError, match=rf"^--out {work}/eval/mine: inside {work}, which PID {proc.pid} on "
                                            r"\S+ since \d{4}-.* is writing; wait for it"):
            evaluate.main(argv)
        with pytest.raises(UserError, match=rf"^--out {work}/a/b/c.h5: inside {work}, which PID {proc.pid}"):
            refuse_inside_a_writer(work / "a" / "b" / "c.h5", "--out")        # encode, train, compare
        assert sorted(os.listdir(work)) == [".lock"]             # nothing written
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert (work / ".lock").exists()                             # left by the killed holder
    evaluate.main(argv)
    assert (work / "eval" / "mine" / "metrics.json").exists()


def test_a_lock_on_a_new_folder_leaves_nothing_when_nothing_was_written(tmp_path):
    with pytest.raises(UserError):
        with writer_lock(tmp_path / "new" / "out"):
            raise UserError("a bad input found after the lock was taken")
    assert not (tmp_path / "new").exists()
    with writer_lock(tmp_path / "kept"):
        (tmp_path / "kept" / "x").write_text("written")
    assert os.listdir(tmp_path / "kept") == ["x"]


def test_two_commands_on_one_results_folder(tmp_path):
    """Two `compare` runs into one --out at once: the second stops with one line, exit 2."""
    rng = np.random.default_rng(0)
    codes = tmp_path / "codes.npz"
    np.savez(codes, codes=rng.choice([-1, 1], (300, 16)), labels=np.eye(3, dtype=np.uint8)[rng.integers(0, 3, 300)])
    proc = hold_lock(tmp_path / "cmp")
    try:
        res = subprocess.run([sys.executable, "-m", "reproduce.compare", "--dataset", "cifar10", "--out",
                              str(tmp_path / "cmp"), "--import", f"Mine:16:{codes}:{codes}"],
                             capture_output=True, text=True, timeout=300)
    finally:
        proc.kill()
        proc.wait()
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and f"in use by PID {proc.pid}" in res.stderr
    assert os.listdir(tmp_path / "cmp") == [".lock"]        # the holder's, untouched


def test_a_dead_jobs_lock_is_taken_over_naming_the_job_lock_not_its_folder(tmp_path, capsys):
    # the note named `<work>/jobs/train`, as if the folder's lock had been taken over
    from reproduce.pipeline.plan import job_lock
    jobs = tmp_path / "jobs" / "train"
    jobs.mkdir(parents=True)
    (jobs / "dhn_8bits_seed0.lock").write_text(json.dumps({"pid": 99999999, "host": "h", "since": "s"}))
    with job_lock(str(jobs / "dhn_8bits_seed0.json"), "train/dhn_8bits_seed0"):
        pass
    notes = capsys.readouterr().err.strip().splitlines()
    assert len(notes) == 1 and notes[0].startswith(f"note: {jobs / 'dhn_8bits_seed0.lock'}: took over from PID 99999999")


def test_asking_who_holds_a_lock_this_process_holds_keeps_it(tmp_path):
    """live_holder test-locks a lock file and closes it: on a lock this process held, the close
    dropped the process's own POSIX lock, and a second writer could take the folder."""
    from reproduce.utils.locks import live_holder
    with writer_lock(tmp_path / "out", "--out") as path:
        assert live_holder(path) is None                            # ours, not another's
        probe = subprocess.run([sys.executable, "-c", HOLD, str(tmp_path / "out")], capture_output=True,
                               text=True, timeout=60)
        assert probe.returncode != 0 and "in use by PID" in probe.stderr, probe.stderr   # still held
