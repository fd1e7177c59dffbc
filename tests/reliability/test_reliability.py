"""Reliability and safety: untrusted checkpoints, bad input, interruptions, determinism, memory.

Commands run as a user types them (``lwlc.commands.cli.main`` in-process, or a fresh process where
the behaviour depends on being one), on short real ``lwlc fit`` runs of the digits demo.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from battery import digests
from lightning.pytorch import Callback, Trainer

from conftest import REPO_ROOT
from engine_reference import naive_eval, naive_state
from fixtures_data import write_cifar10
from lwlc.callbacks import LayerwiseBarrierCallback
from lwlc.commands import analyze as analyze_module
from lwlc.commands.cli import main
from lwlc.core import measurement as measurement_module
from lwlc.core import memory
from lwlc.core.engine import Evaluator
from lwlc.core.errors import LwlcError
from lwlc.core.interpolation import coefficients, make_paths
from lwlc.core.layers import default_groups
from lwlc.data import DigitsDataModule
from lwlc.models import MLP, ResNet18
from lwlc.results import files as results_files
from lwlc.training import ClassifierModule
from lwlc_runs import DIGITS, QUIET, fit_pair, members, mlp_of


class Payload:
    """Pickles to ``open(path, "w")``: unpickling it creates ``path`` (harmless, detectable)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple:
        return (open, (self.path, "w"))


def malicious_checkpoint(path: Path, marker: Path, legacy: bool = False) -> Path:
    """A file shaped like an lwlc checkpoint whose unpickling would create ``marker``."""
    body = {"state_dict": {"net.fc1.weight": torch.zeros(2, 2)}, "callbacks": Payload(marker)}
    if legacy:  # a bare pickle, as torch's pre-1.6 format starts
        with path.open("wb") as f:
            pickle.dump(body, f, protocol=2)
    else:
        torch.save(body, path)
    return path


class CrashAtEpoch(Callback):
    """Fails the run when epoch ``epoch`` starts (after the earlier epochs' checkpoints)."""

    def __init__(self, epoch: int = 1) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: Trainer, pl_module: object) -> None:
        if trainer.current_epoch == self.epoch:
            raise RuntimeError("simulated crash")


def analyze(out: Path, *args: str) -> Path:
    main(["analyze", *args, "--out", str(out), "--no-plots"])
    return out


def read_text_rows(path: Path) -> list[list[str]]:
    return [line.split(",") for line in path.read_text().splitlines()]


@pytest.fixture
def files(reliability_inputs: dict[str, Path]) -> dict[str, Path]:
    """Real checkpoints and every kind of broken input (``battery.make_inputs``), shared."""
    return reliability_inputs


