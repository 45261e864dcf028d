"""`python -m reproduce.flickr`: DHN on MIRFlickr-25k, from nothing to results/flickr/. The dataset and its command live in
reproduce.datasets.flickr; this module is the entry point."""
from .cli import run_cli
from .datasets.flickr import main

if __name__ == "__main__":
    run_cli(main)
