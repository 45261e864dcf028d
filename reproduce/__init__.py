"""Deep Hashing Network (Zhu, Long, Wang, Cao, AAAI 2016), reproduced as the authors' Caffe code ran it.

Library modules, one role each, in the order data flows:
    caffe_format      reading .caffemodel / .caffemodel.h5 / mean files
    caffe_writer      writing them (export to Caffe; the tests' files in the zoo's formats)
    caffe_net         deploy / train_val prototxts and the Caffe layer <-> parameter mapping
    nets              CaffeNet / AlexNet + hash layer (fch) + tanh, in Caffe's layer names
    checkpoint        the package's checkpoint format (state dict + metadata, weights_only loading)
    pretrained        the BVLC zoo files: download, sha1 check, conversion
    lists             image lists in the field's format (path l1 ... lC)
    transforms        Caffe's ImageData pipeline: decoding as OpenCV does, cv::resize, crop / mirror / mean
    pycaffe_pipeline  the authors' evaluation pipeline: pycaffe's caffe.io + Classifier
    data              cached image datasets and the seeded batch order of Caffe's ImageData layer
    losses            the DHN pairwise cross-entropy + quantization loss, its settings and variants
    solver            Caffe's SGD, learning-rate policies and solver settings
    solver_prototxt   the authors' solver.prototxt read into solver settings
    methods           the deep baselines CNNH, CNNH*, DNNH: heads, losses, targets (package)
    config            the typed run configuration (data, model, solver, loss, method) and Table 2's variants
    engine            the training loop shared by every dataset and variant
    encoding          codes and fc7 features of an image list (encode_list)
    codes             reading code files (this package's and other methods')
    arrayfiles        arrays from untrusted .npy / .npz / HDF5 / .mat files, sizes checked first
    metrics           MAP, precision within Hamming radius, PR and precision@N (kernels: hamming)
    records           the metrics record: metrics.json and its CSVs, built, written and read
    baselines         shallow hashing baselines (package: LSH, SH, ITQ, ITQ-CCA, KSH, MLH, BRE)
    paper             the paper's facts: datasets, bit lengths, methods, published numbers
    reports           Table 1 / Table 2 writers
    figures           the paper's Figures (a)-(c)
    comparison        evaluate runs, imports and baselines; tables and figures of one dataset
    reproduction      the per-dataset engine: lists -> training -> codes -> metrics -> tables
    sweep             the paper's cross-validation grid, extended past an edge
    datasets          CIFAR-10, NUS-WIDE, MIRFlickr-25k, ImageNet-100, MS-COCO and any dataset in
                      list form (custom): their lists and their commands
    provenance, fileio, errors   versions and git revision; atomic outputs; one-line errors
Command-line entry points are a parser and a `main`: convert_weights, weights, train, encode,
evaluate, compare, demo, and cifar10, nus_wide, flickr, imagenet100, coco, custom (thin:
reproduce.datasets.<name>.main).
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
