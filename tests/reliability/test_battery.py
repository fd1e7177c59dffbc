"""The reliability battery: every input a user or a stranger can get wrong, as a real command on
real files, must end in one line ``lwlc: error: ...``, exit code 2, no traceback, nothing imported
that nobody vouched for and nothing written or changed (README, Reliability).

The inputs (real ``lwlc fit`` checkpoints and what is made from them: damaged files, checkpoints
naming the module ``evilmod`` in every encoding, bad data, broken Hugging Face folders) are built
once per session by ``battery.make_inputs``. A case may first set something up (no CUDA, another
live process holding the output folder's lock). Behaviour that is not a refusal (stages checked
against the model's forward, stale locks taken over, a killed plot's temporaries removed, two
analyses started at once) is tested below the battery on the same inputs.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from battery import EVIL, FlatMLP, digests

from conftest import CONFIGS, REPO_ROOT
from engine_reference import naive_eval, naive_state
from lwlc.commands.cli import main
from lwlc.data import DigitsDataModule
from lwlc_runs import DIGITS, QUIET

# A process that holds a folder's (or a file's) lock until its stdin closes: another lwlc run.
HOLD = """
import sys
from lwlc.formats import lock
lock.acquire(sys.argv[1], "lwlc analyze", is_file=sys.argv[2] == "file")
print("held", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def files(reliability_inputs: dict[str, Path]) -> dict[str, Path]:
    return reliability_inputs


def lwlc_env() -> dict[str, str]:
    """The environment of an ``lwlc`` subprocess: this checkout's sources first."""
    paths = [str(REPO_ROOT / "src"), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}


def hold(target: str, kind: str = "folder") -> Callable[[SimpleNamespace], None]:
    """A case's setup: a live process holds the lock of ``target`` (formatted like argv)."""

    def setup(ctx: SimpleNamespace) -> None:
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLD, target.format(**ctx.names), kind],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=lwlc_env(),
        )  # fmt: skip
        ctx.request.addfinalizer(lambda: (proc.stdin.close(), proc.wait(timeout=30)))
        assert proc.stdout.readline().strip() == "held"

    return setup


def _no_cuda(ctx: SimpleNamespace) -> None:
    ctx.monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


FIT = ["fit", "--config", DIGITS, "--trainer.default_root_dir", "{tmp}", *QUIET]
FILE_DATA = ["--data", "battery.FileData", "--data.init_args.path"]
VOUCH_MODEL = ["evilmod.EvilNet", "--model", "--trust-class-paths"]

