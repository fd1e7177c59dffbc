"""Experiments 5-8 (robustness, subspace, federated, language model) and their building blocks."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lwlc.data import CharTextDataModule
from lwlc.errors import LwlcError
from lwlc.evaluation import Evaluator
from lwlc.models import GPT
from lwlc.training import reinitialize

TEXT = "the quick brown fox jumps over the lazy dog. " * 20


@pytest.fixture
def text_file(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def tiny_gpt(vocab: int = 30, depth: int = 2) -> GPT:
    return GPT(vocab_size=vocab, block_size=16, depth=depth, heads=2, width=16)


@pytest.mark.parametrize("train", [True, False])
def test_gpt_stages_compose_to_forward(train: bool) -> None:
    torch.manual_seed(0)
    model = tiny_gpt().train(train)
    ids = torch.randint(0, 30, (3, 16))
    out = ids
    for _, stage in model.stages():
        out = stage(out)
    assert torch.equal(out, model(ids))
    assert out.shape == (3, 16, 30)
    names = [n for n, _ in model.stages()]
    assert names == ["embed", "blocks.0", "blocks.1", "ln_f", "head"]


def test_gpt_is_causal() -> None:
    torch.manual_seed(0)
    model = tiny_gpt().eval()
    ids = torch.randint(0, 30, (1, 16))
    changed = ids.clone()
    changed[0, 9] = (ids[0, 9] + 1) % 30
    with torch.no_grad():
        a, b = model(ids), model(changed)
    assert torch.equal(a[:, :9], b[:, :9])
    assert not torch.allclose(a[:, 9:], b[:, 9:])


def test_reinitialize_draws_gpt2_initialisation() -> None:
    model = GPT(vocab_size=50, block_size=32, depth=4, heads=2, width=64)
    reinitialize(model, seed=3)
    state = model.state_dict()
    assert state["embed.tok.weight"].std().item() == pytest.approx(0.02, rel=0.1)
    assert state["blocks.0.attn.c_attn.weight"].std().item() == pytest.approx(0.02, rel=0.1)
    assert state["blocks.2.mlp.c_proj.weight"].std().item() == pytest.approx(0.02 / 8**0.5, rel=0.1)
    assert torch.count_nonzero(state["blocks.1.mlp.c_fc.bias"]) == 0
    assert torch.equal(state["ln_f.weight"], torch.ones(64))
    again = GPT(vocab_size=50, block_size=32, depth=4, heads=2, width=64)
    reinitialize(again, seed=3)
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in state.items())


def test_engine_scores_gpt_models_per_token() -> None:
    torch.manual_seed(0)
    a, b = tiny_gpt().eval(), tiny_gpt().eval()
    ids, targets = torch.randint(0, 30, (4, 16)), torch.randint(0, 30, (4, 16))
    evaluator = Evaluator(a, a.state_dict(), b.state_dict())
    n = len(evaluator.keys)
    got = evaluator.evaluate([(0.0,) * n, (1.0,) * n], ids, targets)
    for net, metrics in zip((a, b), got, strict=True):
        with torch.no_grad():
            logits = net(ids).flatten(0, 1)
        expected = F.cross_entropy(logits, targets.flatten()).item()
        assert metrics.loss == pytest.approx(expected, rel=1e-5)
        assert metrics.count == targets.numel()


def test_text_windows_are_next_character_pairs(text_file: Path) -> None:
    data = CharTextDataModule(path=str(text_file), block_size=8, stride=3, val_size=0.0)
    x, y = data.tensors("train")
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert data.vocab == "".join(sorted(set(TEXT)))
    train_text = TEXT[: round(len(TEXT) * 0.9)]
    for row in range(len(x)):
        start = train_text.find(data.decode(x[row]))
        assert start >= 0
        assert data.decode(y[row]) == train_text[start + 1 : start + 9]


def test_test_split_is_the_held_out_end_of_the_text(text_file: Path) -> None:
    data = CharTextDataModule(path=str(text_file), block_size=10, test_fraction=0.25)
    x, y = data.tensors("test")
    cut = round(len(TEXT) * 0.75)
    assert data.decode(x[0]) == TEXT[cut : cut + 10]
    assert data.decode(y[0]) == TEXT[cut + 1 : cut + 11]
    assert len(x) == (len(TEXT) - cut - 1) // 10  # non-overlapping windows


def test_text_errors_are_one_line(tmp_path: Path, text_file: Path) -> None:
    with pytest.raises(LwlcError, match="not found"):
        _ = CharTextDataModule(path=str(tmp_path / "missing.txt")).text
    data = CharTextDataModule(path=str(text_file))
    with pytest.raises(LwlcError, match="not in the vocabulary: 'Z'"):
        data.encode("Zebra")
    with pytest.raises(LwlcError, match="fewer than block_size"):
        CharTextDataModule(path=str(text_file), block_size=500).tensors("test")


def test_default_corpus_is_embedded_python_documentation() -> None:
    data = CharTextDataModule(block_size=64, max_chars=20_000)
    assert "statement" in data.text
    assert data.num_classes == len(set(data.text))
    x, _ = data.tensors("train")
    assert x.dtype == torch.long and x.shape[1] == 64
