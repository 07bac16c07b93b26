"""Shared test settings: quiet progress bars and a fixed thread count for repeatable speed."""

import os

import torch

os.environ.setdefault("TQDM_DISABLE", "1")
# Tiny models run fastest single-threaded, and a noisy two-core machine makes more threads slower.
torch.set_num_threads(int(os.environ.get("SAMPLEWISE_TEST_THREADS", "1")))
