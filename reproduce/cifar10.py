"""`python -m reproduce.cifar10`: DHN on CIFAR-10, from nothing to results/cifar10/. The dataset and its command live in
reproduce.datasets.cifar10; this module is the entry point."""
from .cli import run_cli
from .datasets.cifar10 import main

if __name__ == "__main__":
    run_cli(main)
