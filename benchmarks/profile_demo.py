"""Where the demo's time goes: `python -m reproduce.demo` under cProfile, in this process.

    python profile_demo.py [--top 25] [demo options, e.g. --bits 12 48 --seeds 0]

Prints the wall time and the functions with the most cumulative time, grouped the way they were
read when the demo was made to fit in 5 minutes (benchmarks/README.md): the batch order, the
solver's update, the DHN loss, the deep baselines' heads and losses, the network's layers. The
profile itself slows the run down by about a third. Output goes to a temporary folder.
"""
import argparse
import cProfile
import io
import pstats
import sys
import tempfile
import time


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--top", type=int, default=25)
    args, demo_argv = p.parse_known_args()
    from reproduce import demo
    with tempfile.TemporaryDirectory(prefix="profile-demo-") as tmp:
        argv = ["--out", f"{tmp}/out", "--work", f"{tmp}/work", *demo_argv]
        profile = cProfile.Profile()
        start = time.perf_counter()
        profile.runcall(demo.main, argv)
        wall = time.perf_counter() - start
    text = io.StringIO()
    pstats.Stats(profile, stream=text).sort_stats("cumulative").print_stats(args.top)
    print(text.getvalue())
    print(f"demo {' '.join(demo_argv) or '(defaults)'}: {wall:.1f} s under the profiler", file=sys.stderr)


if __name__ == "__main__":
    main()
