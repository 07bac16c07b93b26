"""Shared test settings: quiet progress bars and a fixed thread count for repeatable speed."""

import os

import torch

os.environ.setdefault("TQDM_DISABLE", "1")
torch.set_num_threads(int(os.environ.get("SAMPLEWISE_TEST_THREADS", "2")))
