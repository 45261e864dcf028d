"""`python -m reproduce.custom --name NAME ...`: DHN on any dataset given as three lists. The
command lives in reproduce.datasets.custom; this module is the entry point."""
from .cli import run_cli
from .datasets.custom import main

if __name__ == "__main__":
    run_cli(main)
