"""`qrnn.QRNN` as a drop-in for `nn.LSTM`: shapes, lengths, streaming, zoneout, dtypes, export.

Property tests (hypothesis) check the invariants the layer promises -- causality, padding
invariance, pieces = whole, packed = padded, bidirectional = two forward layers -- in float64,
on small random configurations; plain tests check shapes, errors and modes.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from qrnn.modules import QRNN, QRNNLayer, QRNNState
from qrnn.ops import GATES, qrnn_pool_ref

PROPERTY = settings(deadline=None, max_examples=12, derandomize=True)
TIGHT = {"atol": 1e-10, "rtol": 1e-10}  # float64, same maths in a different batch/order

configs = st.fixed_dictionaries({
    "num_layers": st.integers(1, 2),
    "window": st.integers(1, 3),
    "pooling": st.sampled_from(["f", "fo", "ifo"]),
    "dense": st.booleans(),
    "bias": st.booleans(),
    "zoneout": st.sampled_from([0.0, 0.3]),  # evaluation mode: deterministic expectation
})


def make(seed: int = 0, input_size: int = 3, hidden_size: int = 4, **kwargs) -> QRNN:
    torch.manual_seed(seed)
    return QRNN(input_size, hidden_size, dtype=torch.float64, **kwargs).eval()


def randn(*shape, dtype=torch.float64):
    return torch.randn(*shape, dtype=dtype)


# ----------------------------------------------------------------------------- properties


@PROPERTY
@given(cfg=configs, T=st.integers(2, 7), B=st.integers(1, 3), t=st.integers(0, 5), seed=st.integers(0, 99))
def test_causal_outputs_ignore_the_future(cfg, T, B, t, seed):
    t = min(t, T - 2)
    m = make(seed, **cfg)
    x = randn(T, B, 3)
    later = x.clone()
    later[t + 1:] = randn(T - t - 1, B, 3) * 10
    torch.testing.assert_close(m(later)[0][:t + 1], m(x)[0][:t + 1], **TIGHT)


@PROPERTY
@given(cfg=configs, bidirectional=st.booleans(), T=st.integers(1, 6),
       lengths=st.lists(st.integers(1, 6), min_size=1, max_size=4), seed=st.integers(0, 99))
def test_padding_invariance(cfg, bidirectional, T, lengths, seed):
    """Each sequence of a padded batch gives what it gives alone, whatever the padding holds,
    and no gradient reaches a padded step."""
    lengths = torch.tensor([min(n, T) for n in lengths])
    B = len(lengths)
    m = make(seed, bidirectional=bidirectional, **cfg)
    hx = randn(m.num_layers * m.num_directions, B, 4)
    x = randn(T, B, 3)
    for b in range(B):
        x[lengths[b]:, b] = 1e3 * randn(T - lengths[b], 3)  # garbage in the padding
    x.requires_grad_(True)
    out, h_n = m(x, hx, lengths=lengths)
    out.sum().backward()
    for b in range(B):
        n = int(lengths[b])
        alone = x.detach()[:n, b:b + 1].clone().requires_grad_(True)
        out_b, h_b = m(alone, hx[:, b:b + 1])
        out_b.sum().backward()
        torch.testing.assert_close(out[:n, b], out_b[:, 0], **TIGHT)
        torch.testing.assert_close(h_n[:, b], h_b[:, 0], **TIGHT)
        torch.testing.assert_close(x.grad[:n, b], alone.grad[:, 0], **TIGHT)
        assert torch.all(out[n:, b] == 0) and torch.all(x.grad[n:, b] == 0)


@PROPERTY
@given(cfg=configs, T=st.integers(1, 8), B=st.integers(1, 3), cuts=st.data(), seed=st.integers(0, 99))
def test_pieces_equal_the_whole(cfg, T, B, cuts, seed):
    """Feeding each sequence in pieces (a different cut per sequence, so pieces are ragged and
    some are empty) and passing the returned QRNNState on equals one pass over the whole."""
    m = make(seed, dropout=0.5, **cfg)  # eval(): dropout and zoneout deterministic
    x, hx = randn(T, B, 3), randn(cfg["num_layers"], B, 4)
    whole, state = m(x, hx, return_state=True)
    assert torch.equal(state.cells, m(x, hx)[1])

    cut = torch.tensor(cuts.draw(st.lists(st.integers(0, T), min_size=B, max_size=B)))
    first = x.clone()
    second = torch.zeros_like(x)
    for b in range(B):
        second[:T - cut[b], b] = x[cut[b]:, b]
    out1, s1 = m(first, hx, lengths=cut, return_state=True)
    out2, s2 = m(second, s1, lengths=T - cut, return_state=True)
    torch.testing.assert_close(s2.cells, state.cells, **TIGHT)
    for a, b in zip(s2.inputs, state.inputs):
        torch.testing.assert_close(a, b, **TIGHT)
    for b in range(B):
        n = int(cut[b])
        torch.testing.assert_close(torch.cat([out1[:n, b], out2[:T - n, b]]), whole[:, b], **TIGHT)


@PROPERTY
@given(cfg=configs, bidirectional=st.booleans(), batch_first=st.booleans(),
       lengths=st.lists(st.integers(1, 6), min_size=1, max_size=4), seed=st.integers(0, 99))
def test_packed_equals_padded(cfg, bidirectional, batch_first, lengths, seed):
    m = make(seed, bidirectional=bidirectional, batch_first=batch_first, **cfg)
    lengths = torch.tensor(lengths)
    T, B = int(lengths.max()), len(lengths)
    x = randn(B, T, 3) if batch_first else randn(T, B, 3)
    hx = randn(m.num_layers * m.num_directions, B, 4)
    padded_out, padded_h = m(x, hx, lengths=lengths)
    packed = pack_padded_sequence(x, lengths, batch_first=batch_first, enforce_sorted=False)
    packed_out, packed_h = m(packed, hx)
    assert torch.equal(packed_out.batch_sizes, packed.batch_sizes)
    assert torch.equal(packed_out.sorted_indices, packed.sorted_indices)
    unpacked, unpacked_lengths = pad_packed_sequence(packed_out, batch_first=batch_first)
    assert torch.equal(unpacked_lengths, lengths)
    torch.testing.assert_close(unpacked, padded_out, **TIGHT)
    torch.testing.assert_close(packed_h, padded_h, **TIGHT)


@PROPERTY
@given(cfg=configs, T=st.integers(1, 6), lengths=st.lists(st.integers(1, 6), min_size=1, max_size=3),
       seed=st.integers(0, 99))
def test_bidirectional_is_forward_plus_forward_on_reversed(cfg, T, lengths, seed):
    """Layer 0 of a bidirectional QRNN = its forward layer on x, and its reverse layer run as a
    forward layer on each sequence reversed within its own length (so it starts at the real
    last step), with outputs flipped back."""
    cfg = {**cfg, "num_layers": 1, "dense": False}
    m = make(seed, bidirectional=True, **cfg)
    fwd, rev = make(**cfg), make(**cfg)
    fwd.layers[0].load_state_dict(m.layers[0].state_dict())
    rev.layers[0].load_state_dict(m.layers_reverse[0].state_dict())
    lengths = torch.tensor([min(n, T) for n in lengths])
    B = len(lengths)
    x, hx = randn(T, B, 3), randn(2, B, 4)
    out, h_n = m(x, hx, lengths=lengths)
    for b in range(B):
        n = int(lengths[b])
        seq = x[:n, b:b + 1]
        out_f, h_f = fwd(seq, hx[0:1, b:b + 1])
        out_r, h_r = rev(seq.flip(0), hx[1:2, b:b + 1])
        torch.testing.assert_close(out[:n, b], torch.cat([out_f, out_r.flip(0)], -1)[:, 0], **TIGHT)
        torch.testing.assert_close(h_n[:, b], torch.cat([h_f, h_r])[:, 0], **TIGHT)


@settings(PROPERTY, max_examples=40)
@given(cfg=configs, bidirectional=st.booleans(), batch_first=st.booleans(),
       state=st.sampled_from([None, "cells", "QRNNState"]), with_lengths=st.booleans(),
       lengths=st.lists(st.integers(1, 6), min_size=1, max_size=4), seed=st.integers(0, 99))
def test_last_output_is_forward_read_at_the_last_real_step(cfg, bidirectional, batch_first,
                                                           state, with_lengths, lengths, seed):
    """`last_output` (the last layer's o gate at one step only) gives the output of `forward` at
    each last real step, and the same gradients to the input, hx and every parameter."""
    if state == "QRNNState":
        bidirectional = False  # streaming state is unidirectional
    m = make(seed, bidirectional=bidirectional, batch_first=batch_first, **cfg)
    lengths = torch.tensor(lengths)
    T, B = int(lengths.max()), len(lengths)
    x = (randn(B, T, 3) if batch_first else randn(T, B, 3)).requires_grad_(True)
    LD = m.num_layers * m.num_directions
    cells = randn(LD, B, 4).requires_grad_(True)
    hx = {None: None, "cells": cells,
          "QRNNState": QRNNState(cells, tuple(randn(m.window - 1, B, layer.input_size)
                                              for layer in m.layers))}[state]
    lens = lengths if with_lengths else None
    out, _ = m(x, hx, lengths=lens)
    out = out.transpose(0, 1) if batch_first else out
    steps = (lengths - 1) if with_lengths else torch.full((B,), T - 1)
    want = out[steps, torch.arange(B)]
    got = m.last_output(x, lens, hx)
    torch.testing.assert_close(got, want, **TIGHT)
    upstream = randn(*want.shape)
    inputs = [x, *m.parameters()] + ([cells] if state else [])
    want_grads = torch.autograd.grad(want, inputs, upstream, allow_unused=True)
    got_grads = torch.autograd.grad(got, inputs, upstream, allow_unused=True)
    for w, g in zip(want_grads, got_grads):
        if w is None or g is None:  # a parameter the read step does not reach
            assert (w is None or not w.any()) and (g is None or not g.any())
        else:
            torch.testing.assert_close(g, w, **TIGHT)


@pytest.mark.parametrize("window", [1, 2, 3])
def test_last_output_computes_the_output_gate_at_the_read_steps_only(window):
    """The last layer's o weights get gradient only from the rows the read steps see: with
    every sequence read at step 0 and no state, tap j > 0 sees zeros, so its o rows get none."""
    m = make(input_size=3, hidden_size=4, num_layers=2, window=window)
    x = randn(5, 2, 3)
    m.last_output(x, torch.tensor([1, 1])).sum().backward()
    taps = m.layers[-1].weight.grad.view(window, 3, 4, 4)  # (tap, gate z/f/o, H, I=H)
    assert taps[0, 2].abs().sum() > 0  # o of tap 0 at step 0
    assert not taps[1:, 2].any()
    assert taps[:, :2].abs().sum() > 0


def test_last_output_bad_arguments_say_what_is_wrong():
    m = make(num_layers=2)
    x = randn(4, 2, 3)
    with pytest.raises(ValueError, match=r"lengths must be in \[1, T=4\]"):
        m.last_output(x, torch.tensor([0, 4]))
    with pytest.raises(ValueError, match=r"lengths must be in \[0, T=4\]"):
        m.last_output(x, torch.tensor([5, 4]))
    with pytest.raises(TypeError, match="must be a Tensor"):
        m.last_output(pack_padded_sequence(x, torch.tensor([4, 2])))
    with pytest.raises(ValueError, match=r"QRNN.last_output: input must have shape "
                                         r"\(T, B, input_size=3\), got \(4, 3\)"):
        m.last_output(x[:, 0])
    with pytest.raises(TypeError, match=r"not an \(h_0, c_0\) tuple"):
        m.last_output(x, None, (randn(2, 2, 4), randn(2, 2, 4)))
    bidirectional = make(bidirectional=True)
    state = QRNNState(randn(2, 2, 4), (randn(1, 2, 3),))
    with pytest.raises(ValueError, match="only for unidirectional"):
        bidirectional.last_output(x, None, state)
    layer = m.layers[0]
    with pytest.raises(ValueError, match=r"steps must be in \[0, T=4\)"):
        layer.last_output(x, torch.tensor([0, 4]))
    with pytest.raises(ValueError, match=r"integer tensor of shape \(B=2,\)"):
        layer.last_output(x, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"integer tensor of shape \(B=2,\)"):
        layer.last_output(x, [0, 1])


# ----------------------------------------------------------------------------- shapes and API


def test_shapes_like_lstm_for_every_argument_combination():
    I, H, T, B = 3, 4, 5, 2
    grid = itertools.product([1, 2], [False, True], [False, True], [False, True], GATES, [1, 3])
    for i, (L, bidir, batch_first, dense, pooling, window) in enumerate(grid):
        bias = i % 2 == 0
        D = 2 if bidir else 1
        kw = dict(num_layers=L, bias=bias, batch_first=batch_first, bidirectional=bidir)
        m = QRNN(I, H, **kw, window=window, pooling=pooling, dense=dense, zoneout=0.1, dropout=0.1)
        x = torch.randn(B, T, I) if batch_first else torch.randn(T, B, I)
        out, h_n = m(x)
        lstm_out, (lstm_h, _) = nn.LSTM(I, H, **kw)(x)
        features = I + L * D * H if dense else D * H
        assert m.output_size == features
        assert out.shape == lstm_out.shape[:-1] + (features,)
        assert h_n.shape == lstm_h.shape == (L * D, B, H)
        for l, layer in enumerate(m.layers):
            width = (I + l * D * H) if dense else (I if l == 0 else D * H)
            assert layer.weight.shape == (window * GATES[pooling] * H, width)
            assert (layer.bias is not None) == bias


def test_parameter_names_of_a_unidirectional_checkpoint():
    m = QRNN(8, 6, num_layers=4, dropout=0.3, dense=True, window=2)
    names = {f"layers.{l}.{p}" for l in range(4) for p in ("weight", "bias")}
    assert set(m.state_dict()) == names
    assert [tuple(m.state_dict()[f"layers.{l}.weight"].shape) for l in range(4)] == \
        [(36, 8), (36, 14), (36, 20), (36, 26)]
    bi = QRNN(8, 6, bidirectional=True)
    assert set(bi.state_dict()) == {"layers.0.weight", "layers.0.bias",
                                    "layers_reverse.0.weight", "layers_reverse.0.bias"}


def test_dense_output_is_input_then_every_layer():
    m = make(num_layers=2, dense=True)
    x = randn(5, 2, 3)
    out, _ = m(x)
    first = make(num_layers=1)
    first.layers[0].load_state_dict(m.layers[0].state_dict())
    assert torch.equal(out[..., :3], x)
    torch.testing.assert_close(out[..., 3:7], first(x)[0], **TIGHT)


def test_batch_one_length_one_and_unbatched():
    m = make(num_layers=2, bidirectional=True, window=3)
    x = randn(4, 1, 3)
    out, h_n = m(x)
    out_u, h_u = m(x[:, 0], torch.zeros(4, 4, dtype=torch.float64))
    assert out_u.shape == (4, 8) and h_u.shape == (4, 4)
    torch.testing.assert_close(out_u, out[:, 0], **TIGHT)
    torch.testing.assert_close(h_u, h_n[:, 0], **TIGHT)
    out1, h1 = m(x[:1])
    assert out1.shape == (1, 1, 8) and h1.shape == (4, 1, 4)
    torch.testing.assert_close(m(x[:1], lengths=torch.tensor([1]))[0], out1, **TIGHT)


def test_h_n_is_the_cell_and_continues_the_recurrence():
    """h_n is c (the state the recurrence carries), not the last output h = o*c. With window 1
    the cell is the whole state, so passing h_n back as hx continues a sequence exactly."""
    m = make(num_layers=2, window=1, pooling="fo")
    x = randn(6, 2, 3)
    out, h_n = m(x)
    _, c = m.layers[1](m.layers[0](x)[0])
    torch.testing.assert_close(h_n[1], c[-1], **TIGHT)
    assert not torch.allclose(h_n[1], out[-1])
    out_a, h_a = m(x[:4])
    out_b, h_b = m(x[4:], h_a)
    torch.testing.assert_close(torch.cat([out_a, out_b]), out, **TIGHT)
    torch.testing.assert_close(h_b, h_n, **TIGHT)


def test_plain_hx_starts_a_fresh_convolution_but_state_continues_it():
    m = make(window=3)
    x = randn(6, 2, 3)
    whole, state = m(x, return_state=True)
    _, s1 = m(x[:3], return_state=True)
    torch.testing.assert_close(m(x[3:], s1)[0], whole[3:], **TIGHT)
    assert not torch.allclose(m(x[3:], s1.cells)[0], whole[3:])  # drops the conv context
    assert s1.inputs[0].shape == (2, 2, 3)
    torch.testing.assert_close(s1.inputs[0], x[1:3], **TIGHT)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 3e-2),
                                       (torch.float16, 3e-3)])
def test_dtypes_match_float64(dtype, tol):
    torch.manual_seed(0)
    ref = make(num_layers=2, bidirectional=True, dense=True, pooling="ifo", zoneout=0.2)
    m = QRNN(3, 4, num_layers=2, bidirectional=True, dense=True, pooling="ifo", zoneout=0.2,
             dtype=dtype).eval()
    m.load_state_dict(ref.state_dict())
    x, lengths = randn(5, 3, 3), torch.tensor([5, 2, 1])
    out, h_n = m(x.to(dtype), lengths=lengths)
    assert out.dtype == h_n.dtype == dtype
    ref_out, ref_h = ref(x, lengths=lengths)
    torch.testing.assert_close(out.double(), ref_out, atol=tol, rtol=tol)
    torch.testing.assert_close(h_n.double(), ref_h, atol=tol, rtol=tol)
    out.float().square().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters())


def test_non_contiguous_input_and_hx():
    m = make(num_layers=2, window=2, batch_first=True)
    base = randn(3, 12, 10)
    x = base[:, ::2, 1:4]  # (B, T, I) = (3, 6, 3), strided in two dimensions
    hx = randn(2, 4, 3).transpose(1, 2)  # (L, B, H) = (2, 3, 4), transposed storage
    assert not x.is_contiguous() and not hx.is_contiguous()
    xs, xc = x.clone().requires_grad_(True), x.contiguous().requires_grad_(True)
    out_s, h_s = m(xs, hx, lengths=torch.tensor([6, 2, 4]))
    out_c, h_c = m(xc, hx.contiguous(), lengths=torch.tensor([6, 2, 4]))
    torch.testing.assert_close(out_s, out_c, **TIGHT)
    torch.testing.assert_close(h_s, h_c, **TIGHT)
    g = randn(*out_s.shape)
    (out_s * g).sum().backward()
    (out_c * g).sum().backward()
    torch.testing.assert_close(xs.grad, xc.grad, **TIGHT)
    m(x.transpose(0, 1).contiguous().transpose(0, 1))  # a transposed-storage input runs too


def test_lengths_as_a_list_and_on_another_dtype():
    m = make()
    x = randn(4, 2, 3)
    ref = m(x, lengths=torch.tensor([4, 2]))
    for lengths in ([4, 2], torch.tensor([4, 2], dtype=torch.int32)):
        out, h_n = m(x, lengths=lengths)
        torch.testing.assert_close(out, ref[0], **TIGHT)
        torch.testing.assert_close(h_n, ref[1], **TIGHT)


def test_bad_shapes_name_the_expected_shape():
    m = QRNN(3, 4, num_layers=2)
    x = torch.randn(5, 2, 3)
    with pytest.raises(ValueError, match=r"\(T, B, input_size=3\)"):
        m(torch.randn(5, 2, 4))
    with pytest.raises(ValueError, match=r"\(B, T, input_size=3\)"):
        QRNN(3, 4, batch_first=True)(torch.randn(2, 5, 4))
    with pytest.raises(ValueError, match=r"\(T, B, input_size=3\)"):
        m(torch.randn(1, 5, 2, 3))
    with pytest.raises(ValueError, match=r"num_layers\*num_directions=2, B=2, hidden_size=4"):
        m(x, torch.zeros(1, 2, 4))
    with pytest.raises(ValueError, match=r"lengths must be an integer tensor of shape \(B=2,\)"):
        m(x, lengths=torch.tensor([5, 2, 1]))
    with pytest.raises(ValueError, match=r"lengths must be an integer tensor"):
        m(x, lengths=torch.tensor([5.0, 2.0]))
    with pytest.raises(ValueError, match=r"lengths must be in \[0, T=5\]"):
        m(x, lengths=torch.tensor([6, 2]))
    with pytest.raises(TypeError, match=r"not an \(h_0, c_0\) tuple"):
        m(x, (torch.zeros(2, 2, 4), torch.zeros(2, 2, 4)))
    with pytest.raises(TypeError, match="dtype"):
        m(x.double())
    bad_state = QRNNState(torch.zeros(2, 2, 4), (torch.zeros(1, 2, 3), torch.zeros(1, 2, 3)))
    with pytest.raises(ValueError, match=r"\(window-1, B, I_l\) = \[\(1, 2, 3\), \(1, 2, 4\)\]"):
        m(x, bad_state)
    with pytest.raises(ValueError, match="only for unidirectional"):
        QRNN(3, 4, bidirectional=True)(x, return_state=True)
    with pytest.raises(ValueError, match="carries its own lengths"):
        m(pack_padded_sequence(x, [5, 3]), lengths=[5, 3])
    with pytest.raises(ValueError, match=r"x must have shape \(T, B, input_size=3\)"):
        QRNNLayer(3, 4)(torch.randn(5, 3))
    with pytest.raises(ValueError, match=r"c0 must have shape \(B=2, hidden_size=4\)"):
        QRNNLayer(3, 4)(x, torch.zeros(3, 4))
    for bad in ({"pooling": "ofi"}, {"window": 0}, {"zoneout": 1.0}, {"dropout": -0.1}):
        with pytest.raises(ValueError):
            QRNN(3, 4, **bad)


# ----------------------------------------------------------------------------- randomness


def test_zoneout_in_eval_is_its_expectation():
    """Eval: c_t = (p + (1-p) f) c_{t-1} + (1-p) (1-f) z, checked against the reference pooling,
    and against the mean of many training-mode runs (zoneout's randomness averaged out)."""
    p = 0.4
    torch.manual_seed(0)
    layer = QRNNLayer(3, 5, window=2, pooling="fo", zoneout=p, dtype=torch.float64).eval()
    x, c0 = randn(4, 1, 3), randn(1, 5)
    h, c = layer(x, c0)
    assert torch.equal(layer(x, c0)[0], h)  # deterministic

    z, f, o = layer.gates(x).chunk(3, dim=-1)
    f_expected = p + (1 - p) * torch.sigmoid(f)
    # qrnn_pool_ref takes pre-activations: feed logit(f') for f, the rest unchanged
    ref_h, ref_c = qrnn_pool_ref(torch.cat([z, torch.logit(f_expected), o], -1), c0, "fo")
    torch.testing.assert_close(h, ref_h, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(c, ref_c, atol=1e-12, rtol=1e-12)

    n = 20000
    layer.train()
    mean_h = layer(x.expand(-1, n, -1), c0.expand(n, -1))[0].mean(dim=1, keepdim=True)
    torch.testing.assert_close(mean_h, h, atol=0.02, rtol=0)  # ~5 standard errors


@pytest.mark.parametrize("pooling", ["f", "fo", "ifo"])
def test_zoneout_in_training_holds_random_cells(pooling):
    """Training: each cell unit at each step either keeps c_{t-1} exactly or takes the plain
    update, the first with probability p."""
    p = 0.3
    torch.manual_seed(0)
    layer = QRNNLayer(3, 50, window=1, pooling=pooling, zoneout=p, dtype=torch.float64).train()
    x = randn(20, 40, 3)
    _, c = layer(x)
    _, c_again = layer(x)
    assert not torch.equal(c, c_again)
    plain = QRNNLayer(3, 50, window=1, pooling=pooling, dtype=torch.float64)
    plain.load_state_dict(layer.state_dict())
    g = plain.gates(x)
    c_prev = torch.cat([torch.zeros_like(c[:1]), c[:-1]])
    # the plain update from the zoned-out previous cell, one step at a time
    updated = torch.stack([qrnn_pool_ref(g[t:t + 1], c_prev[t], pooling)[1][0] for t in range(20)])
    held = torch.isclose(c, c_prev, atol=1e-12, rtol=0)  # kernels may round f=1 holds by an ulp
    assert torch.all(held | torch.isclose(c, updated, atol=1e-12, rtol=1e-12))
    assert abs(held.double().mean().item() - p) < 0.03


def test_eval_turns_every_source_of_randomness_off():
    torch.manual_seed(0)
    m = QRNN(3, 4, num_layers=3, dropout=0.5, zoneout=0.3, dense=True, bidirectional=True)
    x = torch.randn(6, 2, 3)
    m.train()
    assert not torch.equal(m(x)[0], m(x)[0])
    m.eval()
    assert torch.equal(m(x)[0], m(x)[0])


def test_dropout_is_between_layers_only():
    """Like nn.LSTM: no dropout after the last layer, so one layer without zoneout is
    deterministic in training; with two layers, dense output shows the first layer dropped."""
    m = make(num_layers=1, dropout=0.5).train()
    x = randn(5, 3, 3)
    assert torch.equal(m(x)[0], m(x)[0])
    m2 = make(num_layers=2, dropout=0.5, dense=True).train()
    out = m2(x)[0]
    assert torch.equal(out[..., :3], x)  # the input itself is never dropped
    first = out[..., 3:7]
    assert (first == 0).any() and not torch.equal(first, m2.eval()(x)[0][..., 3:7])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("p", [0.1, 0.3, 0.7])
def test_dropout_keeps_one_minus_p_scaled_and_its_gradient_is_the_mask(dtype, p):
    """`qrnn.modules.dropout` (the mask from torch.rand on CPU): F.dropout's contract."""
    from qrnn.modules import dropout

    torch.manual_seed(0)
    x = (torch.rand(200, 50, 40, dtype=torch.float64) + 1).to(dtype).requires_grad_(True)
    y = dropout(x, p)
    assert y.dtype == dtype
    kept = y != 0
    n = kept.numel()
    # kept fraction within 5 standard deviations of 1 - p
    assert abs(kept.double().mean().item() - (1 - p)) < 5 * (p * (1 - p) / n) ** 0.5
    scale = torch.tensor(1 / (1 - p), dtype=dtype)
    torch.testing.assert_close(y[kept], (x * scale)[kept], rtol=0, atol=0)
    y.backward(torch.ones_like(y))
    torch.testing.assert_close(x.grad, kept.to(dtype) * scale, rtol=0, atol=0)
    assert dropout(x, p, training=False) is x and dropout(x, 0.0) is x
    torch.manual_seed(1)
    first = dropout(x, p)
    torch.manual_seed(1)
    assert torch.equal(dropout(x, p), first)  # the global generator, as F.dropout
    assert not dropout(x, 1.0).any()  # as F.dropout
    with pytest.raises(ValueError, match=r"must be in \[0, 1\], got 1.5"):
        dropout(x, 1.5)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("with_lengths", [False, True])
def test_dense_stack_without_autograd_has_the_values_of_autograd(bidirectional, training,
                                                                  with_lengths, monkeypatch):
    """Without autograd a dense stack fills one output buffer in place, each layer reading its
    input columns from it (no concatenation per layer); the values are the autograd path's,
    dropout and streaming state included. Not always bit for bit: MKL may round a product over
    rows read in place from the buffer differently in the last bits."""
    m = make(num_layers=3, dense=True, bidirectional=bidirectional, dropout=0.5,
             window=2, input_size=7, hidden_size=6).train(training)
    x, lengths = randn(6, 3, 7), (torch.tensor([6, 2, 4]) if with_lengths else None)
    state = not bidirectional  # streaming state: unidirectional only

    def run():
        torch.manual_seed(1)  # the same dropout and zoneout draws
        out, h_n = m(x, lengths=lengths, return_state=state)
        return [out, *(h_n if state else [h_n])]

    want = run()  # autograd: the parameters need gradients
    cats = []
    cat = torch.cat
    monkeypatch.setattr(torch, "cat", lambda *a, **k: (cats.append(1), cat(*a, **k))[1])
    with torch.no_grad():
        got = run()
    # the reverse direction's outputs are joined to the forward's (one per layer)
    assert len(cats) == (3 if bidirectional else 0) + (3 * state)  # + _last_inputs' context
    assert not got[0].requires_grad and want[0].requires_grad
    for g, w in zip(got, want):
        if isinstance(w, torch.Tensor):
            torch.testing.assert_close(g, w, **TIGHT)
        else:  # the state's inputs (one tensor per layer)
            for a, b in zip(g, w):
                torch.testing.assert_close(a, b, **TIGHT)
    cats.clear()
    with torch.enable_grad():  # grad mode on: concatenations, whatever needs a gradient
        run()
    assert len(cats) == (6 if bidirectional else 3) + (3 * state)


def test_dense_stack_backward_reaches_hx_hooks_and_state_of_a_frozen_stack():
    """Grad mode decides, not the parameters: a frozen dense stack still passes gradients to
    what needs them (hx, a trainable adapter hooked onto a layer, a state's inputs)."""
    x = randn(5, 2, 3)
    grads = []
    for frozen in (True, False):
        m = make(num_layers=2, dense=True).requires_grad_(not frozen)
        hx = torch.zeros(2, 2, 4, dtype=torch.float64, requires_grad=True)
        m(x, hx)[0].sum().backward()
        grads.append(hx.grad)
    torch.testing.assert_close(grads[0], grads[1], **TIGHT)
    m = make(num_layers=2, dense=True).requires_grad_(False)
    adapter = nn.Linear(4, 4, dtype=torch.float64)
    m.layers[0].register_forward_hook(lambda mod, args, out: (out[0] + adapter(out[0]), out[1]))
    m(x)[0].sum().backward()
    assert adapter.weight.grad is not None and adapter.weight.grad.abs().sum() > 0
    _, state = make(num_layers=2, dense=True)(x, return_state=True)
    inputs = tuple(t.detach().requires_grad_(True) for t in state.inputs)
    m(x, QRNNState(state.cells.detach(), inputs))[0].sum().backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in inputs)


def test_window_must_be_an_int_and_a_numpy_int_is_one():
    import numpy as np

    with pytest.raises(TypeError, match="window must be an int, got True"):
        QRNN(3, 4, window=True)
    with pytest.raises(TypeError, match="window must be an int, got 2.0"):
        QRNNLayer(3, 4, window=2.0)
    x = randn(5, 2, 3)
    torch.testing.assert_close(make(window=np.int64(2))(x)[0], make(window=2)(x)[0], **TIGHT)


def test_dense_stack_sees_a_pre_hook_changing_its_input_in_place_with_and_without_grad():
    m = make(num_layers=2, dense=True)
    m.layers[0].register_forward_pre_hook(lambda mod, args: (args[0].mul_(2), None)[1])
    outs, x0 = [], randn(4, 2, 3)
    for grad in (True, False):
        x = x0.clone()
        want_first = 2 * x
        with torch.set_grad_enabled(grad):
            out = m(x)[0]
        torch.testing.assert_close(out[..., :3], want_first, **TIGHT)
        outs.append(out.detach())
    torch.testing.assert_close(outs[0], outs[1], **TIGHT)


# ----------------------------------------------------------------------------- gradients, compile, export


def test_gradcheck_through_lengths_zoneout_and_both_directions():
    m = make(input_size=2, hidden_size=2, num_layers=2, bidirectional=True, dense=True,
             zoneout=0.3, window=2, pooling="ifo")
    x = randn(3, 2, 2).requires_grad_(True)
    hx = randn(4, 2, 2).requires_grad_(True)
    lengths = torch.tensor([3, 2])
    assert torch.autograd.gradcheck(lambda x, hx: m(x, hx, lengths=lengths), (x, hx))


def test_torch_compile_matches_eager():
    """Backend "aot_eager" (traces forward and backward with AOTAutograd; inductor would add
    minutes of C++ compilation on CPU for no extra coverage of this module's Python)."""
    torch.manual_seed(0)
    m = QRNN(3, 4, num_layers=2, dense=True, window=2, zoneout=0.2).eval()
    compiled = torch.compile(m, backend="aot_eager")
    x, lengths = torch.randn(5, 3, 3), torch.tensor([5, 3, 1])
    for lens in (lengths, torch.tensor([2, 5, 4])):  # lengths are data, not baked in
        xe, xc = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        out_e, h_e = m(xe, lengths=lens)
        out_c, h_c = compiled(xc, lengths=lens)
        torch.testing.assert_close(out_c, out_e)
        torch.testing.assert_close(h_c, h_e)
        (out_e.sum() + h_e.sum()).backward()
        (out_c.sum() + h_c.sum()).backward()
        torch.testing.assert_close(xc.grad, xe.grad)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_export_with_lengths_and_sizes_chosen_at_run_time(bidirectional):
    """torch.export: T, B and the lengths' values are all dynamic (the layer has no
    data-dependent shapes; the pooling is the registered op `qrnn::conv_pool`)."""
    torch.manual_seed(0)
    m = QRNN(3, 4, num_layers=2, dense=True, window=3, zoneout=0.2,
             bidirectional=bidirectional).eval()
    T, B = torch.export.Dim("T", min=1), torch.export.Dim("B", min=1)
    program = torch.export.export(m, (torch.randn(6, 3, 3),), {"lengths": torch.tensor([6, 3, 1])},
                                  dynamic_shapes={"input": {0: T, 1: B}, "lengths": {0: B}})
    # the registered ops, not their references (which only torch.func transforms get)
    targets = {str(node.target) for node in program.graph.nodes}
    assert {"qrnn.causal_conv.default", "qrnn.conv_pool.default"} <= targets
    for steps, batch in [(1, 1), (9, 4), (2, 5)]:
        x, lengths = torch.randn(steps, batch, 3), torch.randint(0, steps + 1, (batch,))
        for got, want in zip(program.module()(x, lengths=lengths), m(x, lengths=lengths)):
            torch.testing.assert_close(got, want)


@pytest.mark.parametrize("bias", [False, True])
def test_last_output_under_autocast_has_the_dtype_and_values_of_forward(bias):
    """The output gate's pre-activation is computed in float32 and h rounded once to the
    products' dtype, as the pooling kernels do (a float32 bias once promoted it to float32)."""
    torch.manual_seed(0)
    m = QRNN(8, 16, bias=bias)
    x = torch.randn(7, 5, 8)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = m(x)
        last = m.last_output(x)
    assert last.dtype == out.dtype == torch.bfloat16
    torch.testing.assert_close(last, out[-1], atol=4e-3, rtol=1e-2)


def test_last_output_compiles_and_exports_with_lengths_chosen_at_run_time():
    """`last_output` under torch.compile (forward and backward) and torch.export, lengths as
    data: the read steps are gathered, no shape depends on them."""
    torch.manual_seed(0)
    m = QRNN(3, 4, num_layers=2, dense=True, window=2).eval()

    class Last(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = m

        def forward(self, x, lengths):
            return self.rnn.last_output(x, lengths)

    compiled = torch.compile(Last(), backend="aot_eager")
    x = torch.randn(5, 3, 3)
    for lens in (torch.tensor([5, 3, 1]), torch.tensor([2, 5, 4])):
        xe, xc = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        want, got = m.last_output(xe, lens), compiled(xc, lens)
        torch.testing.assert_close(got, want)
        want.square().sum().backward()
        got.square().sum().backward()
        torch.testing.assert_close(xc.grad, xe.grad)
    T, B = torch.export.Dim("T", min=2), torch.export.Dim("B", min=1)
    program = torch.export.export(Last(), (x, torch.tensor([5, 3, 1])),
                                  dynamic_shapes={"x": {0: T, 1: B}, "lengths": {0: B}})
    for steps, batch in [(2, 1), (9, 4)]:
        x, lengths = torch.randn(steps, batch, 3), torch.randint(1, steps + 1, (batch,))
        torch.testing.assert_close(program.module()(x, lengths), m.last_output(x, lengths))


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")  # torch.func's own
def test_torch_func_grad_per_sample_grads_and_jvp_match_autograd():
    """torch.func works as it does for nn.LSTM: under a transform the ops compute their
    references (the registered ops' autograd cannot run there, a PyTorch limitation)."""
    from torch.func import functional_call, grad, jvp, vmap

    m = make(num_layers=2, dense=True, window=2)
    x, lengths = randn(5, 2, 3), torch.tensor([5, 3])
    params = {k: v.detach() for k, v in m.named_parameters()}

    def loss(p, x):
        return functional_call(m, p, (x,), {"lengths": lengths})[0].square().sum()

    got = grad(loss)(params, x)
    loss(dict(m.named_parameters()), x).backward()
    for k, v in m.named_parameters():
        torch.testing.assert_close(got[k], v.grad, **TIGHT)

    def one(p, seq):  # (T, I): one sequence of the batch
        return functional_call(m, p, (seq.unsqueeze(1),))[0].square().sum()

    per_sample = vmap(grad(one), in_dims=(None, 1))(params, x)
    for b in range(2):
        m.zero_grad()
        one(dict(m.named_parameters()), x[:, b]).backward()
        for k, v in m.named_parameters():
            torch.testing.assert_close(per_sample[k][b], v.grad, **TIGHT)
    tangent = randn(5, 2, 3)
    _, got_tangent = jvp(lambda x: m(x)[0], (x,), (tangent,))
    eps = 1e-6
    want = (m(x + eps * tangent)[0] - m(x - eps * tangent)[0]) / (2 * eps)
    torch.testing.assert_close(got_tangent, want, atol=1e-6, rtol=1e-5)


def test_torch_func_keeps_the_dtypes_of_the_kernels_and_functionalize_keeps_the_ops():
    """Under a transform the references run as the kernels do: in float32 at least, results in
    the gates' dtype (a float32 bias or c0 with bfloat16 gates under autocast once promoted them);
    `functionalize` alone is no reason to leave the registered ops."""
    from torch.autograd import forward_ad
    from torch.fx.experimental.proxy_tensor import make_fx
    from torch.func import functionalize, vmap

    from qrnn.ops import forget_mult, qrnn_conv_pool

    torch.manual_seed(0)
    m = QRNN(3, 4)
    x = torch.randn(5, 2, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want = m(x)[0]
        got = vmap(lambda s: m(s.unsqueeze(1))[0].squeeze(1), in_dims=1, out_dims=1)(x)
    assert want.dtype == got.dtype == torch.bfloat16
    torch.testing.assert_close(got, want, atol=1e-2, rtol=1e-2)
    f, z = torch.rand(6, 2, 4).half(), torch.randn(6, 2, 4).half()
    c0, y = torch.randn(2, 4), torch.randn(6, 2, 12).bfloat16()
    with forward_ad.dual_level():
        c, c_last = forget_mult(forward_ad.make_dual(f, torch.ones_like(f)), z, c0)
        h, cells = qrnn_conv_pool(forward_ad.make_dual(y, torch.ones_like(y)), torch.randn(12),
                                  c0, "fo", 1)
    assert c.dtype == c_last.dtype == torch.float16
    assert h.dtype == cells.dtype == torch.bfloat16
    graph = make_fx(functionalize(lambda x: m(x)[0]))(x)
    targets = {str(node.target) for node in graph.graph.nodes}
    assert {"qrnn.causal_conv.default", "qrnn.conv_pool.default"} <= targets


def test_torchscript_says_what_to_use_instead():
    with pytest.raises(RuntimeError, match="torch.export"):
        torch.jit.script(QRNN(3, 4))


def test_empty_batch_like_lstm():
    # nn.LSTM returns empty results for batch size 0; so does QRNN, with gradients
    rnn = QRNN(3, 4, num_layers=2)
    x = torch.randn(5, 0, 3, requires_grad=True)
    out, h_n = rnn(x)
    assert out.shape == (5, 0, 4) and h_n.shape == (2, 0, 4)
    out.sum().backward()
    assert x.grad.shape == (5, 0, 3)


@pytest.mark.parametrize("forward", ["matmul", "onednn"])
def test_cpu_autocast_runs_the_convolution_in_bfloat16(forward, monkeypatch):
    """Under torch.autocast the convolution takes the autocast dtype, as F.linear does (at every
    size: the oneDNN forward once returned bfloat16 where the op promised float32, and crashed
    in the backward); parameters and their gradients stay float32."""
    from qrnn.ops import conv

    monkeypatch.setattr(conv, "ONEDNN_MIN_ROWS", 0 if forward == "onednn" else 2**62)
    monkeypatch.setenv(conv.PRODUCTS_ENV, "onednn" if forward == "onednn" else "mkl")
    torch.manual_seed(0)
    m = QRNN(16, 8, num_layers=2)
    x = torch.randn(64, 4, 16, requires_grad=True)
    want, want_h = m(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, h_n = m(x)
    assert out.dtype == h_n.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), want, atol=3e-2, rtol=3e-2)
    torch.testing.assert_close(h_n.float(), want_h, atol=3e-2, rtol=3e-2)
    out.float().sum().backward()
    assert x.grad.dtype == torch.float32
    for p in m.parameters():
        assert p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all()
