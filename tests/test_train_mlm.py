"""Masked-LM pre-training (`--task mlm`): a tiny BERT from scratch searches with every
training-time strategy, decides at the same step every run, continues for the rest of the step
budget, and the slim model it saves loads and fine-tunes on a classification task."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner
from conftest import ARCHITECTURES, batch, tiny_model
from helpers import assert_pruned_equals_masked, training_time_strategies

import compresskit
from compresskit.cli import cli
from compresskit.io import MANIFEST
from compresskit.registry import get_strategy_class
from compresskit.testing import write_tiny_sentiment, write_tiny_text, write_tiny_tokenizer
from compresskit.train.mlm_model import classifier_from_pretrained, masked_positions_loss
from compresskit.train.run import REPORT, TrainingOptions, TrainJob, TrainReport, run_training

SIZE = "layers=2,hidden=32,heads=4,ffn=16"
BUDGET = 40
TRAINING = TrainingOptions(
    max_steps=BUDGET, batch_size=16, lr=5e-3, max_seq_len=16, progress=False, eval_every=10
)
RATIOS = {"heads_ratio": 0.25, "ffn_ratio": 0.5}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(300 lines of text, tokenizer folder)."""
    root = tmp_path_factory.mktemp("corpus")
    write_tiny_tokenizer(root / "tokenizer")
    return write_tiny_text(root / "text.txt"), root / "tokenizer"


def scratch_job(corpus: tuple[Path, Path], output: Path, strategy: str, **changes: Any) -> TrainJob:
    text, tokenizer = corpus
    job = TrainJob(
        model=None,
        strategy=strategy,
        task="mlm",
        data=str(text),
        output=output,
        options=RATIOS | dict(getattr(get_strategy_class(strategy), "quick_options", {})),
        training=TRAINING,
        config=SIZE,
        tokenizer=str(tokenizer),
    )
    return replace(job, **changes)


@pytest.fixture(scope="module", params=training_time_strategies())
def pretrained(
    corpus: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory, request: Any
) -> list[TrainReport]:
    """Two identical runs of one training-time strategy."""
    root = tmp_path_factory.mktemp("pretrained")
    return [run_training(scratch_job(corpus, root / f"run{i}", request.param)) for i in range(2)]


def test_the_search_decides_at_the_same_step_with_the_same_plan_every_run(
    pretrained: list[TrainReport],
) -> None:
    first, second = pretrained
    assert first.search is not None and second.search is not None
    assert first.search == second.search
    manifests = [json.loads((r.job.output / MANIFEST).read_text()) for r in pretrained]
    assert manifests[0]["layers"] == manifests[1]["layers"]
    assert first.metrics == second.metrics


def test_the_slim_model_trains_for_the_rest_of_the_step_budget(
    pretrained: list[TrainReport],
) -> None:
    report = pretrained[0]
    assert report.search is not None and report.search.decided_at is not None
    assert report.search.decided_at < BUDGET
    assert report.steps == {"search": report.search.steps, "train": BUDGET - report.search.steps}


def test_report_has_held_out_loss_perplexity_and_a_curve_over_the_whole_budget(
    pretrained: list[TrainReport],
) -> None:
    report = json.loads((pretrained[0].job.output / REPORT).read_text())
    loss = report["metrics"]["mlm_loss"]
    assert report["primary_metric"] == "mlm_loss"
    assert report["metrics"]["perplexity"] == pytest.approx(math.exp(loss))
    assert report["model"] is None and report["config"] == SIZE
    steps = [p["step"] for p in report["curve"]]
    assert steps == sorted(steps) and steps[-1] == BUDGET
    assert report["curve"][-1]["loss"] == pytest.approx(loss)
    assert [p["seconds"] for p in report["curve"]] == sorted(p["seconds"] for p in report["curve"])


def test_the_slim_masked_lm_loads_with_its_pruned_shapes(pretrained: list[TrainReport]) -> None:
    model = compresskit.load(pretrained[0].job.output)
    assert type(model).__name__ == "BertForMaskedLM"
    plan = compresskit.PruningPlan.of_model(model)
    assert plan.heads_per_layer == [3, 3] and sum(plan.ffn_per_layer) == 16
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight


