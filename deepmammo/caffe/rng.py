"""The engine's random numbers: one master seed (caffe.set_random_seed) from which every
consumer (fillers, each Dropout layer, each Data layer's crop/mirror) draws its own stream, in
net-construction order, so a seeded run repeats exactly whatever the timing of threads."""
import os

import numpy as np
import torch

_master = None


def set_random_seed(seed):
    """Seed everything random in nets created (and fillers run) from now on."""
    global _master
    _master = np.random.RandomState(int(seed) % (2 ** 32))


def next_seed():
    """A fresh 63-bit seed: from the master stream when seeded, from the OS otherwise."""
    if _master is None:
        return int.from_bytes(os.urandom(8), "little") >> 1
    return int(_master.randint(0, 2 ** 62, dtype=np.int64))


def torch_generator(device="cpu"):
    """A torch.Generator on `device`, seeded from next_seed()."""
    gen = torch.Generator(device=torch.device(device))
    gen.manual_seed(next_seed())
    return gen


def numpy_rng():
    return np.random.RandomState(next_seed() % (2 ** 32))