# ------------------------------------------------------------------ untrusted checkpoints
def _refused(capsys: pytest.CaptureFixture[str], argv: list[str], marker: Path) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert not marker.exists(), "loading the checkpoint ran its code"
    lines = [line for line in err.splitlines() if line.startswith("lwlc: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_the_crafted_checkpoint_really_runs_code_when_unpickled_unsafely(tmp_path):
    marker = tmp_path / "created"
    torch.load(malicious_checkpoint(tmp_path / "x.ckpt", marker), weights_only=False)
    assert marker.exists()  # so the refusals below are refusals of a live payload


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-pickle"])
@pytest.mark.parametrize(
    "command",
    [
        ["analyze", "--ckpt", "{evil}"],
        ["analyze", "--ckpt-a", "{evil}", "--ckpt-b", "{single}"],
        ["analyze", "--ckpt-a", "{single}", "--ckpt-b", "{evil}"],
        ["fit", "--config", DIGITS, "--ckpt_path", "{evil}"],
        ["validate", "--config", DIGITS, "--ckpt_path", "{evil}"],
        ["test", "--config", DIGITS, "--ckpt_path", "{evil}"],
        ["fit", "--config", DIGITS, "--ckpt_path", "{evil}", "--weights_only", "true"],
        ["merge", "--ckpt-a", "{evil}", "--ckpt-b", "{single}"],
    ],
    ids=[
        "analyze-ckpt",
        "analyze-ckpt-a",
        "analyze-ckpt-b",
        "fit",
        "validate",
        "test",
        "fit-wo",
        "merge",
    ],
)
def test_a_checkpoint_that_runs_code_is_refused_without_running_it(
    files, tmp_path, capsys, command, legacy
):
    marker = tmp_path / "PWNED"
    evil = malicious_checkpoint(tmp_path / "evil.ckpt", marker, legacy)
    argv = [a.format(evil=evil, single=files["single"]) for a in command]
    if argv[0] in ("analyze", "merge"):
        argv += ["--out", str(tmp_path / ("out" if argv[0] == "analyze" else "out.ckpt"))]
    else:
        argv += ["--trainer.default_root_dir", str(tmp_path)]
    line = _refused(capsys, argv, marker)
    assert "refusing to load" in line and str(evil) in line
    # the payload's own object is named, not the torch functions its tensors pickle through
    assert "the Python object io.open," in line, line
    assert not any(tmp_path.glob("out*")) and not (tmp_path / "checkpoints").exists()


def test_a_hugging_face_folder_whose_weights_run_code_is_refused(tmp_path, capsys):
    import transformers  # the dev extra installs it

    folder = tmp_path / "lm"
    transformers.GPT2Config(
        n_layer=1, n_embd=8, n_head=2, vocab_size=16, n_positions=16
    ).save_pretrained(folder)
    marker = tmp_path / "PWNED"
    malicious_checkpoint(folder / "pytorch_model.bin", marker)
    argv = [
        "analyze",
        "--ckpt-a",
        str(folder),
        "--ckpt-b",
        str(folder),
        "--out",
        str(tmp_path / "out"),
    ]
    assert "refusing to load" in _refused(capsys, argv, marker)


def test_weights_only_false_is_refused_before_anything_is_loaded(files, tmp_path, capsys):
    marker = tmp_path / "PWNED"
    evil = malicious_checkpoint(tmp_path / "evil.ckpt", marker)
    argv = ["fit", "--config", DIGITS, "--ckpt_path", str(evil), "--weights_only", "false"]
    line = _refused(capsys, [*argv, "--trainer.default_root_dir", str(tmp_path)], marker)
    assert "--weights_only false" in line


def test_the_callback_refuses_a_reference_checkpoint_that_runs_code(tmp_path):
    marker = tmp_path / "PWNED"
    evil = malicious_checkpoint(tmp_path / "evil.ckpt", marker)

    class Single(ClassifierModule):
        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    trainer = Trainer(
        default_root_dir=tmp_path,
        max_epochs=1,
        limit_train_batches=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[LayerwiseBarrierCallback(reference_ckpt=str(evil))],
    )
    with pytest.raises(LwlcError, match="refusing to load"):
        trainer.fit(Single(MLP(width=32)), datamodule=DigitsDataModule(order_seeds=[0]))
    assert not marker.exists()


def test_fit_resumes_from_its_own_checkpoint_under_the_safe_loader(files, tmp_path):
    """The safe path is not a refusal of everything: lwlc's own checkpoints resume."""
    last = fit_pair(tmp_path / "first")
    resumed = tmp_path / "resumed"
    main(
        [
            "fit",
            "--config",
            DIGITS,
            "--ckpt_path",
            str(last),
            "--trainer.default_root_dir",
            str(resumed),
        ]
        + ["--trainer.max_epochs", "2", "--trainer.limit_train_batches", "5", *QUIET]
    )
    checkpoint = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)
    assert (checkpoint["epoch"], checkpoint["global_step"]) == (1, 10)


def test_a_nan_loss_is_recorded_as_nan_and_never_dropped(files, tmp_path, capsys):
    """B's head is finite but huge, so every model using it overflows to a NaN loss."""
    a = members(files["single"])["model"]
    b = {k: v.clone() for k, v in a.items()}
    b["head.weight"] = torch.full_like(b["head.weight"], 3e38)
    paths = []
    for name, state in (("a", a), ("b", b)):
        paths.append(tmp_path / f"{name}.pt")
        torch.save(state, paths[-1])
    capsys.readouterr()
    out = analyze(
        tmp_path / "out",
        "--ckpt-a",
        str(paths[0]),
        "--ckpt-b",
        str(paths[1]),
        "--alphas",
        "0,0.5,1",
        "--plans",
        "full,single",
        "--max-samples",
        "50",
        "--model",
        "lwlc.models.MLP",
        "--model.init_args.width",
        "32",
        "--data",
        "lwlc.data.DigitsDataModule",
    )
    x, y = DigitsDataModule().tensors("test", 50)
    model = mlp_of(files["single"])
    curves = [r.split(",") for r in (out / "curves.csv").read_text().splitlines()[1:]]
    names = ["fc1", "fc2", "head"]
    assert len(curves) == (1 + 2 * len(names)) * 3  # every point is there
    nan_points = 0
    for plan, group, rest, _split, alpha, loss, _acc in curves:
        chosen = names if plan == "full" else [group]
        keys = {k for k in a if k.rpartition(".")[0] in chosen}
        expected, _ = naive_eval(model, naive_state(a, b, keys, float(alpha), rest), x, y)
        assert math.isnan(float(loss)) == math.isnan(expected), (plan, group, rest, alpha)
        nan_points += math.isnan(expected)
    assert 0 < nan_points < len(curves)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["nonfinite_points"] == nan_points
    assert (
        f"{nan_points} of {len(curves)} evaluated points have a NaN/Inf loss"
        in capsys.readouterr().err
    )
    barriers = [r.split(",") for r in (out / "barriers.csv").read_text().splitlines()[1:]]
    for plan, group, rest, _split, reference, loss_barrier, _ in barriers:
        curve_nan = any(math.isnan(float(c[5])) for c in curves if c[:3] == [plan, group, rest])
        if curve_nan or reference in ("models", "midpoint"):  # f(B) itself is NaN
            assert loss_barrier == "nan", (plan, group, rest, reference)
        else:
            assert math.isfinite(float(loss_barrier))


# ------------------------------------------------------------------ no lost work
def _resume_spy(monkeypatch: pytest.MonkeyPatch) -> list[list]:
    """Record the paths each sweep is asked to compute."""
    calls: list[list] = []
    real = measurement_module.sweep

    def spy(evaluator, paths, *args, **kwargs):
        calls.append(list(paths))
        return real(evaluator, paths, *args, **kwargs)

    monkeypatch.setattr(measurement_module, "sweep", spy)
    return calls


def test_sigterm_keeps_finished_paths_and_resume_completes_without_recomputing(
    files, tmp_path, monkeypatch, capsys
):
    common = [
        "--ckpt",
        str(files["pair"]),
        "--chunk-size",
        "2",
        "--max-samples",
        "60",
        "--splits",
        "test,val",
    ]
    whole = analyze(tmp_path / "whole", *common)
    out = tmp_path / "out"
    real_write = results_files.write_csv

    def write_then_terminate(path, rows, columns):  # SIGTERM arrives mid-write of chunk 1
        real_write(path, rows, columns)
        if Path(path).name == "curves.csv" and rows:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(results_files, "write_csv", write_then_terminate)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["analyze", *common, "--out", str(out), "--no-plots"])
    assert exit_info.value.code == 128 + signal.SIGTERM
    assert "--resume" in capsys.readouterr().err
    assert json.loads((out / "summary.json").read_text())["status"] == "interrupted"
    kept = read_text_rows(out / "barriers.csv")
    full = read_text_rows(whole / "barriers.csv")
    assert 1 < len(kept) < len(full) and kept == full[: len(kept)]  # curves and barriers agree
    kept_curves = read_text_rows(out / "curves.csv")
    assert kept_curves == read_text_rows(whole / "curves.csv")[: len(kept_curves)]

    monkeypatch.setattr(results_files, "write_csv", real_write)
    calls = _resume_spy(monkeypatch)
    analyze(out, *common, "--resume")
    done = {tuple(r[:3]) for r in kept[1:]}
    assert calls and not any((p.plan, p.group, p.rest_from) in done for p in calls[0])
    for name in ("curves.csv", "barriers.csv"):
        assert read_text_rows(out / name) == read_text_rows(whole / name), name
    assert json.loads((out / "summary.json").read_text())["status"] == "complete"


