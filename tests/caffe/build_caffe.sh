#!/usr/bin/env bash
# Build real BVLC Caffe (commit 9b8915401, CPU only, pycaffe) with the authors' PairwiseLoss layer:
# the test oracle of the `caffe` test tier (tests/caffe/README.md).
#
#     bash tests/caffe/build_caffe.sh          # prints the oracle's folder on its last line
#     bash tests/caffe/build_caffe.sh --check  # the same if it is built, else exit 3 (no build)
#
# 1. takes the source tarball from ../shared/caffe/ (sha256-checked; $REPRODUCE_CAFFE_TARBALL
#    names another) or, where that folder is absent, downloads GitHub's archive of the same commit
#    and checks the unpacked tree's digest;
# 2. installs the Debian packages Caffe and pycaffe need (apt-get, as root) when some are missing
#    (python3-skimage and python3-pil: pycaffe's caffe.io reads images with scikit-image);
# 3. applies the toolchain edits and adds the authors' layer (patch_caffe.py);
# 4. cmake + make pycaffe, and keeps lib/ + python/ in the cache folder
#    ${REPRODUCE_CAFFE_CACHE:-~/.cache/reproduce-dhn}/caffe-<hash of every input>.
# A second run with the same inputs finds the folder and costs seconds. A failure prints one line
# naming the missing package or the failing step (the step's log is kept, its path printed) and
# leaves no half-built folder: the build happens in a temporary folder renamed at the end.
set -euo pipefail

COMMIT=9b891540183ddc834a02b2bd81b31afae71b2153
TARBALL_SHA256=2dc4716f7b6208a05b73c86871f0c3c09bde56733e6a90cee4d2f327ffde6b80
# sha256 of "sha256(content) ./path" lines of every file of the unpacked tree, sorted by path:
# the same for ../shared's `git archive` and for GitHub's archive of the commit.
TREE_DIGEST=8cc857e5720df93a435ce7b4c0d45f802c0c245f81b70c85cf275fc0f15a5a2e
DEBIAN_PACKAGES="cmake g++ make libboost-system-dev libboost-thread-dev libboost-filesystem-dev
  libboost-python-dev libgoogle-glog-dev libgflags-dev libprotobuf-dev protobuf-compiler
  libhdf5-dev libopenblas-dev libopencv-dev python3-dev python3-numpy python3-protobuf
  python3-skimage python3-pil"

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
shared_tarball=${REPRODUCE_CAFFE_TARBALL:-$repo/../shared/caffe/caffe-9b8915401.tar.gz}
cache_root=${REPRODUCE_CAFFE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/reproduce-dhn}
logs=$cache_root/logs
mkdir -p "$cache_root" "$logs"

fail() { echo "build_caffe: $*" >&2; exit 1; }

# ---- the cache key: every input of the build ----------------------------------------------------
key=$(cat "$0" "$here/patch_caffe.py" "$here/pairwise_loss_layer.cpp" <(echo "$TREE_DIGEST") \
      | sha256sum | cut -c1-16)
final=$cache_root/caffe-$key
if [ -f "$final/BUILD_OK" ]; then
  echo "$final"
  exit 0
fi
[ "${1:-}" = "--check" ] && exit 3   # --check: print the folder if built, else exit 3, build nothing

stage=$(mktemp -d "$cache_root/.building-$key-XXXXXX")
trap 'rm -rf "$stage"' EXIT

# ---- 1. source -----------------------------------------------------------------------------------
tree_digest() {  # digest of an unpacked tree, see TREE_DIGEST
  (cd "$1" && find . -type f | LC_ALL=C sort | while read -r f; do
     printf '%s %s\n' "$(sha256sum < "$f" | cut -c1-64)" "$f"; done | sha256sum | cut -c1-64)
}
mkdir "$stage/src"
if [ -n "${REPRODUCE_CAFFE_TARBALL:-}" ] && [ ! -f "$shared_tarball" ]; then
  fail "$shared_tarball: no such file (REPRODUCE_CAFFE_TARBALL; expected sha256 $TARBALL_SHA256)"
