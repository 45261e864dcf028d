"""Benchmark: convert a full-size (~233 MiB) V1 caffemodel, as the BVLC zoo publishes them.

    python benchmarks/bench_convert.py [--dir DIR] [--fmt v1] [--unpacked]

Generates random weights of bvlc_reference_caffenet's shapes (conv1..fc8, and the blob-less layers
in CaffeNet's order), writes them in the chosen format, then converts the file with
`reproduce.model.pretrained.convert` in a fresh process and prints the seconds and the peak extra
memory (peak RSS during the conversion minus the RSS before it). Targets (issue 2): <= 10 s and <= 2x the file.
The file is freshly written, so it is read from the page cache (a cold disk adds its read time).
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from reproduce.caffe.caffe_writer import write_caffemodel
from reproduce.model.nets import expected_shapes

# Peak extra memory = peak RSS during the conversion (VmHWM) minus the RSS just before it (VmRSS),
# from /proc/self/status (Linux); the mmap'ed file pages the conversion touches count in both.
CHILD = r"""
import sys, time
from reproduce.model.pretrained import convert
def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key))
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")   # reset VmHWM to the current RSS
before = status("VmRSS:")
t = time.perf_counter()
convert(sys.argv[1], sys.argv[2], log=lambda *a: None)
seconds = time.perf_counter() - t
print(seconds, status("VmHWM:") - before)
"""


def zoo_layers(seed=0):
    """{layer: blobs} with CaffeNet's layer order and shapes (fc8 1000 x 4096 included)."""
    rng = np.random.default_rng(seed)
    shapes = expected_shapes()
    layers = {}
    for name in ("conv1", "relu1", "pool1", "norm1", "conv2", "relu2", "pool2", "norm2", "conv3", "relu3",
                 "conv4", "relu4", "conv5", "relu5", "pool5", "fc6", "relu6", "drop6", "fc7", "relu7",
                 "drop7", "fc8"):
        if name == "fc8":
            layers[name] = [rng.standard_normal((1000, 4096), dtype=np.float32), np.zeros(1000, np.float32)]
        elif f"{name}.weight" in shapes:
            layers[name] = [rng.standard_normal(shapes[f"{name}.{p}"], dtype=np.float32) for p in ("weight", "bias")]
        else:
            layers[name] = []
    return layers


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dir", default=None, help="folder for the generated files (default: a temporary one)")
    p.add_argument("--fmt", default="v1", choices=("v1", "v2", "v2-legacy-dims"), help="default: v1 (the zoo's)")
    p.add_argument("--unpacked", action="store_true", help="write every float as its own field")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        src, out = os.path.join(folder, "model.caffemodel"), os.path.join(folder, "model.pth")
        t = time.perf_counter()
        write_caffemodel(src, zoo_layers(), fmt=args.fmt, packed=not args.unpacked)
        size = os.path.getsize(src)
        print(f"wrote {size / 2**20:.1f} MiB {args.fmt} {'unpacked' if args.unpacked else 'packed'} "
              f"caffemodel in {time.perf_counter() - t:.1f} s")
        result = subprocess.run([sys.executable, "-c", CHILD, src, out], capture_output=True, text=True, check=True)
        seconds, extra = map(float, result.stdout.split())
        print(f"convert: {seconds:.2f} s (target <= 10 s); peak extra memory {extra / 2**20:.0f} MiB = "
              f"{extra / size:.2f}x the file (target <= 2x)")


if __name__ == "__main__":
    main()