def test_analyze_runs_off_the_main_thread_where_signals_cannot_be_caught(files, tmp_path):
    """A caller running analyze in a worker thread (a notebook, a scheduler) still gets results."""
    codes: list[int] = []
    argv = ["--ckpt", str(files["pair"]), "--plans", "full", "--max-samples", "40"]
    worker = threading.Thread(
        target=lambda: codes.append(
            analyze_module.run([*argv, "--out", str(tmp_path / "out"), "--no-plots"])
        )
    )
    worker.start()
    worker.join()
    assert codes == [0] and (tmp_path / "out" / "barriers.csv").is_file()


def test_resume_refuses_results_made_with_other_settings(files, tmp_path, capsys):
    out = analyze(
        tmp_path / "out", "--ckpt", str(files["pair"]), "--plans", "full", "--max-samples", "40"
    )
    before = digests(out)
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(
            [
                "analyze",
                "--ckpt",
                str(files["pair"]),
                "--plans",
                "full",
                "--max-samples",
                "40",
                "--alphas",
                "0,0.5,1",
                "--out",
                str(out),
                "--resume",
            ]
        )
    assert "were made with different alphas" in capsys.readouterr().err
    assert digests(out) == before


@pytest.mark.slow
def test_a_real_sigterm_to_a_running_analyze_process_loses_no_finished_path(files, tmp_path):
    """A fresh ``lwlc analyze`` process, signalled once its first chunk is on disk."""
    torch.manual_seed(0)
    a, b = (MLP(width=512, depth=4).state_dict() for _ in range(2))
    paths = [tmp_path / "a.pt", tmp_path / "b.pt"]
    for p, s in zip(paths, (a, b), strict=True):
        torch.save(s, p)
    common = [
        "--ckpt-a",
        str(paths[0]),
        "--ckpt-b",
        str(paths[1]),
        "--chunk-size",
        "1",
        "--no-plots",
        "--model",
        "lwlc.models.MLP",
        "--model.init_args.width",
        "512",
        "--model.init_args.depth",
        "4",
        "--data",
        "lwlc.data.DigitsDataModule",
        "--splits",
        "test,val",
    ]
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "lwlc.commands.cli", "analyze", *common, "--out", str(out)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    barriers = out / "barriers.csv"
    while proc.poll() is None and not (
        barriers.exists() and len(barriers.read_text().splitlines()) > 1
    ):
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err and "--resume" in err
    kept = read_text_rows(barriers)
    whole = analyze(tmp_path / "whole", *common)
    full = read_text_rows(whole / "barriers.csv")
    assert 1 < len(kept) < len(full)
    analyze(out, *common, "--resume")
    for name in ("curves.csv", "barriers.csv"):
        got, want = read_text_rows(out / name), read_text_rows(whole / name)
        assert [r[:5] for r in got] == [r[:5] for r in want]  # same rows in the same order
        for g, w in zip(got[1:], want[1:], strict=True):
            assert [float(v) for v in g[5:]] == pytest.approx([float(v) for v in w[5:]], abs=1e-6)