BATTERY = [
    # (id, argv, fragments the one error line must hold, setup)
    (
        "missing-path",
        ["analyze", "--ckpt", "{root}/nowhere.ckpt"],
        ["nowhere.ckpt", "does not exist"],
        None,
    ),
    ("directory", ["analyze", "--ckpt", "{root}"], ["is a directory"], None),
    ("empty-file", ["analyze", "--ckpt", "{empty}"], ["empty.ckpt", "is empty"], None),
    (
        "truncated-file",
        ["analyze", "--ckpt", "{truncated}"],
        ["truncated.ckpt", "not a readable checkpoint", "truncated or corrupted"],
        None,
    ),
    (
        "not-a-checkpoint",
        ["analyze", "--ckpt", "{text}"],
        ["text.ckpt", "not a readable checkpoint"],
        None,
    ),
    ("not-a-dict", ["analyze", "--ckpt", "{list}"], ["list.pt", "holds a list"], None),
    ("no-tensors", ["analyze", "--ckpt", "{no_tensors}"], ["no state dict of tensors"], None),
    (
        "different-shapes",
        ["analyze", "--ckpt-a", "{single}", "--ckpt-b", "{narrow}"],
        ["shape mismatch at 'fc1.weight'", "(32, 64) vs B (16, 64)"],
        None,
    ),
    (
        "different-architectures",
        ["analyze", "--ckpt-a", "{single}", "--ckpt-b", "{deeper}"],
        ["different layers", "fc3"],
        None,
    ),
    (
        "paired-where-single-expected",
        ["analyze", "--ckpt-a", "{pair}", "--ckpt-b", "{single}"],
        ["is a paired checkpoint", "use --ckpt"],
        None,
    ),
    (
        "single-where-paired-expected",
        ["analyze", "--ckpt", "{single}"],
        ["holds a single network", "--ckpt-a"],
        None,
    ),
    (
        "both-ckpt-forms",
        ["analyze", "--ckpt", "{pair}", "--ckpt-a", "{single}"],
        ["either --ckpt"],
        None,
    ),
    (
        "unknown-group-pattern",
        ["analyze", "--ckpt", "{pair}", "--group", "lyr*"],
        ["'lyr*' matches no layer", "available: fc1, fc2, head"],
        None,
    ),
    (
        "unknown-custom-layer",
        ["analyze", "--ckpt", "{pair}", "--custom", "mine=fc1,lyr2"],
        ["unknown layer or group 'lyr2'", "available: fc1"],
        None,
    ),
    (
        "unknown-plan",
        ["analyze", "--ckpt", "{pair}", "--plans", "full,singel"],
        ["--plans: 'singel' is not one of full, single"],
        None,
    ),
    (
        "alpha-above-one",
        ["analyze", "--ckpt", "{pair}", "--alphas", "0,0.5,1.5"],
        ["[0, 1]", "1.5"],
        None,
    ),
    (
        "alpha-below-zero",
        ["analyze", "--ckpt", "{pair}", "--alphas=-0.5,0,1"],
        ["[0, 1]", "-0.5"],
        None,
    ),
    ("one-alpha", ["analyze", "--ckpt", "{pair}", "--alphas", "0.5"], ["at least 2 alphas"], None),
    (
        "num-alphas-one",
        ["analyze", "--ckpt", "{pair}", "--num-alphas", "1"],
        ["--num-alphas must be at least 2", "got 1"],
        None,
    ),
    (
        "alphas-not-numbers",
        ["analyze", "--ckpt", "{pair}", "--alphas", "0,half,1"],
        ["--alphas", "numbers"],
        None,
    ),
    (
        "nan-and-inf-weights",
        ["analyze", "--ckpt-a", "{nan}", "--ckpt-b", "{single}"],
        ["NaN/Inf", "fc1.weight", "head.bias"],
        None,
    ),
    (
        "untrusted-class-in-checkpoint",
        ["analyze", "--ckpt", "{foreign}"],
        ["evil_package.Net", "--trust-class-paths"],
        None,
    ),
    (
        "dataset-missing-offline",
        [
            "analyze",
            "--ckpt",
            "{pair}",
            "--data",
            "lwlc.data.CIFAR10DataModule",
            "--data.init_args.root",
            "{tmp}/no_cifar",
        ],
        ["CIFAR-10 not found", "no_cifar"],
        None,
    ),
    (
        "out-not-writable",
        ["analyze", "--ckpt", "{pair}", "--out", "{a_file}/results"],
        ["cannot write to --out"],
        None,
    ),
    ("out-is-a-file", ["analyze", "--ckpt", "{pair}", "--out", "{a_file}"], ["is a file"], None),
    (
        "out-not-empty",
        ["analyze", "--ckpt", "{pair}", "--out", "{results}"],
        ["exists and is not empty", "--overwrite"],
        None,
    ),
    (
        "device-cuda-without-cuda",
        ["analyze", "--ckpt", "{pair}", "--device", "cuda"],
        ["--device cuda", "CUDA is not available"],
        _no_cuda,
    ),
    (
        "memory-budget-too-small",
        ["analyze", "--ckpt", "{pair}", "--memory-budget", "0.0001"],
        ["memory budget is 105 KiB", "--memory-budget"],
        None,
    ),
    (
        "memory-budget-nan",
        ["analyze", "--ckpt", "{pair}", "--memory-budget", "nan"],
        ["--memory-budget: expected a number, got 'nan'", "NaN and infinity"],
        None,
    ),
    (
        "memory-budget-inf",
        ["analyze", "--ckpt", "{pair}", "--memory-budget", "inf"],
        ["--memory-budget: expected a number, got 'inf'"],
        None,
    ),
    (
        "alphas-nan",
        ["analyze", "--ckpt", "{pair}", "--alphas", "0,nan,1"],
        ["alphas must be numbers in [0, 1]", "nan (not a number)"],
        None,
    ),
    (
        "merge-alpha-nan",
        ["merge", "--ckpt", "{pair}", "--alpha", "nan", "--out", "{tmp}/out/m.ckpt"],
        ["--alpha: expected a number, got 'nan'"],
        None,
    ),
    (
        "different-dtypes",
        ["analyze", "--ckpt-a", "{single}", "--ckpt-b", "{double}"],
        ["dtype mismatch at 'fc2.weight'", "torch.float32 vs B torch.float64"],
        None,
    ),
    (
        "merge-different-dtypes",
        ["merge", "--ckpt-a", "{single}", "--ckpt-b", "{double}", "--out", "{tmp}/out/m.ckpt"],
        ["dtype mismatch at 'fc2.weight'"],
        None,
    ),
    (
        "merge-nan-weights",
        ["merge", "--ckpt-a", "{single}", "--ckpt-b", "{nan_state}", "--out", "{tmp}/out/m.pt"],
        ["model B has NaN/Inf weights in: fc1.weight"],
        None,
    ),
    (
        "model-does-not-fit-the-data",
        ["analyze", "--ckpt-a", "{wide_input}", "--ckpt-b", "{wide_input}"]
        + ["--model", "lwlc.models.MLP", "--model.init_args.in_features", "784"]
        + ["--model.init_args.width", "32", "--data", "lwlc.data.DigitsDataModule"],
        ["model does not fit the data", "fc1 Linear (takes 784 features)", "shape (1, 8, 8)"],
        None,
    ),
    (
        "several-ckpts-a-bad-one-last",
        ["analyze", "--ckpt", "{single}", "{single_copy}", "{truncated}"],
        ["truncated.ckpt", "truncated or corrupted"],
        None,
    ),
    (
        "several-ckpts-of-other-shapes",
        ["analyze", "--ckpt", "{single}", "{single_copy}", "{narrow}"],
        ["narrow.pt (B) differ", "shape mismatch at 'fc1.weight'"],
        None,
    ),
    (
        "fit-single-network-ckpt-for-a-pair",
        [*FIT, "--ckpt_path", "{single}"],
        ["holds one network, but your config trains a pair"],
        None,
    ),
    (
        "fit-ckpt-path-of-other-shapes",
        [*FIT, "--ckpt_path", "{no_hparams}", "--model.init_args.model.init_args.width", "64"],
        ["--ckpt_path does not fit", "net_a.fc1.weight is (128, 64) in the checkpoint"],
        None,
    ),
    (
        "validate-ckpt-path-of-other-layers",
        ["validate", *FIT[1:], "--ckpt_path", "{no_hparams}"]
        + ["--model.init_args.model.init_args.depth", "3"],
        ["--ckpt_path does not fit", "net_a.fc3.weight is only in the model"],
        None,
    ),
    (
        "batch-size-zero",
        ["analyze", "--ckpt", "{pair}", "--batch-size", "0"],
        ["--batch-size must be a whole number >= 1, got 0"],
        None,
    ),
    (
        "unknown-option",
        ["analyze", "--ckpt", "{pair}", "--alpha", "0,1"],
        ["unrecognized arguments: --alpha 0,1"],
        None,
    ),
    (
        "fit-invalid-yaml",
        ["fit", "--config", "{yaml}", "--trainer.default_root_dir", "{tmp}"],
        ["invalid configuration"],
        None,
    ),
    (
        "fit-unknown-config-key",
        [*FIT, "--model.init_args.init_sed_a", "3"],
        ["invalid configuration", "init_sed_a"],
        None,
    ),
    (
        "fit-unknown-key-in-yaml",
        [*FIT, "--config", "{unknown_key}"],
        ["invalid configuration", "max_epoch"],
        None,
    ),
    (
        "fit-gpu-without-cuda",
        [*FIT, "--trainer.accelerator", "gpu"],
        ["--trainer.accelerator gpu", "CUDA is not available"],
        _no_cuda,
    ),
    (
        "fit-missing-ckpt-path",
        [*FIT, "--ckpt_path", "{root}/nowhere.ckpt"],
        ["nowhere.ckpt", "does not exist"],
        None,
    ),
    (
        "fit-truncated-ckpt-path",
        [*FIT, "--ckpt_path", "{truncated}"],
        ["truncated or corrupted"],
        None,
    ),
    (
        "validate-directory-ckpt-path",
        ["validate", *FIT[1:], "--ckpt_path", "{root}"],
        ["is a directory"],
        None,
    ),
    (
        "fit-untrusted-class-in-ckpt",
        [*FIT, "--ckpt_path", "{foreign}"],
        ["evil_package.Net", "in your own config"],
        None,
    ),
    (
        "fit-dataset-missing-offline",
        [
            "fit",
            "--config",
            str(CONFIGS / "cifar10_vgg.yaml"),
            "--trainer.default_root_dir",
            "{tmp}",
            "--trainer.accelerator",
            "cpu",
            "--trainer.precision",
            "32-true",
            "--data.init_args.root",
            "{tmp}/no_cifar",
        ],
        ["CIFAR-10 not found"],
        None,
    ),
    # ---- a checkpoint's saved config names code: refused before anything is imported
    (
        "import-analyze-yaml-in-a-string",
        ["analyze", "--ckpt", "{evil_yaml_string}"],
        [*VOUCH_MODEL, "modules (a string holding YAML)[0].class_path"],
        None,
    ),
    (
        "import-analyze-json-in-a-string",
        ["analyze", "--ckpt", "{evil_json_string}"],
        VOUCH_MODEL,
        None,
    ),
    (
        "import-analyze-string-naming-a-yaml-file",
        ["analyze", "--ckpt", "{evil_yaml_file}"],
        VOUCH_MODEL,
        None,
    ),
    (
        "import-analyze-quoted-name-in-a-list",
        ["analyze", "--ckpt", "{evil_quoted_name}"],
        VOUCH_MODEL,
        None,
    ),
    (
        "import-analyze-yaml-file-naming-itself",
        ["analyze", "--ckpt", "{evil_yaml_file_naming_itself}"],
        ["more than 64 levels deep", "--trust-class-paths"],
        None,
    ),
    (
        "import-analyze-instantiator",
        ["analyze", "--ckpt", "{evil_instantiator}"],
        ["evilmod.inst", "_instantiator", "--trust-class-paths"],
        None,
    ),
    (
        "import-analyze-data-side",
        ["analyze", "--ckpt-a", "{evil_data}", "--ckpt-b", "{single}"],
        ["evilmod.EvilNet", "saved data config", "--data"],
        None,
    ),
    (
        "import-merge-yaml-in-a-string",
        ["merge", "--ckpt", "{evil_yaml_string}", "--out", "{tmp}/out/m.ckpt"],
        VOUCH_MODEL,
        None,
    ),
    (
        "import-merge-instantiator",
        ["merge", "--ckpt", "{evil_instantiator}", "--out", "{tmp}/out/m.ckpt"],
        ["evilmod.inst", "_instantiator"],
        None,
    ),
    (
        "import-fit-yaml-in-a-string",
        [*FIT, "--ckpt_path", "{evil_yaml_string}"],
        ["evilmod.EvilNet", "in your own config"],
        None,
    ),
    (
        "import-fit-json-in-a-string",
        [*FIT, "--ckpt_path", "{evil_json_string}"],
        ["evilmod.EvilNet", "in your own config"],
        None,
    ),
    (
        "import-validate-string-naming-a-yaml-file",
        ["validate", *FIT[1:], "--ckpt_path", "{evil_yaml_file}"],
        ["evilmod.EvilNet", "in your own config"],
        None,
    ),
    # ---- bad data: which split, which sample, what to do
    (
        "data-label-10-analyze",
        ["analyze", "--ckpt", "{pair}", *FILE_DATA, "{label_10}"],
        ["split 'test'", "sample 7 has label 10", "10 classes 0..9", "fix the labels"],
        None,
    ),
    (
        "data-label-10-fit",
        [*FIT, *FILE_DATA, "{label_10}"],
        ["split 'test'", "sample 7 has label 10"],
        None,
    ),
    (
        "data-label-minus-3-analyze",
        ["analyze", "--ckpt", "{pair}", *FILE_DATA, "{label_minus_3}"],
        ["split 'train'", "sample 3 has label -3"],
        None,
    ),
    (
        "data-label-minus-3-fit",
        [*FIT, *FILE_DATA, "{label_minus_3}"],
        ["split 'train'", "sample 3 has label -3"],
        None,
    ),
    (
        "data-nan-input-analyze",
        ["analyze", "--ckpt", "{pair}", *FILE_DATA, "{nan_input}"],
        ["split 'train'", "sample 5 has a nan input", "NaN/Inf"],
        None,
    ),
    (
        "data-nan-input-fit",
        [*FIT, *FILE_DATA, "{nan_input}"],
        ["split 'train'", "sample 5 has a nan input"],
        None,
    ),
    (
        "data-inf-input-analyze",
        ["analyze", "--ckpt", "{pair}", *FILE_DATA, "{inf_input}"],
        ["split 'test'", "sample 9 has a -inf input"],
        None,
    ),
    (
        "data-inf-input-fit",
        [*FIT, *FILE_DATA, "{inf_input}"],
        ["split 'test'", "sample 9 has a -inf input"],
        None,
    ),
    (
        "data-empty-split-analyze",
        ["analyze", "--ckpt", "{pair}", *FILE_DATA, "{empty_test}"],
        ["split 'test'", "has no samples"],
        None,
    ),
    (
        "data-empty-split-fit",
        [*FIT, *FILE_DATA, "{empty_test}"],
        ["split 'test'", "has no samples"],
        None,
    ),
    (
        "data-val-split-of-no-samples",
        [
            "analyze",
            "--ckpt",
            "{pair}",
            "--splits",
            "val",
            "--data",
            "lwlc.data.DigitsDataModule",
            "--data.init_args.val_size",
            "0",
        ],
        ["split 'val'", "has no samples", "--splits"],
        None,
    ),  # fmt: skip
    # ---- one writer per folder: another live process holds the lock
    (
        "lock-analyze-same-out",
        ["analyze", "--ckpt", "{pair}", "--out", "{tmp}/held"],
        ["{tmp}/held is being written by process", "lwlc analyze", "/.lwlc.lock"],
        hold("{tmp}/held"),
    ),
    (
        "lock-analyze-resume-while-another-writes",
        ["analyze", "--ckpt", "{pair}", "--out", "{tmp}/held", "--resume"],
        ["{tmp}/held is being written by process"],
        hold("{tmp}/held"),
    ),
    (
        "lock-fit-run-folder",
        FIT,
        ["is being written by process"],
        hold("{tmp}"),
    ),
    (
        "lock-merge-out",
        ["merge", "--ckpt", "{pair}", "--out", "{tmp}/held/m.ckpt"],
        ["{tmp}/held/m.ckpt is being written by process"],
        hold("{tmp}/held/m.ckpt", "file"),
    ),
    (
        "lock-plot-out",
        ["plot", "{pair_run}", "--out", "{tmp}/held"],
        ["{tmp}/held is being written by process"],
        hold("{tmp}/held"),
    ),
    # ---- smaller
    ("alphas-empty", ["analyze", "--ckpt", "{pair}", "--alphas", ""], ["at least 2 alphas"], None),
    (
        "alphas-empty-list",
        ["analyze", "--ckpt", "{pair}", "--alphas", "[]"],
        ["at least 2 alphas"],
        None,
    ),
    (
        "hf-empty-safetensors",
        ["analyze", "--ckpt-a", "{hf_empty}", "--ckpt-b", "{hf_empty}"],
        ["hf_empty/model.safetensors is empty (0 bytes)"],
        None,
    ),
    (
        "hf-damaged-safetensors",
        ["analyze", "--ckpt-a", "{hf_bad_header}", "--ckpt-b", "{hf_bad_header}"],
        ["model.safetensors is not a readable safetensors file", "re-export it"],
        None,
    ),
]


