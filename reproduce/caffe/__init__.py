"""Caffe's files without Caffe: model and mean files, prototxts, solver.prototxt. (README.md: How the code is laid out)"""
