"""Full disks and SIGTERM: every command that writes leaves the previous outputs exactly as they
were and no temporary file, and says so in one line (exit 2 for a full disk, 143 for SIGTERM).

The full disk is a real one: a 4 MiB tmpfs mounted for the test (root only: elsewhere the tests
skip), filled up to a few KiB before the command runs.
"""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

import fake_datasets
from reproduce.caffe.caffe_writer import write_caffemodel
from reproduce.model.nets import expected_shapes

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def command(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=timeout)


def files(folder):
    return {os.path.relpath(os.path.join(r, n), folder): open(os.path.join(r, n), "rb").read()
            for r, _, names in os.walk(folder) for n in names}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("disk_inputs")
    rng = np.random.default_rng(0)
    fake_datasets.make_command_inputs(d, rng, 8)
    codes = np.where(rng.standard_normal((300, 16)) > 0, 1, -1)
    np.savez(d / "codes.npz", codes=codes, labels=np.eye(4, dtype=np.uint8)[np.arange(300) % 4])
    return d


@pytest.fixture
def disk(tmp_path):
    """A 4 MiB tmpfs; `disk.fill(leave)` leaves `leave` bytes free."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)],
                                           capture_output=True).returncode:
        pytest.skip("mounting a small tmpfs needs root")

    class Disk:
        path = mnt

        def fill(self, leave=16 << 10):
            free = os.statvfs(mnt).f_bavail * os.statvfs(mnt).f_frsize
            with open(mnt / ".filler", "wb") as f:
                f.write(b"\0" * max(0, free - leave))

    yield Disk()
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def assert_full_disk_failure(result, folder, before):
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr
    after = files(folder)
    after.pop(".filler", None)
    assert after == before, "the previous outputs changed"


def previous_outputs(folder):
    out = folder / "out"
    out.mkdir()
    (out / "metrics.json").write_text('{"previous": true}\n')
    (out / "precision_at_n.csv").write_text("n,precision,recall\n100,0.5,0.1\n")
    (out / "table1.md").write_text("previous table\n")
    (out / "codes.h5").write_bytes(b"previous codes")
    return out, files(folder)


def test_encode_on_a_full_disk(inputs, disk):
    out, before = previous_outputs(disk.path)
    disk.fill()
    result = command("reproduce.encode", "--checkpoint", str(inputs / "dhn.pth"), "--list",
                     str(inputs / "list.txt"), "--root", str(inputs / "imgs"), "--workers", "0",
                     "--device", "cpu", "--features", "--out", str(out / "codes.h5"), "--force")
    assert_full_disk_failure(result, disk.path, before)
    assert "MiB free" in result.stderr


def test_evaluate_on_a_full_disk(inputs, disk):
    out, before = previous_outputs(disk.path)
    disk.fill(leave=4 << 10)
    result = command("reproduce.evaluate", "--query", str(inputs / "codes.npz"), "--database",
                     str(inputs / "codes.npz"), "--out", str(out), "--force")
    assert_full_disk_failure(result, disk.path, before)
    assert "No space left" in result.stderr


def test_compare_on_a_full_disk(inputs, disk):
    out, before = previous_outputs(disk.path)
    disk.fill(leave=64 << 10)      # room for the metrics and tables, not for the figures
    result = command("reproduce.compare", "--dataset", "cifar10", "--out", str(out), "--force",
                     "--import", f"MyHash:16:{inputs / 'codes.npz'}:{inputs / 'codes.npz'}")
    assert_full_disk_failure(result, disk.path, before)


def test_train_on_a_full_disk(inputs, disk):
    out, before = previous_outputs(disk.path)
    disk.fill(leave=1 << 20)       # the image cache (8 x 192 KiB) does not fit
    result = command("reproduce.train", "--train-list", str(inputs / "list.txt"), "--root",
                     str(inputs / "imgs"), "--weights", str(inputs / "base.pth"), "--bits", "8",
                     "--max-iter", "2", "--batch-size", "2", "--workers", "0", "--quiet",
                     "--out", str(out / "run"))
    assert_full_disk_failure(result, disk.path, before)
    # without a cache the images are decoded on the fly, and the first snapshot does not fit
    result = command("reproduce.train", "--train-list", str(inputs / "list.txt"), "--root",
                     str(inputs / "imgs"), "--weights", str(inputs / "base.pth"), "--bits", "8",
                     "--max-iter", "2", "--batch-size", "2", "--workers", "0", "--quiet",
                     "--cache", "none", "--out", str(out / "run"))
    assert result.returncode == 2 and "No space left" in result.stderr and "Traceback" not in result.stderr
    leftovers = [n for n in os.listdir(out / "run") if n.startswith(".tmp")]
    assert leftovers == []


def test_demo_on_a_full_disk(disk):
    """The demo is a plan of jobs: those that finished keep their (complete) outputs, the one
    that met the full disk leaves nothing, and what was there before is untouched."""
    out, before = previous_outputs(disk.path)
    disk.fill(leave=32 << 10)
    result = command("reproduce.demo", "--out", str(out), "--work", str(disk.path / "work"), "--bits", "8",
                     "--seeds", "0", "--max-iter", "20", "--baselines", "lsh")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
    after = files(disk.path)
    assert {k: after.get(k) for k in before} == before, "the previous outputs changed"
    assert not [k for k in after if "/.tmp-" in "/" + k or "/.staging-" in "/" + k]


def test_convert_weights_on_a_full_disk(disk, tmp_path):
    rng = np.random.default_rng(1)
    layers = {}
    for key, shape in expected_shapes().items():
        layers.setdefault(key.split(".")[0], []).append(rng.standard_normal(shape, dtype=np.float32))
    src = tmp_path / "net.caffemodel"
    write_caffemodel(src, layers)
    out, before = previous_outputs(disk.path)
    disk.fill()
    result = command("reproduce.convert_weights", str(src), "--out", str(out / "net.pth"))
    src.unlink()
    assert_full_disk_failure(result, disk.path, before)
    assert "No space left" in result.stderr


# ------------------------------------------------------------------------------------- SIGTERM
def terminate_when(proc, ready, timeout=120, signum=signal.SIGTERM):
    deadline = time.time() + timeout
    while not ready() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the command ended before it could be terminated"
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


def start(*args):
    return subprocess.Popen([sys.executable, "-m", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO)


def test_sigterm_during_encode_leaves_the_previous_codes(inputs, tmp_path):
    many = tmp_path / "many.txt"
    many.write_text(open(inputs / "list.txt").read() * 40)          # 320 images: seconds of work
    out = tmp_path / "out"
    out.mkdir()
    (out / "codes.h5").write_bytes(b"previous codes")
    proc = start("reproduce.encode", "--checkpoint", str(inputs / "dhn.pth"), "--list", str(many),
                 "--root", str(inputs / "imgs"), "--workers", "2", "--device", "cpu",
                 "--out", str(out / "codes.h5"), "--force")
    code, err = terminate_when(proc, lambda: any(n.startswith(".tmp") for n in os.listdir(out)))
    assert code == 143 and err.strip().splitlines()[-1] == "terminated" and "Traceback" not in err, err
    assert os.listdir(out) == ["codes.h5"] and (out / "codes.h5").read_bytes() == b"previous codes"


def test_sigterm_during_train_keeps_complete_snapshots(inputs, tmp_path):
    run = tmp_path / "run"
    proc = start("reproduce.train", "--train-list", str(inputs / "list.txt"), "--root", str(inputs / "imgs"),
                 "--weights", str(inputs / "base.pth"), "--bits", "8", "--max-iter", "1000",
                 "--batch-size", "2", "--snapshot", "2", "--workers", "0", "--quiet", "--out", str(run))
    code, err = terminate_when(proc, lambda: (run / "snapshot_iter_2.pth").exists())
    assert code == 143 and err.strip().splitlines()[-1] == "terminated" and "Traceback" not in err
    assert not [n for n in os.listdir(run) if n.startswith(".tmp")]
    from reproduce.model.checkpoint import load_checkpoint
    assert load_checkpoint(run / "snapshot_iter_2.pth")["meta"]["iteration"] == 2


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_during_evaluate_leaves_the_previous_metrics(tmp_path, signum):
    """Also Ctrl-C while the compiled ranking kernels run (taken between two of their calls): one
    line and 130, as anywhere else."""
    rng = np.random.default_rng(2)
    big = tmp_path / "db.npz"                       # ~2 s of evaluation
    np.savez(big, codes=np.where(rng.standard_normal((400000, 32)) > 0, 1, -1).astype(np.int8),
             labels=np.eye(10, dtype=np.uint8)[rng.integers(0, 10, 400000)])
    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics.json").write_text('{"previous": true}\n')
    before = files(out)
    proc = start("reproduce.evaluate", "--query", str(big), "--database", str(big), "--out", str(out),
                 "--force", "--topk", "100")
    time.sleep(4)                                   # reading and ranking, before any output
    code, err = terminate_when(proc, lambda: True, signum=signum)
    assert code == 128 + signum and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == ("terminated" if signum == signal.SIGTERM else "interrupted")
    assert files(out) == before


# Ctrl-C many times at random moments of an evaluation whose kernels are called often (small
# chunks): each interruption must surface as the KeyboardInterrupt it is. Raising inside a compiled
# call (numba's _numba_unpickle, run while the kernel boxes the arrays it returns) made the call end
# in SystemError, and now and then in SIGSEGV: the evaluate test above died with -11 in CI.
INTERRUPT_MANY = """
import collections, os, random, signal, threading, time
import numpy as np
from reproduce.evaluation import metrics
from reproduce.utils import signals
rng = np.random.default_rng(0)
codes = np.where(rng.standard_normal((3000, 32)) > 0, 1, -1).astype(np.int8)
labels = np.eye(10, dtype=np.uint8)[rng.integers(0, 10, 3000)]
metrics.evaluate_codes(codes[:50], codes, labels[:50], labels)      # compiled (or loaded) before
metrics.QUERY_CHUNK = 20
signals.install_command_handlers()
random.seed(0)
seen = collections.Counter()
for _ in range(150):
    signals._MAIN["signal"] = None
    threading.Timer(random.uniform(0.0, 0.03), os.kill, (os.getpid(), signal.SIGINT)).start()
    try:
        while True:
            metrics.evaluate_codes(codes[:400], codes, labels[:400], labels, topk=100)
    except KeyboardInterrupt:
        seen["KeyboardInterrupt"] += 1
    except BaseException as e:
        seen[type(e).__name__] += 1
