"""Caffe's Dropout layer with masks shareable across the processes of a multi-process run.

Used by every backbone of reproduce.model.nets: Caffe's drop6/drop7 and torchvision's classifier
Dropout modules (which DHNNet replaces by SharedDropout of the same p).
"""
import torch
from torch import nn


class SharedDropout(nn.Dropout):
    """Caffe's Dropout layer (inverted: scales by 1/(1-p) at train time, as nn.Dropout) whose
    masks can come from one stream shared by every process of a multi-process run.

    With `share(stream, rank, world_size)`, each call draws the mask of the *global* batch
    (world_size x the local rows) from `stream`, a CPU torch.Generator that every process
    advances identically, and keeps its own rows rank*b ... (rank+1)*b - 1: the masks of a
    run then do not depend on how the batch is split over processes. One process draws exactly
    what nn.Dropout draws from a generator in the same state (ATen's CPU dropout:
    empty_like(x).bernoulli_(1 - p), divided by 1 - p, times x). Without a stream it is nn.Dropout.
    """

    def __init__(self, p=0.5):
        super().__init__(p)
        self.stream, self.rank, self.world_size = None, 0, 1

    def share(self, stream, rank=0, world_size=1):
        self.stream, self.rank, self.world_size = stream, rank, world_size

    def forward(self, x):
        if self.stream is None:
            return super().forward(x)
        if not self.training or self.p == 0 or x.numel() == 0:   # ATen draws nothing then either
            return x
        b = x.shape[0]
        noise = torch.empty((b * self.world_size,) + x.shape[1:], dtype=x.dtype)
        noise.bernoulli_(1 - self.p, generator=self.stream)
        noise = noise[self.rank * b:(self.rank + 1) * b].div_(1 - self.p)
        return x * noise.to(x.device)


def share_dropout_stream(model, seed, rank=0, world_size=1):
    """Give every SharedDropout of `model` one mask stream seeded with `seed` (see SharedDropout);
    returns the stream (a CPU torch.Generator), whose state a snapshot saves."""
    stream = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, SharedDropout):
            module.share(stream, rank, world_size)
    return stream