def test_a_rerun_after_a_failed_fit_never_overwrites_its_checkpoints(tmp_path):
    run = tmp_path / "run"
    crash = tmp_path / "crash.yaml"
    callback = {"class_path": "test_reliability.CrashAtEpoch", "init_args": {"epoch": 1}}
    crash.write_text(json.dumps({"trainer": {"callbacks": [callback]}}))
    logger = [
        "--trainer.logger",
        "lightning.pytorch.loggers.CSVLogger",
        "--trainer.logger.save_dir",
        str(run),
    ]
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit_pair(run, "--config", str(crash), "--trainer.max_epochs", "2", *logger)
    left = digests(run / "checkpoints")
    assert "last.ckpt" in left and len(left) == 2, left  # epoch 0's best and last survive
    with pytest.raises(SystemExit):  # a fresh fit there is refused: resume, or --overwrite
        fit_pair(run, *logger)
    assert digests(run / "checkpoints") == left
    resume = ("--ckpt_path", str(run / "checkpoints" / "last.ckpt"), "--trainer.max_epochs", "2")
    fit_pair(run, *logger, *resume)
    after = digests(run / "checkpoints")
    assert sorted(p for p in after if p.startswith("last")) == ["last.ckpt"]
    assert after["last.ckpt"] != left["last.ckpt"], "the resumed run's newest checkpoint"


