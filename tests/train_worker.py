"""Run reproduce.training.engine.train on a tiny network (tests only): `python train_worker.py CONFIG.json`.

Started by tests/test_engine.py directly, under torchrun (2 processes, gloo), and as a process the
test kills with SIGKILL to check that --resume continues bit for bit.
"""
import json
import sys

import torch
from torch import nn
import torch.nn.functional as F

from reproduce.model.nets import SharedDropout
from reproduce.training.config import RunConfig
from reproduce.training.engine import train


class TinyNet(nn.Module):
    """Stand-in for DHNNet with its parameter names (fc7, hash_layer): 3 x 227 x 227 -> K codes."""
    arch = "caffenet"

    def __init__(self, bits=8, dropout=0.0):
        super().__init__()
        self.bits = bits
        self.fc7 = nn.Linear(3 * 8 * 8, 32)
        self.drop7 = SharedDropout(dropout)     # DHNNet's dropout: masks of the global batch
        self.hash_layer = nn.Linear(32, bits)

    def forward(self, x):
        x = F.adaptive_avg_pool2d(x, 8).flatten(1) / 64.0
        return torch.tanh(self.hash_layer(self.drop7(F.relu(self.fc7(x)))))


def tiny_model(bits, dropout, seed=0):
    torch.manual_seed(seed)
    return TinyNet(bits, dropout)


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        cfg = RunConfig.from_dict(json.load(f), sys.argv[1])
    train(cfg, model=tiny_model(cfg.model.bits, cfg.model.dropout), progress=False)
