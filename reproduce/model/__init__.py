"""The network (CaffeNet / AlexNet + hash layer), its checkpoints and the ImageNet weights. (README.md: How the code is laid out)"""