# ------------------------------------------------------------------ determinism
def test_same_config_and_seed_give_bit_identical_barriers(tmp_path):
    results = []
    for name in ("first", "second"):
        ckpt = fit_pair(tmp_path / name)
        out = analyze(
            tmp_path / f"{name}_out",
            "--ckpt",
            str(ckpt),
            "--plans",
            "full,single",
            "--max-samples",
            "80",
        )
        results.append(((out / "barriers.csv").read_bytes(), (out / "curves.csv").read_bytes()))
    assert results[0] == results[1]


def test_batch_size_changes_results_by_less_than_1e_5(files, tmp_path):
    common = [
        "--ckpt",
        str(files["pair"]),
        "--plans",
        "full,single,cumulative_front",
        "--splits",
        "test,val",
    ]
    big = analyze(tmp_path / "big", *common, "--batch-size", "512")
    small = analyze(tmp_path / "small", *common, "--batch-size", "7", "--chunk-size", "3")
    for name in ("curves.csv", "barriers.csv"):
        got, want = read_text_rows(small / name), read_text_rows(big / name)
        assert [r[:5] for r in got] == [r[:5] for r in want]
        for g, w in zip(got[1:], want[1:], strict=True):
            assert [float(v) for v in g[5:]] == pytest.approx([float(v) for v in w[5:]], abs=1e-5)


# ------------------------------------------------------------------ memory
def _mlp_evaluator(width: int = 32) -> tuple[Evaluator, MLP]:
    torch.manual_seed(0)
    model = MLP(width=width)
    b = MLP(width=width).state_dict()
    return Evaluator(model, model.state_dict(), b), model


def test_activation_estimate_counts_every_stage_output_of_an_mlp():
    evaluator, _ = _mlp_evaluator(width=32)
    # flatten 64, fc1/act1/fc2/act2 32 each, head 10 floats per sample: each output three times,
    # the largest stage's output and its two mixing temporaries, the input, two copies of logits.
    floats = 64 + 3 * (64 + 4 * 32 + 10) + 3 * 64 + 2 * 10
    assert memory.activation_bytes_per_sample(evaluator, torch.zeros(2, 1, 8, 8)) == 4 * floats


def test_weight_estimate_counts_each_interpolated_layer_once():
    evaluator, model = _mlp_evaluator()
    groups = default_groups(model, torch.zeros(2, 1, 8, 8))
    paths = make_paths(groups, ["full", "single"])
    models = [
        coefficients(p, t, evaluator.keys, evaluator.float_keys)
        for p in paths
        for t in (0.0, 0.5, 1.0)
    ]
    # At alpha 0.5 each layer's mixed tensors are one set, shared by its rest-a and rest-b paths and
    # by the full path; alphas 0 and 1 reuse the endpoints themselves.
    params = sum(v.numel() * v.element_size() for v in model.state_dict().values())
    assert memory.weight_bytes(evaluator, models) == params
    assert (
        memory.weight_bytes(
            evaluator, models + [coefficients(paths[0], 0.25, evaluator.keys, evaluator.float_keys)]
        )
        == 2 * params
    )