def test_a_pre_trained_slim_model_fine_tunes_on_a_classification_task(
    pretrained: list[TrainReport], tmp_path: Path
) -> None:
    slim = pretrained[0].job.output
    job = TrainJob(
        model=str(slim),
        strategy="none",
        task="sst2",
        data=str(write_tiny_sentiment(tmp_path / "sst2")),
        output=tmp_path / "sst2-out",
        training=TrainingOptions(epochs=1, batch_size=16, lr=5e-3, max_seq_len=16, progress=False),
    )
    report = run_training(job)
    assert 0 <= report.metrics["accuracy"] <= 1
    classifier = compresskit.load(job.output)
    assert type(classifier).__name__ == "BertForSequenceClassification"
    plans = [compresskit.PruningPlan.of_model(m) for m in (classifier, compresskit.load(slim))]
    assert plans[0] == plans[1]


def test_the_classifier_starts_from_the_pre_trained_encoder_exactly(
    pretrained: list[TrainReport],
) -> None:
    slim = compresskit.load(pretrained[0].job.output)
    classifier = classifier_from_pretrained(slim, {0: "neg", 1: "pos"}).eval()
    inputs = {"input_ids": torch.randint(5, 26, (2, 9)), "attention_mask": torch.ones(2, 9)}
    with torch.no_grad():
        want = slim.base_model(**inputs).last_hidden_state
        got = classifier.base_model(**inputs).last_hidden_state
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_pruning_a_masked_lm_matches_the_masked_dense_model_and_keeps_the_decoder_tied(
    tmp_path: Path,
) -> None:
    model = tiny_model("bert", "BertForMaskedLM")
    model.config.tie_word_embeddings = True
    model.tie_weights()
    plan = compresskit.get_strategy("random", heads_ratio=0.5, ffn_ratio=0.4).plan(model)
    pruned = assert_pruned_equals_masked(model, plan, batch(model))  # compares the MLM logits
    embeddings = pruned.bert.embeddings.word_embeddings.weight
    assert pruned.cls.predictions.decoder.weight is embeddings
    compresskit.save(pruned, tmp_path / "slim")
    loaded = compresskit.load(tmp_path / "slim")
    assert loaded.cls.predictions.decoder.weight is loaded.bert.embeddings.word_embeddings.weight
    inputs = batch(model)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).logits, pruned.eval()(**inputs).logits)


@pytest.mark.parametrize(
    ("model_type", "class_name"),
    [(t, c) for t, classes in ARCHITECTURES.items() for c in classes if c.endswith("MaskedLM")],
)
def test_the_loss_at_masked_positions_only_equals_the_models_own(
    model_type: str, class_name: str
) -> None:
    model = tiny_model(model_type, class_name)
    inputs = batch(model)
    labels = inputs["input_ids"].clone()
    labels[torch.rand(labels.shape, generator=torch.Generator().manual_seed(0)) > 0.3] = -100
    inputs["labels"] = labels
    want = model(**inputs).loss
    want.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    got = masked_positions_loss(model, inputs)
    got.backward()
    torch.testing.assert_close(got, want)
    for name, param in model.named_parameters():
        if name in grads:
            torch.testing.assert_close(param.grad, grads[name], msg=name)


# --- from the shell ------------------------------------------------------------------------------
def prune(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["prune", *args])
    return result.exit_code, result.output


