"""`python -m reproduce.nus_wide`: DHN on NUS-WIDE-21, from nothing to results/nus_wide/. The dataset and its command live in
reproduce.datasets.nus_wide; this module is the entry point."""
from .cli import run_cli
from .datasets.nus_wide import main

if __name__ == "__main__":
    run_cli(main)