def test_plan_halves_the_chunk_then_shrinks_the_batch_to_fit():
    weights = {16: 800, 8: 400, 4: 200, 2: 100, 1: 50}

    def fit(tensor_bytes: int) -> memory.MemoryPlan:  # a budget whose tensor share is this
        budget = math.ceil(tensor_bytes / memory.TENSOR_SHARE)
        return memory.plan(budget, 100, 16, 1_000, 10, weights.__getitem__)

    assert (fit(10_000).batch_size, fit(10_000).chunk_size) == (100, 16)
    assert (fit(2_300).batch_size, fit(2_300).chunk_size) == (100, 4)
    assert fit(2_300).estimate == 2_200
    assert (fit(1_300).batch_size, fit(1_300).chunk_size) == (25, 1)
    assert fit(1_300).estimate == 1_300
    with pytest.raises(LwlcError, match="even with batch size 1"):
        fit(1_055)


def test_a_tight_memory_budget_gives_the_same_results_in_smaller_pieces(files, tmp_path):
    common = ["--ckpt", str(files["pair"]), "--plans", "full,single", "--max-samples", "100"]
    free = analyze(tmp_path / "free", *common)
    sizes = json.loads((free / "summary.json").read_text())["memory"]
    assert (sizes["batch_size"], sizes["chunk_size"]) == (100, 16)  # no batch beyond the samples
    # One path at a time: the full path's 9 interior alphas each hold a mixed copy of the model.
    params = sum(v.numel() * 4 for v in members(files["pair"])["a"].values())
    need = sizes["fixed_bytes"] + 9 * params + 40 * sizes["activation_bytes_per_sample"]
    budget = (need + 2) / memory.TENSOR_SHARE / memory.GIB
    tight = analyze(tmp_path / "tight", *common, "--memory-budget", str(budget))
    chosen = json.loads((tight / "summary.json").read_text())["memory"]
    assert (chosen["batch_size"], chosen["chunk_size"]) == (40, 1)
    assert chosen["estimate_bytes"] <= memory.TENSOR_SHARE * chosen["budget_bytes"]
    for name in ("curves.csv", "barriers.csv"):
        got, want = read_text_rows(tight / name), read_text_rows(free / name)
        assert [r[:5] for r in got] == [r[:5] for r in want]
        for g, w in zip(got[1:], want[1:], strict=True):
            assert [float(v) for v in g[5:]] == pytest.approx([float(v) for v in w[5:]], abs=1e-5)


PEAK_RSS = """
import os, sys
import jsonargparse, tqdm.auto, torchvision.datasets.cifar  # imports count in the baseline
import lwlc.commands.analyze, lwlc.commands.cli
def kib(field):
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(field))
# the test's CIFAR files are small fakes without the official md5 sums
torchvision.datasets.cifar.check_integrity = lambda fpath, md5=None: os.path.isfile(fpath)
base = kib("VmRSS:")
lwlc.commands.cli.main(sys.argv[1:])
print(base, kib("VmHWM:"))
"""


@pytest.mark.slow
def test_every_layer_of_a_full_width_resnet18_at_11_alphas_fits_the_memory_budget(tmp_path):
    """The peak memory a fresh process adds after its imports stays within --memory-budget."""
    write_cifar10(tmp_path / "data", per_batch=8, n_test=16)
    files = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        files.append(tmp_path / f"{seed}.pt")
        torch.save(ResNet18(norm="none").state_dict(), files[-1])
    budget = 1.0  # GiB; the endpoints alone take 0.18 and the full path's 9 mixes 0.4 more
    out = tmp_path / "out"
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            PEAK_RSS,
            "analyze",
            "--ckpt-a",
            str(files[0]),
            "--ckpt-b",
            str(files[1]),
            "--model",
            "lwlc.models.ResNet18",
            "--model.init_args.norm",
            "none",
            "--data",
            "lwlc.data.CIFAR10DataModule",
            "--data.init_args.root",
            str(tmp_path / "data"),
            "--plans",
            "full,single",
            "--rest-from",
            "a",
            "--max-samples",
            "2",
            "--no-plots",
            "--memory-budget",
            str(budget),
            "--out",
            str(out),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    base_kib, peak_kib = map(int, done.stdout.split()[-2:])
    summary = json.loads((out / "summary.json").read_text())
    layers = len(summary["layers"])
    assert layers == 21 and summary["alphas"] == [i / 10 for i in range(11)]
    assert len((out / "curves.csv").read_text().splitlines()) == 1 + (layers + 1) * 11
    added = (peak_kib - base_kib) * 1024
    plan = summary["memory"]
    assert plan["estimate_bytes"] <= memory.TENSOR_SHARE * budget * memory.GIB
    assert added <= budget * memory.GIB, (added, plan)
    print(
        f"peak RSS {peak_kib / 2**20:.2f} GiB ({added / memory.GIB:.2f} GiB after imports), "
        f"memory plan {summary['memory']}"
    )


