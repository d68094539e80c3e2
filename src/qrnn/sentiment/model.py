"""The paper's IMDB classifier (Bradbury et al., 2017, section 3.1), and its LSTM twin.

GloVe-initialised embeddings -> four densely connected recurrent layers of 256 units (each
layer's input is concatenated to its output) with dropout 0.3 between layers -> the
representation at each review's last real token -> dropout -> one logit (positive vs negative).

`rnn="lstm"` builds the same network from `nn.LSTM` layers: the paper's "densely connected LSTM"
baseline, used by the benchmarks.
"""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from qrnn.modules import QRNN, dropout, last_real_step


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int
    embed_dim: int = 100
    hidden_size: int = 256
    num_layers: int = 4
    dropout: float = 0.3
    window: int = 2
    rnn: str = "qrnn"

    def __post_init__(self) -> None:
        if self.rnn not in ("qrnn", "lstm"):
            raise ValueError(f"rnn must be 'qrnn' or 'lstm', got {self.rnn!r}")
        for name in ("vocab_size", "embed_dim", "hidden_size", "num_layers", "window"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise TypeError(f"{name} must be an int, got {value!r}")
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    def to_dict(self) -> dict:
        return asdict(self)


class DenseLSTM(nn.Module):
    """Densely connected `nn.LSTM` layers with the call of a dense `QRNN` (the paper's baseline)."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int, dropout: float) -> None:
        super().__init__()
        self.dropout = dropout
        self.layers = nn.ModuleList(
            nn.LSTM(input_size + l * hidden_size, hidden_size) for l in range(num_layers)
        )
        self.output_size = input_size + num_layers * hidden_size

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, None]:
        # lengths are not needed: the states are read at each review's last real step, and a
        # forward LSTM's state there does not depend on the right padding after it.
        for l, layer in enumerate(self.layers):
            h, _ = layer(x)
            if self.training and l < len(self.layers) - 1:
                h = dropout(h, self.dropout)
            x = torch.cat([x, h], dim=-1)
        return x, None

    def last_output(self, x: Tensor, lengths: Tensor) -> Tensor:
        """(T, B, I), (B,) in [1, T] -> (B, output_size), the output at each last real step."""
        out, _ = self(x)
        return last_real_step(out, lengths)


class SentimentClassifier(nn.Module):
    """forward(ids (B, T) right-padded, lengths (B,) in [1, T]) -> logits (B,): log-odds positive."""

    def __init__(self, config: ModelConfig, embeddings: Tensor | None = None) -> None:
        super().__init__()
        self.config = config
        c = config
        self.embedding = nn.Embedding(c.vocab_size, c.embed_dim)
        if embeddings is not None:
            if tuple(embeddings.shape) != (c.vocab_size, c.embed_dim):
                raise ValueError(
                    f"embeddings must have shape (vocab_size, embed_dim) = "
                    f"{(c.vocab_size, c.embed_dim)}, got {tuple(embeddings.shape)}"
                )
            with torch.no_grad():
                self.embedding.weight.copy_(embeddings)
        if c.rnn == "qrnn":
            self.rnn = QRNN(c.embed_dim, c.hidden_size, num_layers=c.num_layers,
                            dropout=c.dropout, dense=True, window=c.window)
        else:
            self.rnn = DenseLSTM(c.embed_dim, c.hidden_size, c.num_layers, c.dropout)
        self.head = nn.Linear(self.rnn.output_size, 1)

    def forward(self, ids: Tensor, lengths: Tensor) -> Tensor:
        if ids.dim() != 2 or lengths.shape != ids.shape[:1]:
            raise ValueError(
                f"ids must be (B, T) and lengths (B,), got {tuple(ids.shape)} and {tuple(lengths.shape)}"
            )
        if lengths.numel() and not torch.compiler.is_compiling() and \
                (int(lengths.min()) < 1 or int(lengths.max()) > ids.shape[1]):
            raise ValueError(f"lengths must be in [1, T={ids.shape[1]}], got {lengths.tolist()}")
        x = self.embedding(ids.t())  # (T, B, E)
        # Both stacks (QRNN, DenseLSTM) are unidirectional and causal, so each review's steps up
        # to its last real one do not depend on the right padding, and that is the only step
        # read: no masking. The QRNN's last layer computes its output gate at that step only
        # (`QRNN.last_output`), a third fewer products in the widest layer.
        features = self.rnn.last_output(x, lengths)  # (B, E + L*H)
        if self.training:
            features = dropout(features, self.config.dropout)
        return self.head(features).squeeze(-1)
