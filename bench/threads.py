"""Time one training step of each sample at 1 and 2 torch threads (see nndoctor/engine/threads.py).

Run from the repo root: python bench/threads.py
"""
import sys
import time

import torch

sys.path.insert(0, "sample_models")
from nndoctor.engine.session import Session
from nndoctor.target import load_target

res = {}
for name in ["mlp", "simple_cnn", "text_classifier", "bottleneck", "transformer_encoder"]:
    for th in (1, 2):
        torch.set_num_threads(th)
        s = Session(load_target(f"sample_models/{name}.py"), device="cpu")
        b = s.first_batch
        for _ in range(3):
            s.train_step(b)
        t = time.perf_counter()
        for _ in range(20):
            s.train_step(b)
        res[(name, th)] = (time.perf_counter() - t) / 20
    print(f"{name:20s} 1 thread {res[(name,1)]*1e3:7.1f} ms  2 threads {res[(name,2)]*1e3:7.1f} ms")
