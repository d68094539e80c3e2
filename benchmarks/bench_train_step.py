"""Benchmark: one training step (forward, backward, RMSprop step) of the full classifier.

The paper's IMDB model: 4 densely connected layers of 256, embeddings of 100, dropout 0.3,
batch 24, right-padded reviews of random lengths in [T/2, T]; QRNN (window 2, fo-pooling) vs the
same classifier built from nn.LSTM, side by side; reviews per second.

    .venv/bin/python benchmarks/bench_train_step.py [--T 400] [--batch 24]
    python benchmarks/bench_train_step.py --device cuda [--tf32]
"""

from __future__ import annotations

import argparse

import torch
from torch.nn import functional as F

from common import allow_tf32, compare, device_sync, machine, table
from qrnn.sentiment.model import ModelConfig, SentimentClassifier


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--T", type=int, default=400)
    parser.add_argument("--batch", type=int, default=24)
    parser.add_argument("--vocab", type=int, default=20000)
    parser.add_argument("--device", default="cpu", help="cpu, or cuda (Triton kernels, cuDNN LSTM)")
    parser.add_argument("--tf32", action="store_true",
                        help="CUDA: let float32 products use TF32 on both sides (default: neither)")
    args = parser.parse_args()
    allow_tf32(args.tf32)
    torch.manual_seed(0)
    B, T, device = args.batch, args.T, args.device
    lengths = torch.randint(T // 2, T + 1, (B,))
    lengths[0] = T
    ids = torch.randint(1, args.vocab, (B, T)) * (torch.arange(T) < lengths[:, None])
    ids, lengths = ids.to(device), lengths.to(device)
    labels = torch.randint(0, 2, (B,), device=device).float()
    steps = {}
    for rnn in ("qrnn", "lstm"):
        model = SentimentClassifier(ModelConfig(vocab_size=args.vocab, rnn=rnn)).to(device).train()
        opt = torch.optim.RMSprop(model.parameters(), lr=1e-3)

        def step(model=model, opt=opt):
            opt.zero_grad(set_to_none=True)
            loss = F.binary_cross_entropy_with_logits(model(ids, lengths), labels)
            loss.backward()
            opt.step()

        steps[rnn] = step
    # interleaved, see common.compare
    times = compare(steps, repeat=7, warmup=2, budget_s=90, sync=device_sync(device))
    rows = [[rnn.upper(), times[rnn] * 1e3, B / times[rnn], times["lstm"] / times[rnn]]
            for rnn in ("qrnn", "lstm")]
    print(f"## Training step, batch {B}, T={T} (lengths in [{T // 2}, {T}]), 4 dense layers of "
          "256, RMSprop, float32\n")
    print(machine() + "\n")
    print(table(["model", "ms / step", "reviews / s", "speed-up vs LSTM"], rows))


if __name__ == "__main__":
    main()