def test_dense_pre_training_from_scratch_from_the_shell(
    corpus: tuple[Path, Path], tmp_path: Path
) -> None:
    text, tokenizer = corpus
    code, output = prune(
        *("--strategy", "none", "--task", "mlm", "--data", str(text), "--config", SIZE),
        *("--tokenizer", str(tokenizer), "--max-steps", "5", "--batch-size", "16"),
        *("--max-seq-len", "16", "--no-progress", "--output", str(tmp_path / "out")),
    )
    assert code == 0, output
    assert "held-out mlm_loss:" in output and "held-out perplexity:" in output
    assert json.loads((tmp_path / "out" / REPORT).read_text())["steps"] == {"train": 5}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "EMPTY"], "has 0 non-blank line(s)"),
        (["--data", "SHORT", "--max-seq-len", "64"], "fewer than one block of 62"),
        (["--config", "layers=2,hidden=30,heads=4,ffn=16"], "must be a multiple of heads"),
        (["--config", "layers=0,hidden=32,heads=4,ffn=16"], "layers must be an integer in"),
        (["--config", "layers=2,hidden=32,heads=4,ffn=999999"], "ffn must be an integer in"),
        (["--config", "layers=2,hidden=32"], "--config lacks heads, ffn"),
        (["--config", "layers=2,width=32"], "'width=32' is not one of"),
        (["--config", "layers=two,hidden=32,heads=4,ffn=16"], "layers must be an integer"),
        (["--model", "MODEL"], "not both"),
        (["--tokenizer", None], "--config needs --tokenizer"),
        (["--task", "sst2"], "use --task mlm"),
        (["--max-steps", "0"], "max_steps must be an integer >= 1"),
    ],
)
def test_bad_pre_training_input_gets_one_line_and_writes_nothing(
    args: list[str | None], message: str, corpus: tuple[Path, Path], tmp_path: Path
) -> None:
    text, tokenizer = corpus
    (tmp_path / "empty.txt").write_text("\n  \n")
    (tmp_path / "short.txt").write_text("the movie was good\nthe film was bad\n")
    base = {"--strategy": training_time_strategies()[0], "--task": "mlm", "--data": str(text)}
    base |= {"--config": SIZE, "--tokenizer": str(tokenizer), "--no-progress": ""}
    replaced = {
        "EMPTY": str(tmp_path / "empty.txt"),
        "SHORT": str(tmp_path / "short.txt"),
        "MODEL": str(tokenizer),
    }
    for flag, value in zip(args[::2], args[1::2], strict=True):
        assert flag is not None
        base[flag] = None if value is None else replaced.get(value, value)
    argv = [part for k, v in base.items() if v is not None for part in (k, v) if part]
    code, output = prune(*argv, "--output", str(tmp_path / "out"))
    assert code == 1, output
    assert output.startswith("Error: ") and output.count("\n") == 1, output
    assert message in output
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.run").exists()


def test_config_without_task_says_what_is_missing(
    corpus: tuple[Path, Path], tmp_path: Path
) -> None:
    code, output = prune(
        *("--strategy", "none", "--config", SIZE, "--tokenizer", str(corpus[1])),
        *("--output", str(tmp_path / "out")),
    )
    assert code == 1 and "--config, --tokenizer pre-train(s) a model: --task" in output


def test_a_classification_run_records_its_dev_loss_curve_too(
    tiny_task: tuple[Path, Path], tmp_path: Path
) -> None:
    model, data = tiny_task
    training = TrainingOptions(epochs=1, batch_size=16, lr=5e-3, max_seq_len=16, progress=False)
    report = run_training(
        TrainJob(
            str(model),
            "none",
            "sst2",
            str(data),
            tmp_path / "out",
            training=replace(training, eval_every=4),
        )
    )
    assert [p["step"] for p in report.curve] == [4, 8]
    assert all(p["stage"] == "train" and p["loss"] > 0 for p in report.curve)


def test_text_files_in_another_encoding_read_with_encoding(tmp_path):
    from compresskit.errors import ConfigError
    from compresskit.train.mlm_data import load_text

    path = tmp_path / "corpus.txt"
    path.write_bytes("".join(f"line {i} caf\xe9\n" for i in range(20)).encode("latin-1"))
    text = load_text(str(path), encoding="latin-1")
    assert all(line.endswith("caf\xe9") for line in text.train + text.held_out)
    with pytest.raises(ConfigError, match=r"corpus\.txt line 1 is not UTF-8 text"):
        load_text(str(path))
