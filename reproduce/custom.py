"""`python -m reproduce.custom --name NAME ...`: DHN on any dataset given as three lists. The
command lives in reproduce.datasets.custom; this module is the entry point."""
from .datasets.custom import main
from .errors import run_cli

if __name__ == "__main__":
    run_cli(main)
