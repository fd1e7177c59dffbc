"""Experiments 5-8 (robustness, subspace, federated, language model) and their building blocks."""

import functools
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torchvision.datasets import cifar

from fixtures_data import write_cifar10
from lwlc import recipes
from lwlc.commands import experiment
from lwlc.core.engine import Evaluator
from lwlc.core.errors import LwlcError
from lwlc.data import CharTextDataModule, DigitsDataModule
from lwlc.formats.checkpoints import read_checkpoint
from lwlc.formats.io import read_csv
from lwlc.models import GPT, MLP
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


# ------------------------------------------------------------------ the recipes at scale smoke


def run_smoke(name: str, out: Path) -> dict[str, object]:
    record = experiment.run_experiment(name, "smoke", out)
    assert json.loads((out / "result.json").read_text())["run"]["experiment"] == name
    return record


def test_recipes_are_listed() -> None:
    assert {"robustness", "subspace", "federated", "language_model"} <= set(
        experiment.recipe_names()
    )


@pytest.fixture(scope="module")
def robustness(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    out = tmp_path_factory.mktemp("robustness")
    return out, run_smoke("robustness", out)


def test_robustness_averaging_direction_ends_at_a_with_bs_layer(robustness) -> None:
    out, record = robustness
    ck = read_checkpoint(out / "mlp" / "pair" / "checkpoints" / "last.ckpt")
    a, b = ck.members["a"], ck.members["b"]
    x, y = DigitsDataModule().tensors("test", 100)
    net = MLP(in_features=64, num_classes=10, width=128, depth=3).eval()
    curves = read_csv(out / "mlp" / "curves.csv")
    for layer in ("fc1", "head"):
        net.load_state_dict({**a, **{k: v for k, v in b.items() if k.startswith(layer + ".")}})
        with torch.no_grad():
            expected = F.cross_entropy(net(x), y).item()
        end = [
            r
            for r in curves
            if r["direction"] == "averaging" and r["group"] == layer and r["alpha"] == 1.0
        ]
        assert float(end[0]["loss"]) == pytest.approx(expected, rel=1e-5)
    distance = math.sqrt(sum(float(((b[k] - a[k]) ** 2).sum()) for k in a))
    assert float(record["model_distance"]) == pytest.approx(distance, rel=1e-5)
    noise_ends = {
        float(r["norm"])
        for r in curves
        if str(r["direction"]).startswith("noise") and r["alpha"] == 1.0
    }
    assert noise_ends and all(n == pytest.approx(4 * distance, rel=1e-5) for n in noise_ends)
    assert (out / "figures" / "mlp_directions.png").stat().st_size > 0
    assert (out / "figures" / "mlp_noise.png").stat().st_size > 0


def test_robustness_noise_at_norm_zero_is_model_a(robustness) -> None:
    out, _ = robustness
    curves = read_csv(out / "mlp" / "curves.csv")
    at_a = {float(r["loss"]) for r in curves if r["alpha"] == 0.0}
    assert len(at_a) == 1  # every direction starts at A itself


def test_subspace_basis_and_directions() -> None:
    recipe = experiment.load_recipe("subspace")
    gen = torch.Generator().manual_seed(0)
    spanning = torch.randn(30, 4, generator=gen, dtype=torch.float64)
    columns = torch.cat(
        [spanning, spanning @ torch.randn(4, 3, generator=gen, dtype=torch.float64)], dim=1
    )
    basis = recipe.orthonormal_basis(columns)
    assert basis.shape == (30, 4)  # rank 4, not 7
    torch.testing.assert_close(basis.T @ basis, torch.eye(4, dtype=torch.float64))
    torch.testing.assert_close(basis @ (basis.T @ columns), columns)  # spans the columns
    inside, outside = recipe.in_span(basis, gen), recipe.in_complement(basis, gen)
    assert float(inside.norm()) == pytest.approx(1.0) and float(outside.norm()) == pytest.approx(
        1.0
    )
    torch.testing.assert_close(basis @ (basis.T @ inside), inside)
    assert float((basis.T @ outside).abs().max()) < 1e-12
    assert recipe.in_complement(torch.eye(5, dtype=torch.float64), gen) is None


def test_subspace_perturbation_is_a_plus_sigma_d() -> None:
    recipe = experiment.load_recipe("subspace")
    torch.manual_seed(0)
    net = MLP(in_features=16, num_classes=3, width=8, depth=2).eval()
    a = {k: v.detach().clone() for k, v in net.state_dict().items()}
    keys = ["fc2.weight", "fc2.bias"]
    direction = torch.randn(8 * 8 + 8, dtype=torch.float64)
    x, y = torch.randn(20, 16), torch.randint(0, 3, (20,))
    found = recipe.noisy(net, a, keys, direction, [0.0, 2.5], (x, y))
    for sigma, (loss, _) in zip((0.0, 2.5), found, strict=True):
        moved = dict(a)
        moved["fc2.weight"] = a["fc2.weight"] + sigma * direction[:64].view(8, 8).float()
        moved["fc2.bias"] = a["fc2.bias"] + sigma * direction[64:].float()
        net.load_state_dict(moved)
        with torch.no_grad():
            assert loss == pytest.approx(F.cross_entropy(net(x), y).item(), rel=1e-5)


def test_subspace_smoke_spans_the_snapshots(tmp_path: Path) -> None:
    record = run_smoke("subspace", tmp_path)
    # 3 epochs: the shared initialisation and 3 snapshots per net, 7 generic vectors of 867
    assert record["training_subspace_dim"] == "7 of 867"
    assert record["head/training_subspace_dim"] == "7 of 51"
    rows = read_csv(tmp_path / "noise.csv")
    spaces = {r["space"] for r in rows}
    assert spaces == {"clean", "training subspace", "null space", "averaging direction"}
    assert all(0.001 <= float(r["sigma"]) <= 10.0 for r in rows if r["space"] != "clean")


def test_federated_smoke_logs_every_round_of_every_scheme(tmp_path: Path) -> None:
    record = run_smoke("federated", tmp_path)
    rows = read_csv(tmp_path / "history.csv")
    runs = {(r["split"], r["averaging"]) for r in rows}
    assert runs == {(s, a) for s in ("iid", "extreme") for a in ("all (FedAvg)", "all but head")}
    assert sorted(
        float(r["round"]) for r in rows if r["split"] == "iid" and r["averaging"] == "all (FedAvg)"
    ) == [1.0, 2.0]
    metrics = (
        tmp_path / "logs" / "extreme" / "all_but_head" / "version_0" / "metrics.csv"
    ).read_text()
    for name in ("client0/acc", "client1/local_acc", "global/acc"):
        assert name in metrics.splitlines()[0]
    assert "extreme/best_partial_minus_fedavg_local_acc" in record


def test_language_model_smoke_barriers_match_the_saved_models(tmp_path: Path) -> None:
    record = run_smoke("language_model", tmp_path)
    data = CharTextDataModule(block_size=16)
    x, y = data.tensors("test", 16)
    losses = {}
    for name in ("a", "b"):
        net = GPT(vocab_size=data.num_classes, block_size=16, depth=1, heads=2, width=16).eval()
        net.load_state_dict(load_file(tmp_path / f"model_{name}.safetensors"))
        with torch.no_grad():
            losses[name] = F.cross_entropy(net(x).flatten(0, 1), y.flatten()).item()
    assert float(record["loss_a"]) == pytest.approx(losses["a"], rel=1e-5)
    assert float(record["loss_b"]) == pytest.approx(losses["b"], rel=1e-5)
    curves = [r for r in read_csv(tmp_path / "curves.csv") if r["plan"] == "full"]
    middle = [float(r["loss"]) for r in curves if r["alpha"] == 0.5][0]
    expected = middle - (losses["a"] + losses["b"]) / 2
    assert float(record["midpoint/full_loss_barrier"]) == pytest.approx(
        expected, rel=1e-4, abs=1e-6
    )
    assert (tmp_path / "figures" / "lm_barriers.png").stat().st_size > 0


def test_full_language_model_needs_a_text_file(monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = experiment.load_recipe("language_model")
    monkeypatch.delenv("LWLC_TEXT", raising=False)
    with pytest.raises(LwlcError, match="set LWLC_TEXT to a UTF-8 file"):
        recipe.corpus("full")
    monkeypatch.setenv("LWLC_TEXT", "/some/wiki.train.raw")
    assert recipe.corpus("full") == "/some/wiki.train.raw"
    assert recipe.corpus("quick") is None


# ------------------------------------------------------- the paper-scale (full) variants


@pytest.fixture
def fake_cifar10(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    write_cifar10(tmp_path / "data")
    # fabricated files cannot match torchvision's md5 sums
    monkeypatch.setattr(cifar, "check_integrity", lambda path, md5=None: Path(path).is_file())
    return tmp_path / "data"


@pytest.mark.slow
def test_full_robustness_runs_on_a_tiny_fake_cifar10(
    tmp_path: Path, fake_cifar10: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recipe = experiment.load_recipe("robustness")
    monkeypatch.setitem(recipe.SAMPLES, "full", 1)
    monkeypatch.setitem(recipe.ALPHAS, "full", 3)
    shrink = (
        f"--data.init_args.root={fake_cifar10}",
        "--data.init_args.num_workers=0",
        "--data.init_args.batch_size=8",
        "--trainer.max_epochs=1",
        "--trainer.accelerator=cpu",
        "--trainer.precision=32-true",
        "--model.init_args.model.init_args.width=8",
    )
    token = recipes.FIT_OVERRIDES.set(shrink)
    try:
        result = recipe.run(tmp_path, "full")
    finally:
        recipes.FIT_OVERRIDES.reset(token)
    for network in ("vgg11", "resnet18"):
        assert result[f"{network}/layers_averaging_hurts_more_than_random"]
        assert (tmp_path / "figures" / f"{network}_noise.png").is_file()


@pytest.mark.slow
def test_full_federated_runs_resnet18_on_a_tiny_fake_cifar10(
    tmp_path: Path, fake_cifar10: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recipe = experiment.load_recipe("federated")
    monkeypatch.setitem(recipe.SETUP, "full", (2, 1, ("iid", "extreme"), 0.01, "cosine"))
    real = recipe.CIFAR10DataModule

    def data(**kwargs: object) -> object:
        return real(**{**kwargs, "root": str(fake_cifar10), "num_workers": 0})

    monkeypatch.setattr(recipe, "CIFAR10DataModule", data)
    monkeypatch.setattr(recipe, "ResNet18", functools.partial(recipe.ResNet18, width=8))
    result = recipe.run(tmp_path, "full")
    assert "extreme/all but fc/local_acc" in result
    rows = read_csv(tmp_path / "history.csv")
    assert {r["averaging"] for r in rows} == {
        "all (FedAvg)",
        "all but fc",
        "only layer3.0.conv1",
        "none (local)",
    }
