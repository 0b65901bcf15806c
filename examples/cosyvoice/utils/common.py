"""Seeding (upstream: cosyvoice.utils.common)."""

import random

import numpy as np
import torch


def set_all_random_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
