"""One training run: its configuration, Caffe's solver, the losses and the training loop. (README.md: How the code is laid out)"""
