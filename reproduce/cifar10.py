"""`python -m reproduce.cifar10`: DHN on CIFAR-10, from nothing to results/cifar10/. The dataset and its command live in
reproduce.datasets.cifar10; this module is the entry point."""
from .datasets.cifar10 import main
from .errors import run_cli

if __name__ == "__main__":
    run_cli(main)
