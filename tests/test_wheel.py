"""A non-editable install: the package built as a wheel and installed without -e runs the
per-dataset commands from another working directory up to the point where they need the user's
images (the committed lists of data_lists/ ship inside it as the package data reproduce.data_lists).

How the install is made, offline and in seconds: `pip wheel --no-deps --no-build-isolation
--no-index` builds the wheel with the setuptools installed here, from a copy of the files setup.py
packages (a build writes build/ and *.egg-info beside its sources), and `pip install --no-deps
--target T` unpacks it into a fresh folder T. The commands then run as `python -S -m reproduce.<command>` with
PYTHONPATH = T, then this interpreter's site-packages: -S skips the site module, so that neither
the .pth files of site-packages (among them an editable install's finder, which would map
`reproduce` to a checkout) nor the user's site are read; the dependencies (torch, numpy, h5py ...)
are found as the plain folders they are in site-packages. A fresh virtual environment would not see
them, and installing them into one needs the network. The working directory is outside the
checkout, so that nothing is imported from it; the test asserts where `reproduce` comes from.
"""
import os
import pathlib
import shutil
import site
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def run(*args, cwd, env=None, timeout=300):
    return subprocess.run(list(args), capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(folder the wheel is installed into, environment that sees only it and the dependencies)."""
    tmp = tmp_path_factory.mktemp("wheel")
    build = run(sys.executable, "-c", "import setuptools.command.bdist_wheel", cwd=tmp)
    if build.returncode != 0:
        build = run(sys.executable, "-c", "import wheel.bdist_wheel", cwd=tmp)
    if build.returncode != 0:
        pytest.skip("no bdist_wheel here (setuptools >= 70.1 or the wheel package): a wheel cannot be "
                    "built offline")
    source = tmp / "source"
    for folder in ("reproduce", "data_lists"):
        shutil.copytree(REPO / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.py", "README.md"):
        shutil.copy(REPO / name, source / name)
    made = run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
               "--wheel-dir", str(tmp / "dist"), str(source), cwd=tmp, timeout=600)
    assert made.returncode == 0, made.stdout[-3000:] + made.stderr[-3000:]
    wheels = list((tmp / "dist").glob("reproduce_dhn-*.whl"))
    assert len(wheels) == 1, wheels
    target = tmp / "site"
    done = run(sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", str(target),
               str(wheels[0]), cwd=tmp, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "REPRODUCE"))}
    env["PYTHONPATH"] = os.pathsep.join([str(target)] + site.getsitepackages())
    return target, env


def test_the_wheel_holds_the_lists_and_is_what_runs(installed, tmp_path):
    target, env = installed
    assert (target / "reproduce" / "data_lists" / "coco" / "train.txt.gz").is_file()
    assert (target / "reproduce" / "reporting" / "paper_tables.csv").is_file()
    script = ("import reproduce, reproduce.datasets.common as c; print(reproduce.__file__); "
              "print(c.DATA_LISTS); s = c.read_split(c.DATA_LISTS / 'cifar10', 10); "
              "print(*(len(s[k]) for k in ('train', 'query', 'database')))")
    r = run(sys.executable, "-S", "-c", script, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    package, lists, sizes = r.stdout.splitlines()
    assert package.startswith(str(target)) and lists.startswith(str(target)), r.stdout
    assert sizes == "5000 1000 59000"


@pytest.mark.parametrize("command", ["coco", "imagenet100"])
def test_hashnet_commands_read_the_shipped_lists(installed, tmp_path, command):
    """Past the committed lists (gzip, read from the installed package), stopped by the images the
    user has not put under --root: one line, exit status 2."""
    _, env = installed
    (tmp_path / "empty").mkdir()
    (tmp_path / "elsewhere").mkdir()
    r = run(sys.executable, "-S", "-m", f"reproduce.{command}", "--smoke", "--root", str(tmp_path / "empty"),
            cwd=tmp_path / "elsewhere", env=env)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "not a readable" not in lines[0], lines
    assert "images of the train list are missing under" in lines[0] and str(tmp_path / "empty") in lines[0]
    assert (tmp_path / "elsewhere" / "runs" / "smoke" / command / "lists" / "train.txt").is_file()


def test_cifar10_command_stops_at_the_users_images(installed, tmp_path):
    """CIFAR-10's images are the python batches the user downloads (or lets the command fetch):
    without them, one line and exit status 2 (the shipped split is read once they are there;
    test_the_wheel_holds_the_lists_and_is_what_runs reads it from the install)."""
    _, env = installed
    (tmp_path / "empty").mkdir()
    (tmp_path / "elsewhere").mkdir()
    r = run(sys.executable, "-S", "-m", "reproduce.cifar10", "--no-download", "--root", str(tmp_path / "empty"),
            cwd=tmp_path / "elsewhere", env=env)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert len(lines) == 1 and "the CIFAR-10 python batches" in lines[0], lines