# ------------------------------------------------------------------ distributed
CALLBACK = {
    "class_path": "lwlc.callbacks.LayerwiseBarrierCallback",
    "init_args": {
        "spec": {
            "plans": ["full", "single"],
            "rest_from": ["a", "b"],
            "splits": ["val", "test"],
            "max_samples": None,
        },
        "figures": False,
        "every_n_epochs": 1,
    },
}


def _fit_process(root: Path, devices: int, epochs: int, *args: str) -> None:
    """``lwlc fit`` of the demo pair with the Callback, in a fresh process, on ``devices`` CPU
    processes: the per-process batch is 32 / devices, so every run takes the same global steps."""
    extra = root.with_suffix(".callbacks.yaml")
    extra.write_text(json.dumps({"trainer": {"callbacks": [CALLBACK]}}))
    strategy = ["--trainer.strategy", "ddp"] if devices > 1 else []
    command = [
        sys.executable,
        "-m",
        "lwlc.commands.cli",
        "fit",
        "--config",
        DIGITS,
        "--config",
        str(extra),
        "--trainer.default_root_dir",
        str(root),
        "--trainer.max_epochs",
        str(epochs),
        "--trainer.limit_train_batches",
        "4",
        "--trainer.accelerator",
        "cpu",
        "--trainer.devices",
        str(devices),
        *strategy,
        "--data.init_args.batch_size",
        str(32 // devices),
        *QUIET,
        *args,
    ]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]


def _history(root: Path) -> dict[tuple, tuple[float, float]]:
    """The Callback's barriers by (step, path, split, reference), each row required to be unique."""
    rows = [
        line.split(",") for line in (root / "barriers" / "barriers.csv").read_text().splitlines()
    ]
    header, body = rows[0], rows[1:]
    assert header == [
        "epoch",
        "step",
        "plan",
        "group",
        "rest_from",
        "split",
        "reference",
        "loss_barrier",
        "error_barrier",
    ]
    keyed = {tuple(r[:7]): (float(r[7]), float(r[8])) for r in body}
    assert len(keyed) == len(body), "a row was written twice"
    return keyed


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_matches_one_process_and_resumes(tmp_path):
    _fit_process(tmp_path / "one", 1, 2)
    _fit_process(tmp_path / "two", 2, 2)
    _fit_process(tmp_path / "first_half", 2, 1)
    last = tmp_path / "first_half" / "checkpoints" / "last.ckpt"
    _fit_process(tmp_path / "resumed", 2, 2, "--ckpt_path", str(last))

    one, two, resumed = (_history(tmp_path / n) for n in ("one", "two", "resumed"))
    steps = sorted({int(k[1]) for k in one})
    assert steps == [0, 4, 8]  # initialisation and the end of each epoch
    for other in (two, resumed):
        assert other.keys() == one.keys()
        for key, values in one.items():
            assert other[key] == pytest.approx(values, abs=1e-5), key


def test_result_files_get_ordinary_permissions_not_private_tempfile_ones(tmp_path):
    import os
    import stat

    from matplotlib.figure import Figure

    from lwlc.figures import save_figure
    from lwlc.formats.io import write_csv

    umask = os.umask(0o022)
    try:
        fig = Figure()
        fig.add_subplot().plot([0, 1])
        png = save_figure(fig, tmp_path / "f.png")
        write_csv(tmp_path / "r.csv", [{"a": 1.0}], ["a"])
    finally:
        os.umask(umask)
    for path in (png, tmp_path / "r.csv"):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
