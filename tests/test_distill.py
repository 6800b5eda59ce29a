"""Distillation while the slim model trains: the loss is the documented one, weight 0 trains
exactly what no distillation trains, the teacher is chosen as documented, and mistakes are
one line."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from helpers import quick_args, training_time_strategies
from safetensors.torch import load_file

from compresskit.cli import cli
from compresskit.errors import ConfigError
from compresskit.testing import write_tiny_checkpoint, write_tiny_sentiment
from compresskit.train.distill import DistillOptions, distillation_loss

FAST = ["--epochs", "1", "--batch-size", "16", "--lr", "5e-3", "--max-seq-len", "16"]


def prune(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["prune", *args, "--no-progress"])
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def fine_tuned(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(dense checkpoint without a head, its classifier fine-tuned on the tiny task, data);
    no dropout, so training is a function of the data order alone."""
    root = tmp_path_factory.mktemp("distill")
    model = write_tiny_checkpoint(root / "model", dropout=0.0)
    data = write_tiny_sentiment(root / "data")
    code, output = prune(
        *("--strategy", "none", "--model", str(model), "--task", "sst2", "--data", str(data)),
        *FAST,
        *("--output", str(root / "teacher")),
    )
    assert code == 0, output
    return model, root / "teacher", data


def report(folder: Path) -> dict:
    return json.loads((folder / "report.json").read_text())


# --- the loss ----------------------------------------------------------------------------------
def test_the_loss_is_the_documented_one():
    torch.manual_seed(0)
    s, t = torch.randn(5, 3), torch.randn(5, 3)
    hidden_s = [torch.randn(5, 4, 6) for _ in range(3)]
    hidden_t = [torch.randn(5, 4, 6) for _ in range(3)]
    mask = torch.ones(5, 4, dtype=torch.long)
    mask[1:, 2:] = 0  # padding: no hidden-state loss there
    task_loss = torch.tensor(0.7)
    options = DistillOptions(temperature=3.0, weight=0.25, hidden_weight=0.5)
    got = distillation_loss(
        SimpleNamespace(logits=s, hidden_states=hidden_s),
        SimpleNamespace(logits=t, hidden_states=hidden_t),
        task_loss,
        mask,
        options,
    )
    p_t, p_s = F.softmax(t / 3, -1), F.softmax(s / 3, -1)
    kl = (p_t * (p_t.log() - p_s.log())).sum(-1).mean()
    real = mask.bool()
    mse = torch.stack(
        [((a - b)[real] ** 2).mean() for a, b in zip(hidden_s, hidden_t, strict=True)]
    ).mean()
    want = 0.75 * task_loss + 0.25 * 9 * kl + 0.5 * mse
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"temperature": 0.0}, "distill_temperature must be > 0"),
        ({"weight": 1.5}, r"distill_weight must be in \[0, 1\]"),
        ({"hidden_weight": -1.0}, "distill_hidden must be >= 0"),
        ({"enabled": False, "teacher": "t"}, "drop --no-distill"),
    ],
)
def test_bad_options_are_one_line(options, message):
    with pytest.raises(ConfigError, match=message):
        DistillOptions(**options)


# --- training ------------------------------------------------------------------------------------
def test_weight_zero_trains_exactly_what_no_distillation_trains(fine_tuned, tmp_path):
    """The teacher runs in eval mode under no_grad and draws no random numbers: with weight 0
    the loss is the task's, so the weights must be bit for bit those of a run without it."""
    _, teacher, data = fine_tuned
    common = [
        *("--strategy", "magnitude", "--heads-ratio", "0.5", "--model", str(teacher)),
        *("--task", "sst2", "--data", str(data), *FAST),
    ]
    for name, extra in (("off", ["--no-distill"]), ("zero", ["--distill-weight", "0"])):
        code, output = prune(*common, *extra, "--output", str(tmp_path / name))
        assert code == 0, output
    assert report(tmp_path / "off")["distillation"] is None
    assert report(tmp_path / "zero")["distillation"]["teacher"] == "the model before pruning"
    off = load_file(tmp_path / "off" / "model.safetensors")
    zero = load_file(tmp_path / "zero" / "model.safetensors")
    assert all(torch.equal(off[k], zero[k]) for k in off)


