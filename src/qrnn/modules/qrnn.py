"""The QRNN layer as an `nn.Module` (Bradbury et al., 2017), a drop-in for `nn.LSTM`.

One QRNN layer is a masked (causal) convolution of width k over time that produces the gates,
followed by a pooling recurrence (`qrnn.ops.qrnn_pool`, the only sequential part):

    z_t = tanh(sum_j Wz_j x_{t-j} + bz)     f_t = sigmoid(...)     o_t = sigmoid(...)
    fo-pooling:  c_t = f_t * c_{t-1} + (1 - f_t) * z_t,   h_t = o_t * c_t

Variable lengths need no masking inside the recurrence: the convolution is causal, so steps
after a sequence's end never reach its real steps, and its final state is read at its last real
step. The reverse direction of a bidirectional layer runs the same causal layer on each sequence
reversed *within its own length* (padding stays at the end), so it starts at the real last step.
No shape depends on the lengths' values, so `torch.export` works with lengths that vary at run
time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from qrnn.ops import GATES as _GATES
from qrnn.ops import causal_conv, qrnn_conv_pool, qrnn_pool
from qrnn.ops.conv import check_window

# A gate pre-activation whose sigmoid is exactly 1 (and sigmoid(-HOLD) exactly 0) in every
# floating dtype, float16 included (exp(-1e4) underflows to 0 even in float64; 1e4 < 65504).
# Finite rather than inf so that no kernel can form inf/inf. Used by zoneout to hold a cell.
_HOLD = 1.0e4


class QRNNState(NamedTuple):
    """Everything a unidirectional `QRNN` needs to continue a sequence where a call stopped.

    Returned by `QRNN.forward(..., return_state=True)` and accepted as its `hx`. Feeding a
    sequence in pieces and passing each returned state to the next call gives the same outputs
    and final state as one call on the whole sequence.

    Fields (time-major whatever `batch_first` is, like `h_n` of `nn.LSTM`):
        cells:  (num_layers, B, H) each layer's cell c at the last real step (this is `h_n`).
        inputs: tuple of num_layers tensors, inputs[l] of shape (window - 1, B, I_l): the last
                window - 1 inputs layer l saw (its convolution's left context; zeros before the
                start of a sequence). I_l is layer l's input size. Empty (0 rows) for window 1.
    """

    cells: Tensor
    inputs: tuple[Tensor, ...]


def _hold_cells(gates: Tensor, hold: Tensor, pooling: str) -> Tensor:
    """gates: (T, B, G*H) pre-activations, hold: (T, B, H) bool -> (T, B, G*H).

    Where `hold` is True the pooling keeps the previous cell: f = 1 (and i = 0 for ifo), so
    c_t = c_{t-1} (up to the kernel's rounding); the gradient to the replaced entries is zero.
    """
    parts = list(gates.chunk(_GATES[pooling], dim=-1))  # z, f[, o][, i]
    parts[1] = parts[1].masked_fill(hold, _HOLD)
    if pooling == "ifo":
        parts[3] = parts[3].masked_fill(hold, -_HOLD)
    return torch.cat(parts, dim=-1)


def _expected_zoneout(gates: Tensor, p: float, pooling: str) -> Tensor:
    """Gate pre-activations whose pooling is the expectation of zoneout with probability p.

    Zoneout keeps c_t = c_{t-1} with probability p, else applies the update. The update is
    linear in c_{t-1}, so its expectation is the same recurrence with
        f' = p + (1 - p) f     (and i' = (1 - p) i for ifo; for f/fo pooling 1 - f' = (1 - p)(1 - f)).
    We return logit(f') (and logit(i')), computed in float32 at least, in log space.
    gates: (T, B, G*H) -> (T, B, G*H).
    """
    parts = list(gates.chunk(_GATES[pooling], dim=-1))
    work = torch.promote_types(gates.dtype, torch.float32)
    a = parts[1].to(work)
    # log f' - log(1 - f'), with 1 - f' = (1 - p) * sigmoid(-a)
    parts[1] = (torch.log(p + (1 - p) * torch.sigmoid(a)) - math.log1p(-p)
                - F.logsigmoid(-a)).to(gates.dtype)
    if pooling == "ifo":
        b = parts[3].to(work)
        # log i' - log(1 - i'), with i' = (1 - p) sigmoid(b), 1 - i' = p + (1 - p) sigmoid(-b)
        parts[3] = (math.log1p(-p) + F.logsigmoid(b)
                    - torch.log(p + (1 - p) * torch.sigmoid(-b))).to(gates.dtype)
    return torch.cat(parts, dim=-1)


class QRNNLayer(nn.Module):
    """One direction of one QRNN layer: causal convolution of width k, then pooling.

    Args:
        input_size: I. hidden_size: H. window: convolution width k >= 1 (k = 1 is the
        element-wise QRNN; k = 2 the paper's language-model setting). pooling: "f", "fo", "ifo".
        bias: add a learned bias to the gate pre-activations. zoneout: probability p in [0, 1)
        that a cell unit keeps its previous value at a step (training mode; in evaluation mode
        the layer computes the expectation instead, see `_expected_zoneout`).

    Parameters (G = 2, 3 or 4 gates for pooling "f", "fo", "ifo"):
        weight: (k * G * H, input_size), tap j (multiplying x_{t-j}) is rows [j*G*H, (j+1)*G*H),
                and within a tap the gates are stacked in the order z, f, o, i.
        bias:   (G * H,) or None.
    """

    def __init__(self, input_size: int, hidden_size: int, *, window: int = 2, pooling: str = "fo",
                 bias: bool = True, zoneout: float = 0.0, device=None, dtype=None) -> None:
        super().__init__()
        if pooling not in _GATES:
            raise ValueError(f"pooling must be one of {sorted(_GATES)}, got {pooling!r}")
        check_window(window)
        if input_size < 1 or hidden_size < 1:
            raise ValueError(f"input_size and hidden_size must be >= 1, got {input_size}, {hidden_size}")
        if not 0.0 <= zoneout < 1.0:
            raise ValueError(f"zoneout must be in [0, 1), got {zoneout}")
        self.input_size, self.hidden_size = input_size, hidden_size
        self.window, self.pooling, self.zoneout = window, pooling, float(zoneout)
        gates = _GATES[pooling] * hidden_size
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(window * gates, input_size, **factory))
        self.bias = nn.Parameter(torch.empty(gates, **factory)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Same scale as nn.LSTM / nn.Conv1d: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = k * I.
        bound = 1.0 / math.sqrt(self.window * self.input_size)
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, window={self.window}, "
                f"pooling={self.pooling!r}, bias={self.bias is not None}, zoneout={self.zoneout}")

    def gates(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Masked (causal) convolution: pre-activation gates.

        Args:
            x:       (T, B, I) inputs.
            context: (k - 1, B, I) the inputs just before x[0] (a previous piece's tail), or None
                     for zeros (the start of a sequence).
        Returns:
            (T, B, G*H), step t = bias + sum_j W_j x_{t-j}.

        `qrnn.ops.causal_conv`: tap j is one matrix product of x[:T-j] added in place into
        rows [j:] of the result, so no shifted copy of the input is ever built.
        """
        g = self._conv(x, context)
        return g if self.bias is None else g.add_(self.bias)

    def _conv(self, x: Tensor, context: Tensor | None) -> Tensor:
        if context is not None:
            context = context.to(x.dtype)
        return causal_conv(x, self.weight, context, self.window)  # (T, B, G*H), no bias

    def _check(self, x: Tensor, c0: Tensor | None, context: Tensor | None) -> Tensor | None:
        """Shapes of `forward`'s arguments; returns c0 in x's dtype."""
        if x.dim() != 3 or x.shape[-1] != self.input_size:
            raise ValueError(f"QRNNLayer: x must have shape (T, B, input_size={self.input_size}), "
                             f"got {tuple(x.shape)}")
        B = x.shape[1]
        if context is not None and context.shape != (self.window - 1, B, self.input_size):
            raise ValueError(f"QRNNLayer: context must have shape (window-1={self.window - 1}, "
                             f"B={B}, input_size={self.input_size}), got {tuple(context.shape)}")
        if c0 is not None:
            if c0.shape != (B, self.hidden_size):
                raise ValueError(f"QRNNLayer: c0 must have shape (B={B}, hidden_size="
                                 f"{self.hidden_size}), got {tuple(c0.shape)}")
            c0 = c0.to(x.dtype)
        return c0

    def forward(self, x: Tensor, c0: Tensor | None = None, *,
                context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Run the layer over full-length sequences.

        Args:
            x:       (T, B, I) inputs.
            c0:      (B, H) initial cell, or None for zeros.
            context: (k - 1, B, I) inputs preceding x[0], or None for zeros (see `gates`).
        Returns:
            h: (T, B, H) outputs, c: (T, B, H) cells. Step t depends on x[:t+1] only, so for a
            right-padded batch the real steps are exact and the padded ones are to be ignored.
        Zoneout (self.zoneout = p > 0): in training mode each cell unit independently keeps its
        previous value with probability p at each step; in evaluation mode the recurrence uses
        the expected gates instead (no randomness; see `_expected_zoneout`).
        """
        c0 = self._check(x, c0, context)
        if self.zoneout == 0:
            # Fast path: the convolution's k matrix products, then bias, activations and
            # pooling in one op (`qrnn_conv_pool` with window 1: its input is the gates).
            return qrnn_conv_pool(self._conv(x, context), self.bias, c0, self.pooling, 1)
        g = self.gates(x, context)  # (T, B, G*H)
        if self.training:
            zoned = torch.rand(x.shape[0], x.shape[1], self.hidden_size,
                               device=x.device) < self.zoneout
            g = _hold_cells(g, zoned, self.pooling)
        else:
            g = _expected_zoneout(g, self.zoneout, self.pooling)
        return qrnn_pool(g, c0, self.pooling)

    def last_output(self, x: Tensor, steps: Tensor, c0: Tensor | None = None, *,
                    context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The output h at one step per sequence, and the cells: what `forward` gives as
        `h[steps[b], b]` and `c`, with the output gate computed at those steps only.

        h_t = o_t * c_t reads o at step t alone, and o feeds no recurrence, so where only one
        step's output is read (a classifier's last real step) the convolution computes z and f
        for every step and o for B steps: a third fewer products. For pooling "fo" without
        zoneout; otherwise `forward` runs in full and h is read at `steps`.

        Args:
            x, c0, context: as in `forward`.
            steps: (B,) integer step of each sequence, in [0, T).
        Returns:
            h: (B, H) output at step steps[b] of sequence b; c: (T, B, H) cells.
        """
        h, c, _ = self._last_output(x, steps, c0, context)
        return h, c

    def _last_output(self, x: Tensor, steps: Tensor, c0: Tensor | None,
                     context: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """`last_output`'s h and c, and x at the steps (B, I) (the dense stack's features)."""
        c0 = self._check(x, c0, context)
        T, B = x.shape[0], x.shape[1]
        if not isinstance(steps, Tensor) or steps.shape != (B,) or steps.is_floating_point() \
                or steps.dtype == torch.bool or steps.is_complex():
            got = (f"shape {tuple(steps.shape)} dtype {steps.dtype}" if isinstance(steps, Tensor)
                   else type(steps).__name__)
            raise ValueError(f"QRNNLayer.last_output: steps must be an integer tensor of shape "
                             f"(B={B},), got {got}")
        if not torch.compiler.is_compiling() and B and \
                (int(steps.min()) < 0 or int(steps.max()) >= T):
            raise ValueError(f"QRNNLayer.last_output: steps must be in [0, T={T}), "
                             f"got {steps.tolist()}")
        steps = steps.to(device=x.device, dtype=torch.long)
        if self.pooling != "fo" or self.zoneout != 0:
            h, c = self(x, c0, context=context)
            return _steps_of(h, steps), c, _steps_of(x, steps)
        k, H, I = self.window, self.hidden_size, self.input_size
        taps = self.weight.view(k, 3 * H, I)  # per tap: z, f, o row blocks
        zf = taps[:, :2 * H]  # (k, 2H, I), a view (copied only where autograd records)
        zf_bias = None if self.bias is None else self.bias[:2 * H]
        # the cells alone: pooling "f" of z and f is the fo cell recurrence (h = c)
        if context is not None:
            context = context.to(x.dtype)
        _, c = qrnn_conv_pool(causal_conv(x, zf, context, k), zf_bias, c0, "f", 1)
        # o at the steps: tap j reads x at step - j, from the context (or zeros) before x[0].
        # One gather for all taps: its backward fills a (T, B, I) gradient with zeros once.
        back = steps - torch.arange(k, device=x.device).unsqueeze(1)  # (k, B)
        rows = x.gather(0, back.clamp(min=0).unsqueeze(-1).expand(-1, -1, I))  # (k, B, I)
        if k > 1:
            before = (back < 0).unsqueeze(-1)
            if context is None:
                rows = rows.masked_fill(before, 0)
            else:  # step s < 0 is context row k-1+s
                at = (back + k - 1).clamp(min=0, max=k - 2).unsqueeze(-1).expand(-1, -1, I)
                rows = torch.where(before, context.gather(0, at), rows)
        # o's pre-activation and h in float32 at least, rounded once to c's dtype, as the
        # pooling kernels compute h (and under autocast h keeps the products' dtype)
        work = torch.promote_types(c.dtype, torch.float32)
        o = sum(F.linear(rows[j], taps[j, 2 * H:]).to(work) for j in range(k))
        if self.bias is not None:
            o = o + self.bias[2 * H:].to(work)
        h = torch.sigmoid(o) * _steps_of(c, steps).to(work)
        return h.to(c.dtype), c, rows[0]


class QRNN(nn.Module):
    """A stack of QRNN layers with the constructor and call of `nn.LSTM`.

    Args:
        input_size, hidden_size, num_layers, bias, batch_first, bidirectional: as in `nn.LSTM`.
        dropout: as in `nn.LSTM`: dropout on each layer's output except the last layer's (in
            training mode only). With `dense`, the dropped-out output is what later layers and
            `output` see.
        window: convolution width k >= 1. pooling: "f", "fo" or "ifo".
        zoneout: probability in [0, 1) that a cell unit keeps its previous value at a step
            (Krueger et al., 2017; paper sec. 2.1). Training mode: random. Evaluation mode:
            deterministic, the expectation of the layer's recurrence (f' = p + (1-p) f).
        dense: densely connected layers (Huang et al.; used by the paper's classifier): each
            layer's input is concatenated to its output, so layer l reads I + l*D*H features and
            `output` has I + num_layers*D*H features (D = 2 if bidirectional else 1).
        device, dtype: where and in which floating dtype to create the parameters.

    Parameters: `layers.{l}.weight` (k*G*H, I_l) and `layers.{l}.bias` (G*H,) for the forward
    direction of layer l (see `QRNNLayer`); `layers_reverse.{l}.*` likewise if bidirectional.

    No state is kept in the module between calls: what a call needs comes in through `hx`.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, *,
                 window: int = 2, pooling: str = "fo", zoneout: float = 0.0, dense: bool = False,
                 device=None, dtype=None) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if dtype is not None and not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating dtype, got {dtype}")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, float(dropout)
        self.bidirectional, self.dense = bidirectional, dense
        self.window, self.pooling, self.zoneout = window, pooling, float(zoneout)
        directions = 2 if bidirectional else 1

        def layer_input(l: int) -> int:
            if dense:
                return input_size + l * directions * hidden_size
            return input_size if l == 0 else directions * hidden_size

        def make(l: int) -> QRNNLayer:
            return QRNNLayer(layer_input(l), hidden_size, window=window, pooling=pooling, bias=bias,
                             zoneout=zoneout, device=device, dtype=dtype)

        self.layers = nn.ModuleList(make(l) for l in range(num_layers))
        self.layers_reverse = nn.ModuleList(make(l) for l in range(num_layers)) if bidirectional else None

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def output_size(self) -> int:
        """Features of `output`: I + num_layers*D*H if dense, else D*H."""
        out = self.num_directions * self.hidden_size
        return self.input_size + self.num_layers * out if self.dense else out

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
                f"bias={self.bias}, batch_first={self.batch_first}, dropout={self.dropout}, "
                f"bidirectional={self.bidirectional}, window={self.window}, "
                f"pooling={self.pooling!r}, zoneout={self.zoneout}, dense={self.dense}")

    def reset_parameters(self) -> None:
        for layer in self.modules():
            if isinstance(layer, QRNNLayer):
                layer.reset_parameters()

    def flatten_parameters(self) -> None:
        """Present for `nn.LSTM` compatibility. Each layer's weights are already one contiguous
        (k*G*H, I_l) tensor whose taps are contiguous row blocks, so there is nothing to flatten."""

    def __prepare_scriptable__(self):
        # torch.jit.script calls this first; say what to use instead of a long TorchScript error.
        raise RuntimeError(
            "QRNN does not support TorchScript (torch.jit.script). Export it with torch.export: "
            "torch.export.export(model, (x,), {'lengths': lengths}, dynamic_shapes=...); "
            "see docs/drop-in.md.")

    def forward(self, input: Tensor | PackedSequence, hx: Tensor | QRNNState | None = None,
                lengths: Tensor | Sequence[int] | None = None, *, return_state: bool = False):
        """Run the stack, like `nn.LSTM.forward` (D = num_directions, L = num_layers).

        Args:
            input:   (T, B, I), or (B, T, I) if batch_first, or (T, I) unbatched, or a
                     PackedSequence (then `output` is packed the same way, as in nn.LSTM).
            hx:      None (zeros); or a tensor (L*D, B, H) of initial cells (a fresh sequence
                     whose cells start there: the convolution sees zeros before step 0); or a
                     `QRNNState` from a previous call (unidirectional only) to continue a stream.
                     Unbatched input takes (L*D, H).
            lengths: (B,) integer real lengths of a right-padded batch, each in [0, T], or None
                     if every sequence fills all T steps. Steps at or after a sequence's length
                     are ignored: they do not change any real step's output nor the final state.
            return_state: if True, return a `QRNNState` instead of h_n (unidirectional only).
        Returns:
            output: (T, B, D*H) (or (B, T, .) if batch_first; I + L*D*H features if dense),
                    each layer's h at every step; zero at padded steps. Packed if input was.
            h_n:    (L*D, B, H), ordered layer 0 forward, layer 0 reverse, layer 1 forward, ...:
                    each layer's *cell* c after its last real step (the forward direction at
                    step lengths[b]-1, the reverse direction at step 0). It is the recurrent
                    state: passing it back as hx continues the cell recurrence. The last output
                    h of a sequence is output at its last real step.
                    With return_state=True, a `QRNNState` whose `cells` is h_n.
        """
        self._check_hx(hx, return_state)

        if isinstance(input, PackedSequence):
            if lengths is not None:
                raise ValueError("QRNN: a PackedSequence carries its own lengths; pass lengths=None")
            if torch.compiler.is_exporting():
                raise NotImplementedError("QRNN: export supports padded input with a lengths tensor, "
                                          "not PackedSequence")
            padded, lens = pad_packed_sequence(input)  # (T, B, I) in the caller's batch order
            output, state = self._forward_time_major(padded, hx, lens, return_state)
            order = input.sorted_indices
            if order is not None:  # pack in the input's (sorted) order, then reuse its indices
                output, lens = output.index_select(1, order), lens[order.cpu()]
            data = pack_padded_sequence(output, lens, enforce_sorted=True).data
            return PackedSequence(data, input.batch_sizes, input.sorted_indices,
                                  input.unsorted_indices), state

        if not isinstance(input, Tensor):
            raise TypeError(f"QRNN: input must be a Tensor or PackedSequence, got {type(input).__name__}")
        if input.dim() == 2:  # unbatched (T, I), as nn.LSTM accepts
            if lengths is not None or return_state or isinstance(hx, QRNNState):
                raise ValueError("QRNN: unbatched (T, input_size) input takes neither lengths nor "
                                 "streaming state; add a batch dimension of 1")
            if hx is not None:
                expected = (self.num_layers * self.num_directions, self.hidden_size)
                if hx.shape != expected:
                    raise ValueError(f"QRNN: for unbatched input hx must have shape "
                                     f"(num_layers*num_directions, hidden_size) = {expected}, "
                                     f"got {tuple(hx.shape)}")
                hx = hx.unsqueeze(1)
            output, h_n = self._forward_time_major(input.unsqueeze(1), hx, None, False)
            return output.squeeze(1), h_n.squeeze(1)

        self._check_input(input, self.batch_first)
        x = input.transpose(0, 1) if self.batch_first else input
        output, state = self._forward_time_major(x, hx, lengths, return_state)
        return (output.transpose(0, 1) if self.batch_first else output), state

    def last_output(self, input: Tensor, lengths: Tensor | Sequence[int] | None = None,
                    hx: Tensor | QRNNState | None = None) -> Tensor:
        """The output at each sequence's last real step, as a sequence classifier reads it.

        Equals `output` of `output, _ = self(input, hx, lengths)` at step `lengths[b] - 1` of
        each sequence b (the last step without lengths), but the last layer computes its output gate o at that
        step only (`QRNNLayer.last_output`; pooling "fo" without zoneout): h_t = o_t * c_t and o
        feeds no recurrence, so that layer does a third fewer products, forward and backward.
        The reverse direction of a bidirectional stack ends at step 0 of its reversed sequence,
        and is computed the same way.

        Args:
            input:   (T, B, I), or (B, T, I) if batch_first.
            lengths: (B,) integer real lengths of a right-padded batch, each in [1, T], or None
                     if every sequence fills all T steps (checked in eager mode; under
                     torch.compile or export a length out of range is an indexing error).
            hx:      as in `forward`.
        Returns:
            (B, D*H), or (B, I + L*D*H) if dense: the input and every layer's output there.
        """
        where = "QRNN.last_output"
        if not isinstance(input, Tensor):
            raise TypeError(f"{where}: input must be a Tensor, got {type(input).__name__}")
        self._check_hx(hx, False, where)
        self._check_input(input, self.batch_first, where)
        x = input.transpose(0, 1) if self.batch_first else input
        T, B = x.shape[0], x.shape[1]
        if lengths is None:
            steps = torch.full((B,), T - 1, dtype=torch.long, device=x.device)
        else:
            lengths = self._check_lengths(lengths, T, B, x.device)
            if not torch.compiler.is_compiling() and lengths.numel() and int(lengths.min()) < 1:
                raise ValueError(f"{where}: lengths must be in [1, T={T}] (a sequence of length "
                                 f"0 has no last step), got {lengths.tolist()}")
            steps = lengths - 1
        # lengths only place the reverse direction; the steps say what is read
        return self._forward_time_major(x, hx, lengths if self.bidirectional else None, False,
                                        last=steps)

    def _check_hx(self, hx, return_state: bool, where: str = "QRNN") -> None:
        if isinstance(hx, tuple) and not isinstance(hx, QRNNState):
            raise TypeError(f"{where}: hx is one tensor of initial cells (num_layers*"
                            "num_directions, B, hidden_size), or a QRNNState; not an (h_0, c_0) "
                            "tuple as in nn.LSTM (pass c_0 alone)")
        if (return_state or isinstance(hx, QRNNState)) and self.bidirectional:
            raise ValueError(f"{where}: streaming state (return_state=True or a QRNNState hx) "
                             "exists only for unidirectional QRNNs: a reverse direction needs the "
                             "whole sequence. Pass hx as a tensor of initial cells instead.")

    def _check_input(self, x: Tensor, batch_first: bool, where: str = "QRNN") -> None:
        layout = "(B, T, input_size" if batch_first else "(T, B, input_size"
        if x.dim() != 3 or x.shape[-1] != self.input_size:
            others = (f" (or (T, {self.input_size}) unbatched, or a PackedSequence)"
                      if where == "QRNN" else "")
            raise ValueError(f"{where}: input must have shape {layout}={self.input_size})"
                             f"{others}, got {tuple(x.shape)}")
        if x.shape[1 if batch_first else 0] < 1:
            raise ValueError(f"{where}: input must have at least one time step, got shape "
                             f"{tuple(x.shape)}")
        param_dtype = self.layers[0].weight.dtype
        if x.dtype != param_dtype:
            raise TypeError(f"{where}: input dtype {x.dtype} differs from the parameters' {param_dtype}; "
                            f"convert one of them (module.to(dtype) or input.to(dtype))")

    def _check_lengths(self, lengths, T: int, B: int, device) -> Tensor:
        lengths = torch.as_tensor(lengths)
        if lengths.shape != (B,) or lengths.dtype.is_floating_point or lengths.dtype == torch.bool \
                or lengths.is_complex():
            raise ValueError(f"QRNN: lengths must be an integer tensor of shape (B={B},), got "
                             f"shape {tuple(lengths.shape)} dtype {lengths.dtype}")
        # A value check needs the values on the host: skipped while compiling or exporting,
        # where it would break the graph (out-of-range lengths then act like min(max(l, 0), T)).
        if not torch.compiler.is_compiling() and lengths.numel() and \
                (int(lengths.min()) < 0 or int(lengths.max()) > T):
            raise ValueError(f"QRNN: lengths must be in [0, T={T}], got {lengths.tolist()}")
        return lengths.to(device=device, dtype=torch.long)

    def _initial_cells(self, hx, B: int) -> tuple[Tensor | None, tuple[Tensor, ...] | None]:
        """hx -> (cells (L*D, B, H) or None, contexts per layer or None)."""
        LD, H = self.num_layers * self.num_directions, self.hidden_size
        if hx is None:
            return None, None
        cells, contexts = (hx.cells, hx.inputs) if isinstance(hx, QRNNState) else (hx, None)
        if not isinstance(cells, Tensor) or cells.shape != (LD, B, H):
            shape = tuple(cells.shape) if isinstance(cells, Tensor) else type(cells).__name__
            raise ValueError(f"QRNN: hx cells must have shape (num_layers*num_directions={LD}, "
                             f"B={B}, hidden_size={H}), got {shape}")
        if contexts is not None:
            expected = [(self.window - 1, B, layer.input_size) for layer in self.layers]
            got = [tuple(c.shape) for c in contexts]
            if got != expected:
                raise ValueError(f"QRNN: QRNNState.inputs must be {len(expected)} tensors of shapes "
                                 f"(window-1, B, I_l) = {expected}, got {got}")
        return cells, tuple(contexts) if contexts is not None else None

    def _fills_one_buffer(self, x: Tensor) -> bool:
        """Whether a dense stack writes every layer into one output buffer: only in grad mode
        off (`torch.no_grad`, `torch.inference_mode`), where nothing can be recorded for a
        backward (whatever needs a gradient: parameters, hx, hooks), and not while compiling
        or under autocast (where a concatenation promotes dtypes as autocast says, and writing
        into the buffer would round to x's dtype instead)."""
        if not self.dense or torch.is_grad_enabled() or torch.compiler.is_compiling():
            return False
        try:
            return not torch.is_autocast_enabled(x.device.type)
        except RuntimeError:  # a device type autocast does not know (meta)
            return True

    def _forward_time_major(self, x: Tensor, hx, lengths, return_state: bool,
                            last: Tensor | None = None):
        """x: (T, B, I) -> output (T, B, output_size), h_n (L*D, B, H) or QRNNState; with `last`
        ((B,) steps, `last_output`), the output at those steps alone, (B, output_size)."""
        self._check_input(x, batch_first=False)
        T, B = x.shape[0], x.shape[1]
        cells, contexts = self._initial_cells(hx, B)
        mask = reverse_index = None
        if lengths is not None:
            lengths = self._check_lengths(lengths, T, B, x.device)
            steps = torch.arange(T, device=x.device).unsqueeze(1)  # (T, 1)
            mask = steps < lengths.unsqueeze(0)  # (T, B) True at real steps
            if self.bidirectional:
                # step t of sequence b reversed within its length; padding stays in place.
                # An involution: the same index maps the reversed outputs back.
                reverse_index = torch.where(mask, lengths.unsqueeze(0) - 1 - steps, steps)  # (T, B)
        D = self.num_directions
        finals: list[Tensor] = []  # (B, H) each
        tails: list[Tensor] = []  # (k-1, B, I_l) each
        # Dense layers without autograd (inference) fill one (T, B, output_size) buffer: layer l
        # reads its first I_l columns in place (`causal_conv` takes evenly spaced rows) and
        # writes its output next to them, where a concatenation per layer would copy the whole
        # growing input again (0.1 ms of a 10 ms review). Under autograd each layer saves its
        # input for the backward, and a later write into the buffer would invalidate it.
        dense = x.new_empty(T, B, self.output_size) if self._fills_one_buffer(x) else None
        if dense is not None:
            x = dense.narrow(2, 0, x.shape[2]).copy_(x)
        for l, layer in enumerate(self.layers):
            context = None if contexts is None else contexts[l]
            if return_state:
                tails.append(_last_inputs(x, context, lengths, self.window))
            c0 = None if cells is None else cells[l * D]
            if last is not None and l == self.num_layers - 1:
                return self._last_layer_output(x, last, cells, context, reverse_index)
            h, c = layer(x, c0, context=context)
            finals.append(_final_cell(c, c0, lengths))
            if self.layers_reverse is not None:
                # The reverse direction is the forward recurrence on each sequence reversed
                # within its length: it starts at the real last step, ends at step 0.
                c0_rev = None if cells is None else cells[l * D + 1]
                h_rev, c_rev = self.layers_reverse[l](_time_gather(x, reverse_index), c0_rev)
                finals.append(_final_cell(c_rev, c0_rev, lengths))
                h = torch.cat([h, _time_gather(h_rev, reverse_index)], dim=-1)  # (T, B, 2H)
            if self.training and l < self.num_layers - 1 and self.dropout > 0:
                h = dropout(h, self.dropout)
            if dense is not None:
                dense.narrow(2, x.shape[2], h.shape[2]).copy_(h)
                x = dense.narrow(2, 0, x.shape[2] + h.shape[2])
            else:
                x = torch.cat([x, h], dim=-1) if self.dense else h
        h_n = torch.stack(finals)  # (L*D, B, H)
        if mask is not None:
            # Padded steps never reach real ones (causality), so only the result is cleaned:
            # zero at padded steps, dense included, as pad_packed_sequence gives.
            x = x.masked_fill(~mask.unsqueeze(-1), 0)
        return x, (QRNNState(h_n, tuple(tails)) if return_state else h_n)

    def _last_layer_output(self, x: Tensor, steps: Tensor, cells: Tensor | None,
                           context: Tensor | None, reverse_index: Tensor | None) -> Tensor:
        """The last layer's output at `steps` (B,), after the input x (T, B, I_L) if dense."""
        l, D = self.num_layers - 1, self.num_directions
        c0 = None if cells is None else cells[l * D]
        h, _, x_last = self.layers[l]._last_output(x, steps, c0, context)
        parts = [x_last, h] if self.dense else [h]
        if self.layers_reverse is not None:
            # each reversed sequence ends at its step 0, which lands at its last real step
            c0_rev = None if cells is None else cells[l * D + 1]
            h_rev, _ = self.layers_reverse[l].last_output(_time_gather(x, reverse_index),
                                                          torch.zeros_like(steps), c0_rev)
            parts.append(h_rev)
        return torch.cat(parts, dim=-1)


def dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """`F.dropout(x, p, training)`: each element zeroed with probability p, the others scaled by
    1 / (1 - p). On CPU the mask comes from `torch.rand` (float32 uniforms, kept where >= p):
    there `bernoulli_`, which F.dropout draws with, took 2.4x as long forward + backward
    (25 against 10.5 ms for (400, 24, 256) float32; pytorch/pytorch#138199). Elsewhere, and for
    p = 1, F.dropout."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or not x.is_floating_point() or p == 1.0:
        return F.dropout(x, p, training=True)
    keep = torch.rand(x.shape, dtype=torch.float32, device=x.device) >= p
    return x * keep.to(x.dtype).mul_(1.0 / (1.0 - p))


def _time_gather(seq: Tensor, index: Tensor | None) -> Tensor:
    """seq: (T, B, F), index: (T, B) or None -> (T, B, F) with out[t, b] = seq[index[t, b], b];
    None reverses time (every sequence fills all T steps)."""
    if index is None:
        return seq.flip(0)
    return seq.gather(0, index.unsqueeze(-1).expand(-1, -1, seq.shape[-1]))


def _final_cell(c: Tensor, c0: Tensor | None, lengths: Tensor | None) -> Tensor:
    """c: (T, B, H) cells, c0: (B, H) or None, lengths: (B,) or None -> (B, H), the cell after
    each sequence's last real step (c0, or zeros, for a sequence of length 0)."""
    if lengths is None:
        return c[-1]
    last = c.gather(0, (lengths - 1).clamp(min=0).view(1, -1, 1).expand(1, -1, c.shape[-1]))[0]
    start = torch.zeros_like(last) if c0 is None else c0.to(last.dtype)
    return torch.where((lengths > 0).unsqueeze(-1), last, start)


def _last_inputs(x: Tensor, context: Tensor | None, lengths: Tensor | None, window: int) -> Tensor:
    """The convolution context a next piece needs: each sequence's last window-1 real inputs.

    x: (T, B, I); context: (k-1, B, I) inputs before x[0] or None (zeros); lengths: (B,) or None.
    Returns (k-1, B, I): rows lengths[b]-(k-1) .. lengths[b]-1 of [context; x] for sequence b.
    """
    T, B, I = x.shape
    if window == 1:
        return x.new_zeros(0, B, I)
    if context is None:
        context = x.new_zeros(window - 1, B, I)
    extended = torch.cat([context.to(x.dtype), x])  # (k-1+T, B, I)
    if lengths is None:
        return extended[T:]
    rows = lengths.unsqueeze(0) + torch.arange(window - 1, device=x.device).unsqueeze(1)  # (k-1, B)
    return extended.gather(0, rows.unsqueeze(-1).expand(-1, -1, I))


def _steps_of(seq: Tensor, steps: Tensor) -> Tensor:
    """seq: (T, B, F), steps: (B,) long on seq's device, in [0, T) -> (B, F), seq[steps[b], b]."""
    return seq.gather(0, steps.view(1, -1, 1).expand(1, -1, seq.shape[-1])).squeeze(0)


def last_real_step(seq: Tensor, lengths: Tensor) -> Tensor:
    """seq: (T, B, F), lengths: (B,) in [1, T] -> (B, F), seq[lengths[b] - 1, b] for each b."""
    return _steps_of(seq, lengths.to(device=seq.device, dtype=torch.long) - 1)
