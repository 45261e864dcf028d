"""`python -m reproduce.coco`: DHN on the HashNet benchmark's coco, from nothing to results/coco/. The
dataset and its command live in reproduce.datasets.coco; this module is the entry point."""
from .cli import run_cli
from .datasets.coco import main

if __name__ == "__main__":
    run_cli(main)
