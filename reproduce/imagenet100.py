"""`python -m reproduce.imagenet100`: DHN on the HashNet benchmark's imagenet100, from nothing to results/imagenet100/. The
dataset and its command live in reproduce.datasets.imagenet100; this module is the entry point."""
from .cli import run_cli
from .datasets.imagenet100 import main

if __name__ == "__main__":
    run_cli(main)