print(dict(seen))
"""


def test_interrupts_inside_the_ranking_kernels_surface_as_interrupts():
    res = subprocess.run([sys.executable, "-c", INTERRUPT_MANY], capture_output=True, text=True,
                         timeout=300, cwd=REPO)
    assert res.returncode == 0 and res.stdout.strip() == "{'KeyboardInterrupt': 150}", (res.returncode,
                                                                                     res.stdout, res.stderr)


@pytest.mark.parametrize("delay", [0.4, 1.0])
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_while_a_command_starts_is_one_line(inputs, tmp_path, signum, delay):
    """Before the command's main runs (Python still importing torch and the package), a signal
    ends it with the same one line and status, and nothing written."""
    proc = start("reproduce.encode", "--checkpoint", str(inputs / "dhn.pth"), "--list", str(inputs / "list.txt"),
                 "--root", str(inputs / "imgs"), "--workers", "0", "--device", "cpu",
                 "--out", str(tmp_path / "codes.h5"))
    time.sleep(delay)
    code, err = terminate_when(proc, lambda: True, signum=signum)
    assert code == 128 + signum and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == ("terminated" if signum == signal.SIGTERM else "interrupted")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_to_the_process_group_with_loader_workers(inputs, tmp_path, signum):
    """Ctrl-C in a terminal reaches the loader workers too: they leave, the command reports one
    line (no "worker exited unexpectedly" after it) and removes its temporary output."""
    many = tmp_path / "many.txt"
    many.write_text(open(inputs / "list.txt").read() * 40)
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "reproduce.encode", "--checkpoint", str(inputs / "dhn.pth"),
                             "--list", str(many), "--root", str(inputs / "imgs"), "--workers", "2", "--device",
                             "cpu", "--out", str(out / "codes.h5")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO, start_new_session=True)
    deadline = time.time() + 120
    while not any(n.startswith(".tmp") for n in os.listdir(out)) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None
    time.sleep(0.3)                                       # batches in flight
    os.killpg(proc.pid, signum)
    _, err = proc.communicate(timeout=120)
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip() and not line.startswith("encode:")]
    assert proc.returncode == 128 + signum and lines == ["interrupted" if signum == signal.SIGINT else "terminated"], err
    assert os.listdir(out) == []


def children(pid):
    """Process ids of the live children of `pid` (its loader workers)."""
    found = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            found.update(int(c) for c in f.read().split())
    return found


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture
def slow_cache_inputs(tmp_path):
    """300 list entries of 900 x 700 JPEGs: seconds of decoding for the image cache."""
    rng = np.random.default_rng(3)
    (tmp_path / "imgs").mkdir()
    for i in range(6):
        smooth = np.cumsum(rng.integers(-4, 5, (700, 900, 3)), axis=1) + 128
        Image.fromarray(np.clip(smooth, 0, 255).astype(np.uint8)).save(tmp_path / "imgs" / f"{i}.jpg")
    (tmp_path / "many.txt").write_text("".join(f"{i % 6}.jpg {i % 2} {(i + 1) % 2}\n" for i in range(300)))
    return tmp_path


def train_args(inputs, folder, run):
    return ("reproduce.train", "--train-list", str(folder / "many.txt"), "--root", str(folder / "imgs"),
            "--weights", str(inputs / "base.pth"), "--bits", "8", "--max-iter", "1", "--batch-size", "2",
            "--workers", "2", "--quiet", "--device", "cpu", "--out", str(run))


def test_sigterm_during_the_cache_build_leaves_no_worker_and_a_resumable_cache(inputs, slow_cache_inputs):
    """The loader workers that decode the images for the cache are gone when the command exits
    (a worker left behind held the partial HDF5 file and its lock: the next run called it
    unreadable), and the next run resumes the partial cache."""
    run = slow_cache_inputs / "run"
    partial = run / "train_cache.h5.partial"
    proc = start(*train_args(inputs, slow_cache_inputs, run))
    workers = set()

    def building():
        if partial.exists():
            workers.update(children(proc.pid))
        return len(workers) == 2
    code, err = terminate_when(proc, building)
    assert code == 143 and err.strip().splitlines()[-1] == "terminated" and "Traceback" not in err, err
    assert not [w for w in workers if alive(w)], "loader workers outlived the command"
    assert partial.exists() and not (run / "train_cache.h5").exists()
    result = command(*train_args(inputs, slow_cache_inputs, run))
    assert result.returncode == 0 and "note:" not in result.stderr, result.stderr[-2000:]
    assert (run / "train_cache.h5").exists() and not partial.exists()


def test_an_unreadable_partial_cache_is_built_again(inputs, slow_cache_inputs):
    """`<cache>.partial` is our own temporary file: left unreadable (a kill -9 while HDF5 wrote
    its header), the next run builds it again with a one-line note instead of an error."""
    run = slow_cache_inputs / "run"
    run.mkdir()
    (run / "train_cache.h5.partial").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    result = command(*train_args(inputs, slow_cache_inputs, run))
    assert result.returncode == 0, result.stderr[-2000:]
    notes = [line for line in result.stderr.splitlines() if line.startswith("note:")]
    assert notes == [f"note: {run / 'train_cache.h5.partial'}: unreadable partial cache of an interrupted "
                     "build; building it again from scratch"]
    assert (run / "train_cache.h5").exists() and not (run / "train_cache.h5.partial").exists()
