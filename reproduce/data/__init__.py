"""Image lists and Caffe's image pipelines: decoding, resizing, crops, the cache and the batches. (README.md: How the code is laid out)"""
