"""Deep Hashing Network (Zhu, Long, Wang, Cao, AAAI 2016), reproduced as the authors' Caffe code ran it.

Modules, one role each:
    nets           CaffeNet / AlexNet + hash layer (fch) + tanh, in Caffe's layer names
    caffe_format   reading (and writing) .caffemodel / .caffemodel.h5 / mean files
    caffe_net      deploy prototxts and the Caffe layer <-> parameter mapping
    checkpoint     the package's checkpoint format (state dict + metadata, weights_only loading)
    lists          image lists in the field's format (path l1 ... lC)
    transforms     Caffe's image decoding, resize and crop transforms
    data           cached image datasets and the seeded batch order of Caffe's ImageData layer
    losses         the DHN pairwise cross-entropy + quantization loss and its variants
    solver         Caffe's SGD and learning-rate policies
    engine         the training and encoding loops shared by every dataset
    metrics        MAP, precision within Hamming radius, PR and precision@N curves (kernels: hamming)
    baselines      shallow hashing baselines (package: common, unsupervised, supervised; registry)
    reports        Table 1 / Table 2 writers
    figures        the paper's Figures (a)-(c)
    reproduction   the per-dataset engine: lists -> training -> codes -> metrics -> tables, figures
    datasets       list builders for CIFAR-10, NUS-WIDE and MIRFlickr-25k
Command-line entry points are thin modules: convert_weights, weights, encode, train, evaluate,
compare, cifar10, nus_wide, flickr (presets over reproduction), demo.
"""

__version__ = "0.1.0"
