"""Benchmark: single-review inference (batch 1, ~230 tokens) through the whole classifier.

Contenders, measured side by side under `torch.inference_mode()`, eval mode, float32:
    qrnn          SentimentClassifier(rnn="qrnn"): embeddings, 4 densely connected QRNN layers
                  of 256, head
    lstm          the same classifier built from nn.LSTM layers (rnn="lstm")
    qrnn matmuls  only the QRNN classifier's matrix products: each layer's convolution
                  (`causal_conv`, k products; the last layer's for z and f, plus its output
                  gate at the last step, see `QRNN.last_output`) and the head (the floor the
                  QRNN can approach)
Contenders are timed interleaved (`common.compare`), each warm (`rewarm`: run once untimed
right before each timed run, as when one model serves review after review).

    .venv/bin/python benchmarks/bench_inference.py [--tokens 230] [--vocab 20000]
    python benchmarks/bench_inference.py --device cuda [--tf32]
"""

from __future__ import annotations

import argparse

import torch
from torch.nn import functional as F

from common import allow_tf32, compare, device_sync, machine, table
from qrnn.ops import causal_conv
from qrnn.sentiment.model import ModelConfig, SentimentClassifier


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=230)
    parser.add_argument("--vocab", type=int, default=20000)
    parser.add_argument("--device", default="cpu", help="cpu, or cuda (Triton kernels, cuDNN LSTM)")
    parser.add_argument("--tf32", action="store_true",
                        help="CUDA: let float32 products use TF32 on both sides (default: neither)")
    args = parser.parse_args()
    allow_tf32(args.tf32)
    torch.manual_seed(0)
    T, device = args.tokens, args.device
    ids = torch.randint(1, args.vocab, (1, T), device=device)
    lengths = torch.tensor([T], device=device)
    models = {rnn: SentimentClassifier(ModelConfig(vocab_size=args.vocab, rnn=rnn)).to(device)
              for rnn in ("qrnn", "lstm")}
    for model in models.values():
        model.eval()
    qrnn = models["qrnn"]
    layers = qrnn.rnn.layers
    # inputs of each layer's convolution: (T, 1, I_l), I_l = E + l*H (dense)
    xs = [torch.randn(T, 1, layer.input_size, device=device) for layer in layers]
    head_in = torch.randn(1, qrnn.head.in_features, device=device)

    # The last layer computes z and f at every step, o at the last one (`QRNN.last_output`).
    last, H = layers[-1], layers[-1].hidden_size
    taps = last.weight.detach().view(last.window, 3 * H, last.input_size)
    zf, o_taps = taps[:, :2 * H].reshape(-1, last.input_size), taps[:, 2 * H:]
    last_rows = xs[-1][-last.window:, 0]  # (k, I_L): the inputs o reads at the last step

    def matmuls():
        for layer, x in zip(layers[:-1], xs):
            causal_conv(x, layer.weight, None, layer.window)
        causal_conv(xs[-1], zf, None, last.window)
        sum(F.linear(last_rows[-1 - j], o_taps[j]) for j in range(last.window))
        qrnn.head(head_in)

    with torch.inference_mode():
        logits = {rnn: m(ids, lengths) for rnn, m in models.items()}
        assert all(torch.isfinite(v).all() for v in logits.values())
        fns = {rnn: (lambda m=m: m(ids, lengths)) for rnn, m in models.items()}
        times = compare({**fns, "matmul": matmuls}, repeat=60, warmup=5, rewarm=True,
                        sync=device_sync(device))
    rows = [["QRNN classifier", times["qrnn"] * 1e3, 1.0, times["qrnn"] / times["matmul"]],
            ["LSTM classifier", times["lstm"] * 1e3, times["lstm"] / times["qrnn"], ""],
            ["QRNN matmuls only", times["matmul"] * 1e3, "", 1.0]]
    print(f"## Single-review inference, batch 1, {T} tokens, 4 dense layers of 256, float32\n")
    print(machine() + "\n")
    print(table(["model", "ms / review", "time / QRNN", "time / QRNN matmuls"], rows))
    print(f"\nLSTM / QRNN speed-up: {times['lstm'] / times['qrnn']:.3f}x; QRNN / its matmuls: "
          f"{times['qrnn'] / times['matmul']:.3f}x")


if __name__ == "__main__":
    main()
