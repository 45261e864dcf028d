"""What a results folder records about the software that made it: versions and the git revision."""
import os
import platform
import subprocess

import h5py
import numpy as np

from .. import __version__


def git_revision():
    """HEAD of the package's checkout (+ "-dirty" with uncommitted changes), or None outside git."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        rev = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True,
                             encoding="utf-8", errors="replace", timeout=10)
        dirty = subprocess.run(["git", "-C", here, "status", "--porcelain"], capture_output=True, text=True,
                               encoding="utf-8", errors="replace", timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "") if rev.returncode == 0 else None


def versions():
    """{package: version} of Python and the libraries a result depends on."""
    import scipy
    import torch
    import torchvision
    return {"python": platform.python_version(), "reproduce": __version__, "torch": torch.__version__,
            "torchvision": torchvision.__version__, "numpy": np.__version__, "scipy": scipy.__version__,
            "h5py": h5py.__version__}
