"""The committed splits (see README.md here), shipped inside the installed package as the package
data `reproduce.data_lists` (setup.py maps it to this folder); reproduce.datasets.common.DATA_LISTS
finds them in an installed package, an editable install and a plain checkout alike."""