def test_a_fine_tuned_model_teaches_by_default_and_changes_the_training(fine_tuned, tmp_path):
    _, teacher, data = fine_tuned
    common = [
        *("--strategy", "magnitude", "--heads-ratio", "0.5", "--model", str(teacher)),
        *("--task", "sst2", "--data", str(data), *FAST),
    ]
    code, output = prune(*common, "--distill-hidden", "1", "--output", str(tmp_path / "on"))
    assert code == 0, output
    assert "distilled from the model before pruning (temperature 2, weight 0.5" in output
    code, output = prune(*common, "--no-distill", "--output", str(tmp_path / "off"))
    assert code == 0, output
    on = load_file(tmp_path / "on" / "model.safetensors")
    off = load_file(tmp_path / "off" / "model.safetensors")
    assert any(not torch.equal(on[k], off[k]) for k in on)


@pytest.mark.parametrize("strategy", ["random", *training_time_strategies()])
def test_every_kind_of_strategy_distils_from_a_given_teacher(fine_tuned, tmp_path, strategy):
    model, teacher, data = fine_tuned
    args = quick_args(strategy)
    code, output = prune(
        *args,
        *("--heads-ratio", "0.5", "--model", str(model), "--teacher", str(teacher)),
        *("--task", "sst2", "--data", str(data), *FAST, "--output", str(tmp_path / "out")),
    )
    assert code == 0, output
    assert report(tmp_path / "out")["distillation"]["teacher"] == str(teacher)


def test_a_headless_checkpoint_does_not_teach_unless_asked(fine_tuned, tmp_path):
    model, _, data = fine_tuned
    common = [
        *("--strategy", "magnitude", "--heads-ratio", "0.5", "--model", str(model)),
        *("--task", "sst2", "--data", str(data), *FAST),
    ]
    code, output = prune(*common, "--output", str(tmp_path / "auto"))
    assert code == 0, output
    assert report(tmp_path / "auto")["distillation"] is None
    code, output = prune(*common, "--distill", "--output", str(tmp_path / "asked"))
    assert code == 1 and output.count("\n") == 1
    assert "is not a classifier fine-tuned on the task, so it cannot teach" in output
    assert not (tmp_path / "asked").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--strategy", "none", "--distill"], "distillation is for pruned models"),
        (["--strategy", "magnitude", "--teacher", "MODEL"], "is a BertModel: a teacher is a"),
        (["--strategy", "magnitude", "--teacher", "NOWHERE"], "NOWHERE"),
    ],
)
def test_teacher_mistakes_are_one_line(fine_tuned, tmp_path, extra, message):
    model, teacher, data = fine_tuned
    extra = [
        str(model) if a == "MODEL" else str(tmp_path / "nowhere") if a == "NOWHERE" else a
        for a in extra
    ]
    code, output = prune(
        *extra,
        *("--model", str(teacher), "--task", "sst2", "--data", str(data), *FAST),
        *("--output", str(tmp_path / "out")),
    )
    assert code == 1 and output.count("\n") == 1, output
    assert message.replace("NOWHERE", "nowhere") in output
    assert not (tmp_path / "out").exists()


def test_a_teacher_with_other_labels_is_refused(fine_tuned, tmp_path):
    model, _, _ = fine_tuned
    three = tmp_path / "three"
    three.mkdir()
    (three / "train.tsv").write_text(
        "sentence\tlabel\n" + "".join(f"the movie was good\t{i % 3}\n" for i in range(30))
    )
    (three / "dev.tsv").write_text(
        "sentence\tlabel\n" + "".join(f"the movie was bad\t{i % 3}\n" for i in range(9))
    )
    code, output = prune(
        *("--strategy", "none", "--model", str(model), "--task", "classification"),
        *("--data", str(three), *FAST, "--output", str(tmp_path / "teacher3")),
    )
    assert code == 0, output
    _, _, data = fine_tuned
    code, output = prune(
        *("--strategy", "magnitude", "--heads-ratio", "0.5", "--model", str(model)),
        *("--teacher", str(tmp_path / "teacher3"), "--task", "sst2", "--data", str(data)),
        *FAST,
        *("--output", str(tmp_path / "out")),
    )
    assert code == 1 and "has 3 labels, the data 2" in output
