"""The oracle's build script fails cleanly on bad input (normal suite: no build happens here)."""
import shutil
import subprocess

import pytest

from caffe_oracle import BUILD_SCRIPT, HERE

EXPECTED_SHA256 = "2dc4716f7b6208a05b73c86871f0c3c09bde56733e6a90cee4d2f327ffde6b80"

needs_bash = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("sha256sum") is None,
                                reason="needs bash and coreutils")


def build(tmp_path, tarball):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "REPRODUCE_CAFFE_TARBALL": str(tarball),
           "REPRODUCE_CAFFE_CACHE": str(tmp_path / "cache")}
    return subprocess.run(["bash", str(BUILD_SCRIPT)], env=env, capture_output=True, text=True)


@needs_bash
@pytest.mark.parametrize("kind", ["corrupt", "missing"])
def test_bad_tarball_is_named_with_its_expected_sha256(tmp_path, kind):
    tarball = tmp_path / "caffe-9b8915401.tar.gz"
    if kind == "corrupt":
        tarball.write_bytes(b"\x1f\x8b half a download")
    done = build(tmp_path, tarball)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1, done.stderr
    assert str(tarball) in lines[0] and EXPECTED_SHA256 in lines[0]
    assert "Traceback" not in done.stderr
    # nothing half-built is left behind: a later run starts clean
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["logs"]


@needs_bash
def test_check_mode_builds_nothing(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "REPRODUCE_CAFFE_CACHE": str(tmp_path / "cache")}
    done = subprocess.run(["bash", str(BUILD_SCRIPT), "--check"], env=env, capture_output=True, text=True)
    assert done.returncode == 3 and done.stdout == ""


def test_patch_step_names_what_did_not_apply(tmp_path):
    (tmp_path / "src/caffe/util").mkdir(parents=True)
    (tmp_path / "src/caffe/util/io.cpp").write_text("no such call here\n")
    done = subprocess.run([shutil.which("python3") or "python3", str(HERE / "patch_caffe.py"), str(tmp_path),
                           str(HERE / "pairwise_loss_layer.cpp")], capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr.strip() == ("patch step 'protobuf SetTotalBytesLimit': expected 1 occurrence(s) "
                                   "in src/caffe/util/io.cpp, found 0")
