"""The IMDB classifier: shapes, the state read at the last real token, the LSTM twin."""

import pytest
import torch

from qrnn.sentiment.model import ModelConfig, SentimentClassifier


@pytest.fixture(params=["qrnn", "lstm"])
def model(request):
    torch.manual_seed(0)
    return SentimentClassifier(ModelConfig(vocab_size=50, embed_dim=8, hidden_size=6,
                                           rnn=request.param)).eval()


def test_paper_architecture_sizes():
    m = SentimentClassifier(ModelConfig(vocab_size=1000))
    # dense: layer l reads 100 + 256 l features; the head reads 100 + 4 * 256
    assert [layer.input_size for layer in m.rnn.layers] == [100, 356, 612, 868]
    assert m.head.in_features == 1124
    assert m.rnn.layers[0].weight.shape == (2 * 3 * 256, 100)  # window 2, gates z f o


def test_padding_never_reaches_the_prediction(model):
    ids = torch.randint(1, 50, (3, 9))
    lengths = torch.tensor([9, 4, 1])
    logits = model(ids, lengths)
    for b in range(3):
        L = int(lengths[b])
        alone = model(ids[b:b + 1, :L], lengths[b:b + 1])
        torch.testing.assert_close(logits[b:b + 1], alone, atol=1e-5, rtol=1e-5)
        garbage = ids.clone()
        garbage[b, L:] = torch.randint(1, 50, (9 - L,))
        torch.testing.assert_close(model(garbage, lengths)[b], logits[b], atol=1e-5, rtol=1e-5)


def test_reads_last_real_token_not_the_end(model):
    ids = torch.randint(1, 50, (1, 6))
    full = model(ids, torch.tensor([6]))
    short = model(ids, torch.tensor([3]))
    assert not torch.allclose(full, short)


def test_dropout_only_in_training():
    torch.manual_seed(0)
    m = SentimentClassifier(ModelConfig(vocab_size=50, embed_dim=8, hidden_size=6, dropout=0.5))
    ids, lengths = torch.randint(1, 50, (4, 7)), torch.tensor([7, 7, 5, 2])
    m.train()
    assert not torch.equal(m(ids, lengths), m(ids, lengths))
    m.eval()
    assert torch.equal(m(ids, lengths), m(ids, lengths))


def test_embeddings_are_copied_and_checked():
    emb = torch.randn(50, 8)
    m = SentimentClassifier(ModelConfig(vocab_size=50, embed_dim=8, hidden_size=6), emb)
    assert torch.equal(m.embedding.weight.detach(), emb)
    with pytest.raises(ValueError, match=r"\(vocab_size, embed_dim\) = \(50, 8\)"):
        SentimentClassifier(ModelConfig(vocab_size=50, embed_dim=8), torch.randn(49, 8))


@pytest.mark.parametrize("bad", [dict(rnn="gru"), dict(dropout=1.0), dict(num_layers=0)])
def test_config_validation(bad):
    with pytest.raises(ValueError):
        ModelConfig(vocab_size=10, **bad)


@pytest.mark.parametrize("bad", [dict(window=True), dict(window=2.0), dict(hidden_size="256")])
def test_config_sizes_must_be_ints(bad):
    """A hand-edited config.json with "window": true failed only at the first forward."""
    name = next(iter(bad))
    with pytest.raises(TypeError, match=f"{name} must be an int, got"):
        ModelConfig(vocab_size=10, **bad)


def test_bad_input_shapes(model):
    with pytest.raises(ValueError, match=r"ids must be \(B, T\)"):
        model(torch.zeros(5, dtype=torch.long), torch.tensor([5]))
    with pytest.raises(ValueError, match=r"lengths must be in \[1, T=4\], got \[4, 5\]"):
        model(torch.ones(2, 4, dtype=torch.long), torch.tensor([4, 5]))
    with pytest.raises(ValueError, match=r"lengths must be in \[1, T=4\], got \[0, 2\]"):
        model(torch.ones(2, 4, dtype=torch.long), torch.tensor([0, 2]))
