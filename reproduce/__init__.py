"""Deep Hashing Network (Zhu, Long, Wang, Cao, AAAI 2016), reproduced as the authors' Caffe code ran it.

The commands are the modules of this package's root (`python -m reproduce.<command>`); the library
is in folders by stage. The map of the code is README.md, "How the code is laid out".
"""

import sys

__version__ = "0.1.0"

# `python -m reproduce.<command>`: Python imports this package while sys.argv[0] is still "-m"
# (runpy sets it to the module's path only after locating it, see the `-m` entry of Python's
# command-line documentation). Ctrl-C and SIGTERM then end with one line from the very start,
# also while the command's module imports torch; a library import leaves signals alone.
if sys.argv[:1] == ["-m"]:
    from .utils.signals import install_startup_handlers
    install_startup_handlers()
