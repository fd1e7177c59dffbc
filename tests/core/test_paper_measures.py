"""The paper's other measures (weights, agreement, robustness) as analyze, the Callback and
lwlc.measure report them, against computations written out here from the saved networks."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import CSVLogger

import lwlc
from lwlc.callbacks import LayerwiseBarrierCallback
from lwlc.commands.cli import main
from lwlc.core.errors import LwlcError
from lwlc.data import DigitsDataModule
from lwlc.formats.io import read_csv
from lwlc.models import MLP
from lwlc.training import PairedModule
from lwlc_runs import fit_pair, members, mlp_of

SAMPLES = 100
LAYERS = ("fc1", "fc2", "head")


def _flat(state: dict[str, torch.Tensor], prefix: str) -> torch.Tensor:
    keys = [k for k in state if prefix == "all" or k.startswith(prefix + ".")]
    return torch.cat([state[k].double().reshape(-1) for k in keys])


def _value(rows, **match) -> float:
    (hit,) = [r for r in rows if all(str(r[k]) == str(v) for k, v in match.items())]
    return float(hit["value"])


def _loss(model, state, x, y) -> float:
    model.load_state_dict(state)
    with torch.no_grad():
        return float(torch.nn.functional.cross_entropy(model.eval()(x), y))


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fit_pair(tmp_path_factory.mktemp("pair") / "run", "--model.init_args.init_seed_b", "1")


def test_analyze_writes_the_measures_a_hand_computation_gives(pair, tmp_path, capsys):
    out = tmp_path / "out"
    main(["analyze", "--ckpt", str(pair), "--out", str(out), "--plans", "full",
          "--max-samples", str(SAMPLES), "--measures", "weights,agreement,robustness",
          "--robustness-seeds", "2"])  # fmt: skip
    rows = read_csv(out / "measures.csv")
    a, b = members(pair)["a"], members(pair)["b"]
    for group in (*LAYERS, "all"):
        u, v = _flat(a, group), _flat(b, group)
        assert _value(rows, measure="l2_distance", group=group) == pytest.approx(
            float((u - v).norm()), rel=1e-9
        )
        assert _value(rows, measure="cosine_similarity", group=group) == pytest.approx(
            float(u @ v / (u.norm() * v.norm())), rel=1e-9
        )
    x, y = DigitsDataModule().tensors("test", SAMPLES)
    model = mlp_of(pair)
    same = 0
    for i in range(len(x)):  # one sample at a time
        model.load_state_dict(a)
        pa = model.eval()(x[i : i + 1]).argmax()
        model.load_state_dict(b)
        same += int(pa == model.eval()(x[i : i + 1]).argmax())
    assert _value(rows, measure="agreement", split="test") == pytest.approx(same / len(x))
    # robustness of fc1 at alpha 1: A's fc1 moved by a Gaussian of norm ||A_fc1 - B_fc1||
    keys = [k for k in a if k.startswith("fc1.")]
    distance = float((_flat(a, "fc1") - _flat(b, "fc1")).norm())
    losses = []
    for seed in (0, 1):
        gen = torch.Generator().manual_seed(seed)
        raw = {k: torch.randn(a[k].shape, generator=gen, dtype=torch.float64) for k in keys}
        norm = torch.cat([r.reshape(-1) for r in raw.values()]).norm()
        moved = {k: (a[k] + (r * distance / norm).float() if k in raw else a[k]) for k, r in
                 {**a, **raw}.items()}  # fmt: skip
        losses.append(_loss(model, moved, x, y))
    robust = _value(rows, measure="random_loss", group="fc1", alpha=1.0)
    assert robust == pytest.approx(sum(losses) / 2, rel=1e-5)
    assert robust > _loss(model, a, x, y)  # a random move costs loss
    shown = capsys.readouterr().out
    assert f"agreement a-b on test: {_value(rows, measure='agreement'):.4f}" in shown
    assert (out / "distances.png").stat().st_size > 1000


def test_lwlc_measure_returns_the_rows_analyze_writes(pair, tmp_path):
    out = tmp_path / "out"
    main(["analyze", "--ckpt", str(pair), "--out", str(out), "--plans", "full", "--no-plots",
          "--max-samples", str(SAMPLES), "--measures", "weights,agreement"])  # fmt: skip
    m = members(pair)
    model_a, model_b = mlp_of(pair), mlp_of(pair)
    model_a.load_state_dict(m["a"])
    model_b.load_state_dict(m["b"])
    spec = lwlc.MeasureSpec(plans=["full"], max_samples=SAMPLES, measures=["weights", "agreement"])
    found = lwlc.measure(model_a, model_b, DigitsDataModule(), spec).measures
    written = read_csv(out / "measures.csv")
    assert len(found) == len(written) == 2 * (len(LAYERS) + 1) + 1
    for row in written:
        match = found[(found.measure == row["measure"]) & (found.group == row["group"])]
        assert float(match.value.iloc[0]) == pytest.approx(float(row["value"]), abs=1e-12)


class _Pair(PairedModule):
    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


def test_the_callback_logs_the_measures_through_training_from_the_initialisation(tmp_path):
    spec = lwlc.MeasureSpec(plans=["full"], max_samples=SAMPLES, measures=["weights", "agreement"])
    callback = LayerwiseBarrierCallback(spec, figures=True)
    module = _Pair(MLP(in_features=64, num_classes=10, width=32, depth=2), init_seed_b=1)
    init_a = {k: v.clone() for k, v in module.net_a.state_dict().items()}
    trainer = Trainer(
        default_root_dir=tmp_path, max_epochs=2, limit_train_batches=5, accelerator="cpu",
        logger=CSVLogger(tmp_path), enable_checkpointing=False, enable_progress_bar=False,
        callbacks=[callback],
    )  # fmt: skip
    trainer.fit(module, datamodule=DigitsDataModule(batch_size=32, order_seeds=(0, 1)))
    rows = read_csv(tmp_path / "barriers" / "measures.csv")
    assert sorted({int(r["epoch"]) for r in rows}) == [0, 1, 2]
    at = {e: [r for r in rows if int(r["epoch"]) == e] for e in (0, 2)}
    # before training each member is its initialisation; A and B are independent inits
    assert _value(at[0], measure="l2_distance", between="a-init", group="all") == 0.0
    assert _value(at[0], measure="cosine_similarity", between="b-init", group="fc1") == (
        pytest.approx(1.0)
    )
    final_a = module.net_a.state_dict()
    moved = float((_flat(final_a, "all") - _flat(init_a, "all")).norm())
    assert _value(at[2], measure="l2_distance", between="a-init", group="all") == (
        pytest.approx(moved, rel=1e-9)
    )
    logged = read_csv(next(tmp_path.glob("lightning_logs/version_*/metrics.csv")))
    agreement = [float(r["measure/agreement/a-b/all/test"]) for r in logged
                 if r.get("measure/agreement/a-b/all/test") not in ("", None)]  # fmt: skip
    assert agreement == pytest.approx([_value(at[0], measure="agreement"),
        *[float(r["value"]) for r in rows if r["measure"] == "agreement"][1:]])  # fmt: skip
    assert not math.isnan(agreement[-1]) and (tmp_path / "barriers" / "distances.png").exists()
    drawn = tmp_path / "barriers" / "distances.png"
    drawn.unlink()
    main(["plot", str(tmp_path / "barriers")])  # lwlc plot redraws it from measures.csv
    assert drawn.stat().st_size > 1000


@pytest.mark.parametrize("front_end", ["spec", "callback"])
def test_an_unknown_measure_is_one_line_naming_the_choices(front_end):
    def callback(**fields: object) -> LayerwiseBarrierCallback:
        return LayerwiseBarrierCallback(lwlc.MeasureSpec(**fields))

    build = lwlc.MeasureSpec if front_end == "spec" else callback
    with pytest.raises(LwlcError, match="measures: 'hessian' is not one of weights, agreement"):
        build(measures=["hessian"])