def format_names(files: dict[str, Path], tmp_path: Path) -> dict[str, str]:
    names = {k: str(v) for k, v in files.items()} | {"tmp": str(tmp_path)}
    return names | {"pair_run": str(files["pair"].parent.parent)}


@pytest.fixture
def evil_on_path(files: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """``evilmod`` importable (as a stranger's package would be); yields the file its import
    writes, and forgets the module again if a test imported it."""
    monkeypatch.syspath_prepend(str(files["root"] / "site"))
    yield files["root"] / "site" / "IMPORTED"
    sys.modules.pop(EVIL, None)


@pytest.mark.parametrize(
    ("argv", "fragments", "setup"), [c[1:] for c in BATTERY], ids=[c[0] for c in BATTERY]
)
def test_bad_input_is_one_error_line_and_changes_nothing(
    files, evil_on_path, tmp_path, capsys, monkeypatch, request, argv, fragments, setup
):
    names = format_names(files, tmp_path)
    if setup is not None:
        setup(SimpleNamespace(monkeypatch=monkeypatch, names=names, request=request))
    argv = [a.format(**names) for a in argv]
    if argv[0] == "analyze" and "--out" not in argv:
        argv += ["--out", str(tmp_path / "out")]
    before = digests(files["root"])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert "Traceback" not in err
    assert not evil_on_path.exists() and EVIL not in sys.modules, "evilmod was imported"
    # lines that say "error" (outside the paths they name: pytest's folders are named after
    # this test, and W&B lists its run folder)
    lines = [
        line
        for line in err.splitlines()
        if "error" in " ".join(w for w in line.split() if "/" not in w).lower()
    ]
    assert len(lines) == 1 and lines[0].startswith("lwlc: error: "), err
    for fragment in fragments:
        assert fragment.format(**names) in lines[0], lines[0]
    assert digests(files["root"]) == before, "an input or earlier result was changed"
    assert not (tmp_path / "out").exists() and not (tmp_path / "checkpoints").exists()


# ------------------------------------------------------------------ what the refusals protect
def test_the_hostile_checkpoint_really_imports_evilmod_when_trusted(files, evil_on_path, capsys):
    """--trust-class-paths hands the saved config to jsonargparse: evilmod is imported, so the
    refusals above are refusals of a live payload."""
    out = files["root"] / "trusted_out"
    try:
        with pytest.raises(SystemExit):
            main(["analyze", "--ckpt", str(files["evil_yaml_string"]), "--trust-class-paths",
                  "--out", str(out), "--no-plots"])  # fmt: skip
        assert evil_on_path.exists() and EVIL in sys.modules
    finally:
        evil_on_path.unlink(missing_ok=True)
        for cache in (files["root"] / "site").glob("__pycache__"):
            for f in cache.iterdir():
                f.unlink()
            cache.rmdir()


# ------------------------------------------------------------------ stages that load are measured
def _save(state: dict[str, torch.Tensor], path: Path) -> Path:
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    return path


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
@pytest.mark.parametrize("batchnorm", [False, True], ids=["plain", "batchnorm"])
def test_a_sequential_that_flattens_in_its_forward_is_measured_exactly(
    tmp_path, capsys, batchnorm, suffix
):
    """Its children alone cannot run (the first Linear gets 8x8 images): the stages are checked
    against its forward, fx cuts replace them, and every point equals the naive loop."""
    x, y = DigitsDataModule().tensors("test", 50)
    states = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        net = FlatMLP(batchnorm)
        if batchnorm:  # running statistics that differ between the two networks
            net.train()(x * (1 + seed))
        states.append({k: v.clone() for k, v in net.state_dict().items()})
    paths = [_save(s, tmp_path / f"{n}{suffix}") for n, s in zip("ab", states, strict=True)]
    out = tmp_path / "out"
    main(["analyze", "--ckpt-a", str(paths[0]), "--ckpt-b", str(paths[1]), "--model",
          "battery.FlatMLP", "--model.init_args.batchnorm", str(batchnorm).lower(), "--data",
          "lwlc.data.DigitsDataModule", "--plans", "full,single", "--alphas", "0,0.3,1",
          "--max-samples", "50", "--out", str(out), "--no-plots"])  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stages"]["count"] > 1
    assert "the sequential children differ from its forward" in summary["stages"]["how"]
    assert summary["stages"]["how"] in capsys.readouterr().out
    keys = {g["name"]: set(g["keys"]) for g in summary["layers"]}
    curves = [r.split(",") for r in (out / "curves.csv").read_text().splitlines()[1:]]
    assert len(curves) == (1 + 2 * len(keys)) * 3
    model = FlatMLP(batchnorm)
    for plan, group, rest, _split, alpha, loss, acc in curves:
        chosen = set().union(*keys.values()) if plan == "full" else keys[group]
        state = naive_state(states[0], states[1], chosen, float(alpha), rest)
        want_loss, want_acc = naive_eval(model, state, x, y)
        assert float(loss) == pytest.approx(want_loss, abs=1e-6), (plan, group, rest, alpha)
        assert float(acc) == pytest.approx(want_acc, abs=1e-6)


# ------------------------------------------------------------------ one writer per folder
def test_the_lock_of_a_dead_process_is_taken_over(files, tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "out"
    out.mkdir()
    stale = {"pid": dead.pid, "host": os.uname().nodename, "command": "lwlc analyze"}
    (out / ".lwlc.lock").write_text(json.dumps(stale) + "\n")
    main(["analyze", "--ckpt", str(files["pair"]), "--plans", "full", "--max-samples", "40",
          "--out", str(out), "--no-plots", "--resume"])  # fmt: skip
    assert json.loads((out / "summary.json").read_text())["status"] == "complete"
    assert not (out / ".lwlc.lock").exists()  # released when the run ended


def test_plot_removes_the_temporary_files_a_killed_plot_left(files, tmp_path, capsys):
    out = tmp_path / "figures"
    main(["plot", str(files["pair"].parent.parent), "--out", str(out)])
    drawn = sorted(p.name for p in out.iterdir())
    left = [out / f".{name}.k1ll3d.tmp" for name in drawn[:2]]
    for stray in left:  # what a SIGKILL between writing and renaming leaves
        stray.write_bytes(b"half a figure")
    main(["plot", str(files["pair"].parent.parent), "--out", str(out)])
    assert sorted(p.name for p in out.iterdir()) == drawn
    assert all(f"removed {stray}" in capsys.readouterr().err for stray in left[:1])


@pytest.mark.slow
def test_of_two_analyses_started_at_once_on_one_folder_one_is_refused(files, tmp_path):
    out = tmp_path / "same"
    argv = [sys.executable, "-m", "lwlc.commands.cli", "analyze", "--ckpt", str(files["pair"]),
            "--out", str(out), "--no-plots", "--num-alphas", "21"]  # fmt: skip
    procs = [
        subprocess.Popen(
            argv,
            cwd=REPO_ROOT,
            env=lwlc_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for _ in range(2)
    ]
    done = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    assert sorted(code for code, _ in done) == [0, 2], done
    refused = next(err for code, err in done if code == 2)
    assert f"{out} is being written by process" in refused and "Traceback" not in refused
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "complete" and not (out / ".lwlc.lock").exists()
    assert math.isfinite(float(summary["wall_time_s"]))