elif [ -f "$shared_tarball" ]; then
  got=$(sha256sum "$shared_tarball" | cut -c1-64)
  [ "$got" = "$TARBALL_SHA256" ] || fail "$shared_tarball: sha256 $got, expected $TARBALL_SHA256 (corrupt or another file)"
  tar -xzf "$shared_tarball" -C "$stage/src" || fail "$shared_tarball: cannot unpack (expected sha256 $TARBALL_SHA256)"
else
  url=https://github.com/BVLC/caffe/archive/$COMMIT.tar.gz
  echo "build_caffe: $shared_tarball is absent; downloading $url" >&2
  curl -fsSL "$url" -o "$stage/caffe.tar.gz" || fail "download of $url failed"
  tar -xzf "$stage/caffe.tar.gz" -C "$stage/src" || fail "$url: cannot unpack the download"
fi
source_dir=$(find "$stage/src" -mindepth 1 -maxdepth 1 -type d | head -n 1)
[ -n "$source_dir" ] || fail "the source archive holds no folder"
got=$(tree_digest "$source_dir")
[ "$got" = "$TREE_DIGEST" ] || fail "unpacked Caffe tree digest $got, expected $TREE_DIGEST (not commit $COMMIT)"

# ---- 2. Debian packages --------------------------------------------------------------------------
missing=""
for p in $DEBIAN_PACKAGES; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  [ "$(id -u)" = 0 ] || fail "missing Debian packages:$missing (install them as root: apt-get install$missing)"
  echo "build_caffe: installing Debian packages:$missing" >&2
  if ! { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing; } \
      > "$logs/apt.log" 2>&1; then
    still=""
    for p in $missing; do
      dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || still="$still $p"
    done
    fail "apt-get could not install:$still (log: $logs/apt.log)"
  fi
fi

# ---- 3. edits and the authors' layer -------------------------------------------------------------
msg=$(/usr/bin/python3 "$here/patch_caffe.py" "$source_dir" "$here/pairwise_loss_layer.cpp" 2>&1) \
  || fail "$(echo "$msg" | tail -n 1)"

# ---- 4. build ------------------------------------------------------------------------------------
build=$stage/build
mkdir "$build"
echo "build_caffe: configuring (log: $logs/cmake.log)" >&2
(cd "$build" && cmake "$source_dir" -DCPU_ONLY=ON -DUSE_LMDB=OFF -DUSE_LEVELDB=OFF -DUSE_OPENCV=ON \
   -DBLAS=Open -Dpython_version=3 -DPYTHON_EXECUTABLE=/usr/bin/python3 -DBUILD_python=ON \
   -DBUILD_docs=OFF -DCMAKE_BUILD_TYPE=Release) > "$logs/cmake.log" 2>&1 \
  || fail "cmake failed: $(grep -m1 -E 'Error|Could NOT find' "$logs/cmake.log" || tail -n 1 "$logs/cmake.log") (log: $logs/cmake.log)"
echo "build_caffe: compiling with $(nproc) jobs, a few minutes (log: $logs/make.log)" >&2
(cd "$build" && make -j"$(nproc)" pycaffe) > "$logs/make.log" 2>&1 \
  || fail "make pycaffe failed: $(grep -m1 -E 'error|Error' "$logs/make.log" || tail -n 1 "$logs/make.log") (log: $logs/make.log)"

# Keep only what pycaffe needs: lib/libcaffe.so*, python/caffe (with _caffe.so and proto/).
out=$stage/oracle
mkdir -p "$out/lib" "$out/python"
cp -a "$build"/lib/libcaffe.so* "$out/lib/"
cp -rL "$source_dir/python/caffe" "$out/python/caffe"
[ -f "$out/python/caffe/_caffe.so" ] || fail "make pycaffe produced no _caffe.so"
echo "$COMMIT" > "$out/COMMIT"
LD_LIBRARY_PATH=$out/lib PYTHONPATH=$out/python /usr/bin/python3 -c \
  "import caffe; assert 'PairwiseLoss' in caffe.layer_type_list()" > "$logs/import.log" 2>&1 \
  || fail "the built pycaffe does not import or lacks PairwiseLoss: $(tail -n 1 "$logs/import.log")"
touch "$out/BUILD_OK"
rm -rf "$final"
mv "$out" "$final"
echo "$final"
