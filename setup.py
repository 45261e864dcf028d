"""Install: pip install -e ".[test]"  (see README.md)."""
from setuptools import find_packages, setup

setup(
    name="reproduce-dhn",
    version="0.1.0",
    description="Deep Hashing Network (Zhu et al., AAAI 2016) reproduced as the authors' Caffe code ran it",
    # data_lists/ stays at the repository's top level and ships inside the package as
    # reproduce.data_lists (read with importlib.resources: reproduce.datasets.common.DATA_LISTS).
    packages=find_packages(include=["reproduce", "reproduce.*"]) + ["reproduce.data_lists"],
    package_dir={"reproduce.data_lists": "data_lists"},
    package_data={"reproduce.reporting": ["*.csv"],
                  "reproduce.data_lists": ["README.md", "*/*.txt", "*/*.txt.gz"]},
    python_requires=">=3.10",
    install_requires=[
        # Capped at the builds this project is tested with (torch 2.14.1 / torchvision 0.29.1);
        # a range, not a pin, so that pip takes an installed or locally cached build.
        "torch>=2.1,<=2.14.1",
        "torchvision>=0.16,<=0.29.1",
        "numpy>=1.24",
        "h5py>=3.8",
        "scipy>=1.10",
        "matplotlib>=3.7",
        "pillow>=9",                 # image decoding (reproduce.data.transforms matches cv2.imread with it)
        "tqdm>=4.60",                # progress bars with ETA (encode, cache build, training)
        "numba>=0.58",               # compiled O(N) Hamming-ranking kernels in reproduce.evaluation.metrics
        "threadpoolctl>=3",          # KSH's descent runs single-threaded (speed, same rounding everywhere)
        "scikit-learn>=1.2",         # only for the offline demo's dataset (handwritten digits)
        "submitit>=1.5",             # the SLURM executor: each job of a job plan as a SLURM job (pure Python)
    ],
    extras_require={
        # OpenCV 4.x is the independent reference for Caffe's forward pass and image pipeline in
        # the tests; OpenCV 5 removed cv2.dnn.readNetFromCaffe.
        # hypothesis: property-based fuzzing of every parser of user files (tests/test_fuzz_parsers.py).
        "test": ["pytest>=7", "opencv-python-headless>=4.5,<5", "hypothesis>=6.100"],
    },
)
