"""Export a saved model (dense or pruned) to a folder that deploys on its own: model.onnx, the
tokenizer, config.json, compresskit.json and export.json. Every graph is checked against the
PyTorch model on real tokenised text before it is written: after export, after fusion
(`optimize`) and after int8 quantisation (`quantize`).

    report = export_onnx("out/model", "out/onnx", optimize=True)
    print(report.summary())
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from compresskit import __version__
from compresskit._json import dumps
from compresskit._optional import import_extra
from compresskit.arch import get_adapter
from compresskit.errors import (
    ConfigError,
    ExportError,
    ExportParityError,
    ModelFileError,
    UnsupportedModelError,
)
from compresskit.exporters import ort
from compresskit.exporters.evaluation import EvalSet, Evaluation, read_eval_set, score
from compresskit.io import MANIFEST
from compresskit.outputs import atomic_directory, claim_output, resolve_output
from compresskit.plan import PruningPlan
from compresskit.target import available_cores

logger = logging.getLogger(__name__)

FORMAT = "compresskit.onnx"
FORMAT_VERSION = 1
MODEL_FILE = "model.onnx"
EXPORT_MANIFEST = "export.json"

FP32_TOLERANCE = 1e-4
# int8 moves every weight by up to half a quantisation step, so outputs move by far more than
# fp32 rounding, and by amounts that depend on the model: any absolute bound is either loose
# enough to hide a wrong graph or tight enough to fail a right one (on SST-2-tuned MiniLM the
# largest logit moved by 0.75 while 98% of decisions held). What a deployed model must keep is
# its decisions, so int8 is checked against the fp32 graph by the share of decisions it keeps:
# the argmax of every logits output (a class per row or token, a start/end position per row),
# or, for hidden states, each real token whose vector keeps a cosine similarity >= 0.95 (base
# MiniLM: 0.967 at worst, 0.99 on average). The largest difference is measured and reported,
# and bounded only loosely (by the fp32 output's own largest magnitude) to catch a grossly
# broken graph.
INT8_MIN_AGREEMENT = 0.9
INT8_MIN_COSINE = 0.95
INT8_RELATIVE_TOLERANCE = 1.0

# Varied English sentences (lengths 3 to ~40 tokens) for the parity checks.
SAMPLE_TEXTS = (
    "Great movie!",
    "The service was slow, but the food more than made up for it.",
    "I would not recommend this product to anyone.",
    "Stock markets fell sharply on Tuesday after the central bank raised interest rates "
    "by half a percentage point, the largest increase in more than twenty years.",
    "Where is the nearest train station?",
    "She said she'd call back tomorrow.",
    "An absolutely dreadful, tedious and overlong film whose only redeeming feature is the "
    "soundtrack.",
    "ok",
)
MIN_SAMPLE_TEXTS = 4


# --- what each model class takes and gives -------------------------------------------------
@dataclass(frozen=True)
class OnnxSpec:
    """The graph's inputs and outputs for one model class."""

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    token_outputs: frozenset[str]  # outputs with a sequence axis: (batch, seq, ...)
    labelled: bool  # the logits are the classes of config.id2label


# class-name suffix -> (outputs, outputs with a sequence axis, labelled)
_HEADS: dict[str, tuple[tuple[str, ...], tuple[str, ...], bool]] = {
    "ForSequenceClassification": (("logits",), (), True),
    "ForTokenClassification": (("logits",), ("logits",), True),
    "ForMaskedLM": (("logits",), ("logits",), False),
    "ForQuestionAnswering": (("start_logits", "end_logits"), ("start_logits", "end_logits"), False),
    "ForPreTraining": (
        ("prediction_logits", "seq_relationship_logits"),
        ("prediction_logits",),
        False,
    ),
    "Model": (("last_hidden_state",), ("last_hidden_state",), False),
}


def onnx_spec(model: Any) -> OnnxSpec:
    """Inputs by model type, outputs by task head (the class name's suffix)."""
    adapter = get_adapter(model)  # UnsupportedModelError for a type without one
    name = type(model).__name__
    suffix = next((s for s in _HEADS if name.endswith(s)), None)
    if suffix is None:
        raise UnsupportedModelError(
            f"cannot export {name} to ONNX: supported heads are {', '.join(_HEADS)}"
        )
    outputs, token_outputs, labelled = _HEADS[suffix]
    return OnnxSpec(adapter.onnx_inputs, outputs, frozenset(token_outputs), labelled)


# --- the report ------------------------------------------------------------------------------
@dataclass(frozen=True)
class ParityCheck:
    """One comparison of a graph with its reference on one tokenised batch."""

    stage: str  # "export" | "optimize" | "quantize"
    max_abs_diff: float  # over real (non-padding) positions, worst output
    tolerance: float
    batch: int
    seq_len: int
    passed: bool
    worst_output: str
    agreement: float | None = None  # int8 only: share of decisions kept (see INT8_MIN_AGREEMENT)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "stage": self.stage,
            "max_abs_diff": self.max_abs_diff,
            "tolerance": self.tolerance,
            "batch": self.batch,
            "seq_len": self.seq_len,
            "passed": self.passed,
            "worst_output": self.worst_output,
        }
        if self.stage == "quantize":
            data |= {
                "reference": "onnx-fp32",
                "agreement": self.agreement,
                "min_agreement": INT8_MIN_AGREEMENT,
                "min_cosine": INT8_MIN_COSINE,
            }
        return data

    def line(self) -> str:
        text = (
            f"max|diff| {self.max_abs_diff:.2e} (tolerance {self.tolerance:.0e}) "
            f"at batch {self.batch} x seq {self.seq_len}"
        )
        if self.agreement is not None:
            text += f", {self.agreement:.1%} of decisions kept"
        return text + ("" if self.passed else "  FAILED")


@dataclass(frozen=True)
class ExportReport:
    """What `export_onnx` wrote and measured; `to_dict()` is export.json."""

    output: Path
    source: str
    architecture: str
    model_type: str
    spec: OnnxSpec
    opset: int
    max_length: int
    labels: list[str] | None
    heads_per_layer: list[int]
    ffn_per_layer: list[int]
    fusions: ort.FusionReport | None
    quantized: str | None
    parity: tuple[ParityCheck, ...]
    warnings: tuple[str, ...]
    evaluation: Evaluation | None = None
    model_bytes: int = 0
    versions: dict[str, str] = field(default_factory=dict)
    fusion_timing: dict[str, Any] | None = None  # fused against unfused, when checked

    @property
    def optimized(self) -> bool:
        return self.fusions is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "source": self.source,
            "architecture": self.architecture,
            "model_type": self.model_type,
            "inputs": list(self.spec.inputs),
            "outputs": list(self.spec.outputs),
            "opset": self.opset,
            "max_length": self.max_length,
            "labels": self.labels,
            "heads_per_layer": self.heads_per_layer,
            "ffn_per_layer": self.ffn_per_layer,
            "optimized": self.optimized,
            "fusions": self.fusions.to_dict() if self.fusions else None,
            "fusion_timing": self.fusion_timing,
            "quantized": self.quantized,
            "parity": [p.to_dict() for p in self.parity],
            "evaluation": self.evaluation.to_dict() if self.evaluation else None,
            "warnings": list(self.warnings),
            "model_bytes": self.model_bytes,
            "versions": self.versions,
        }

    def summary(self) -> str:
        """A few lines for people: files, parity per stage, fusions per layer, warnings."""
        done = ["optimized"] if self.optimized else []
        kind = ", ".join(done + ([self.quantized] if self.quantized else []))
        lines = [
            f"{self.architecture} -> {self.output}/{MODEL_FILE} "
            f"({_size(self.model_bytes)}, opset {self.opset}"
            f"{', ' + kind if kind else ''})",
            "parity:",
            *(f"  {p.stage:<9} {p.line()}" for p in self.parity),
        ]
        if self.fusions is not None:
            lines += ["fusions:", *_fusion_lines(self.fusions)]
        if self.evaluation is not None:
            lines += self.evaluation.lines()
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def _size(n_bytes: int) -> str:
    return f"{n_bytes / 1e6:.1f} MB" if n_bytes >= 100_000 else f"{n_bytes / 1e3:.1f} kB"


def _fusion_lines(fusions: ort.FusionReport) -> list[str]:
    def ops(counts: dict[str, int]) -> str:
        return ", ".join(f"{op} {n}" for op, n in counts.items()) or "none"

    lines = [
        f"  layer {i:>2} ({heads:>2} heads): {ops(counts)}"
        for i, (heads, counts) in enumerate(
            zip(fusions.heads_per_layer, fusions.per_layer, strict=True)
        )
    ]
    return [*lines, f"  outside layers:      {ops(fusions.outside_layers)}"]


# --- the export ------------------------------------------------------------------------------
def export_onnx(
    model_dir: str | Path,
    output: str | Path,
    *,
    optimize: bool = False,
    quantize: str | None = None,
    opset: int = 17,
    parity_tolerance: float = FP32_TOLERANCE,
    overwrite: bool = False,
    sample_texts: Sequence[str] | None = None,
    eval_data: str | Path | None = None,
    eval_task: str | None = None,
    speed_check: bool = True,
    threads: int | None = None,
) -> ExportReport:
    """Export a model folder (compresskit.save or plain transformers) to an ONNX folder.

    Args:
        optimize: fuse attention, LayerNorm and GELU with ORT's transformer optimizer, head
            counts read per layer; falls back to the unfused graph (with a warning in the
            report) when the fused graph cannot be proved right, fails parity or, with
            `speed_check`, runs slower than the unfused graph.
        speed_check: with `optimize`, time the fused and the unfused graph on this machine
            (interleaved, batch 1 and 32, sequence length 128 or the model's maximum, with
            `threads` intra-op threads, default the cores available) and keep the fused one
            only if it is faster at both: fusion must never make a model slower.
        quantize: "int8" for dynamic int8 weights (of the optimised graph if asked).
        parity_tolerance: largest |ONNX - PyTorch| allowed for float32 graphs, over real
            (non-padding) positions.
        sample_texts: texts the parity checks tokenise (at least 4); varied English by default.
        eval_data: labelled data (what the training pipeline's `data` takes); the task metric
            of the float32 graph and, with `quantize`, of the int8 graph is measured on its
            dev split and recorded in export.json. Sequence classifiers only.
        eval_task: the task of `eval_data`; by default the task in the model's
            compresskit.json.

    Raises:
        ExportParityError: a float32 graph differs from PyTorch by more than the tolerance,
            or the int8 graph fails its check.
    """
    texts = _check_options(quantize, opset, parity_tolerance, sample_texts)
    import_extra("onnxruntime", "ONNX export")  # before any work, as options are
    source, target = Path(model_dir), resolve_output(output)
    # Before the slow part, and never over the model being exported (outputs.claim_output).
    with claim_output(target, overwrite=overwrite, inputs=[source, eval_data]):
        model, tokenizer = _load_source(source)
        spec = onnx_spec(model)
        # Read the evaluation data before the slow part, so that a mistake in it costs nothing.
        eval_set = _eval_set(source, model, spec, eval_data, eval_task) if eval_data else None
        job = _Job(model, tokenizer, spec, texts, parity_tolerance)
        job.speed_check = (threads or available_cores()) if speed_check else None
        with atomic_directory(target, overwrite=overwrite) as folder:
            with tempfile.TemporaryDirectory(dir=folder) as work:
                graph = job.build(Path(work), optimize=optimize, quantize=quantize, opset=opset)
                if eval_set is not None:
                    job.evaluate(eval_set)
                shutil.copyfile(graph, folder / MODEL_FILE)
            _copy_deployment_files(source, tokenizer, folder)
            if not (folder / "tokenizer.json").is_file():
                job.warnings.append(
                    "the tokenizer has no tokenizer.json (a slow tokenizer): runtimes that read "
                    "tokenizer.json (compresskit.runtime) cannot use this folder"
                )
            report = job.report(source, target, opset, (folder / MODEL_FILE).stat().st_size)
            (folder / EXPORT_MANIFEST).write_text(dumps(report.to_dict()) + "\n", encoding="utf-8")
    for warning in report.warnings:
        logger.warning("%s", warning)
    return report


def _check_options(
    quantize: str | None, opset: int, tolerance: float, texts: Sequence[str] | None
) -> tuple[str, ...]:
    if quantize not in (None, "int8"):
        raise ConfigError(f"quantize={quantize!r} is not supported: use 'int8' or None")
    if not 14 <= opset <= 20:
        raise ConfigError(f"opset {opset} is not supported: use 14 to 20 (default 17)")
    if not tolerance > 0:
        raise ConfigError(f"parity_tolerance must be > 0, got {tolerance}")
    chosen = tuple(SAMPLE_TEXTS if texts is None else texts)
    if len(chosen) < MIN_SAMPLE_TEXTS or not all(isinstance(t, str) and t for t in chosen):
        raise ConfigError(
            f"sample_texts needs at least {MIN_SAMPLE_TEXTS} non-empty strings "
            "(a padded batch of different lengths)"
        )
    return chosen


def _load_source(source: Path) -> tuple[Any, Any]:
    """The model with eager attention (it exports a faster graph than sdpa:
    docs/library-pitfalls.md) and its tokenizer, which the exported folder must carry to deploy
    on its own."""
    from compresskit.loading import load_model_and_tokenizer

    if not (source / "config.json").is_file():
        raise ModelFileError(
            f"model folder {source} does not exist or has no config.json: give a folder "
            "written by compresskit.save or save_pretrained"
        )
    # The exported folder must deploy on its own, so it needs the model's tokenizer.
    model, tokenizer = load_model_and_tokenizer(str(source), require_tokenizer=True)
    model.set_attn_implementation("eager")
    return model.eval(), tokenizer


def _eval_set(
    source: Path, model: Any, spec: OnnxSpec, data: str | Path, task: str | None
) -> EvalSet:
    if not spec.labelled or "logits" in spec.token_outputs:
        raise ConfigError(
            f"eval_data (--eval-data) needs a sequence classifier; {source} holds a "
            f"{type(model).__name__}"
        )
    return read_eval_set(source, data, task, dict(model.config.id2label))


def _copy_deployment_files(source: Path, tokenizer: Any, folder: Path) -> None:
    tokenizer.save_pretrained(folder)
    for name in ("config.json", MANIFEST):
        if (source / name).is_file():
            shutil.copyfile(source / name, folder / name)


class _Job:
    """One export: the model, its parity batches and PyTorch's outputs on them, and what each
    stage measured."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        spec: OnnxSpec,
        texts: tuple[str, ...],
        tolerance: float,
    ) -> None:
        self.model, self.tokenizer, self.spec, self.tolerance = model, tokenizer, spec, tolerance
        self.max_length = _max_length(model, tokenizer)
        self.batches = _parity_batches(tokenizer, spec, texts, model, self.max_length)
        self.torch_outputs = [_torch_outputs(model, spec, b) for b in self.batches]
        self.checks: list[ParityCheck] = []
        self.warnings: list[str] = []
        self.fusions: ort.FusionReport | None = None
        self.quantized: str | None = None
        self.graphs: dict[str, Path] = {}  # float32 graph, and the int8 one if quantised
        self.evaluation: Evaluation | None = None
        self.speed_check: int | None = None  # threads to time fused against unfused with
        self.fusion_timing: dict[str, Any] | None = None

    def build(self, work: Path, *, optimize: bool, quantize: str | None, opset: int) -> Path:
        """Run the stages; return the path of the graph to deploy."""
        graph = work / "exported.onnx"
        _export_graph(self.model, self.spec, self.batches[0], graph, opset)
        self._check_fp32("export", graph, strict=True)
        if optimize:
            graph = self._optimize(graph, work / "optimized.onnx")
        self.graphs["fp32"] = graph
        if quantize == "int8":
            graph = self.graphs["int8"] = self._quantize(graph, work / "int8.onnx")
        return graph

    def evaluate(self, eval_set: EvalSet) -> None:
        """The task metric of every graph built, on the same examples."""
        scores = {
            stage: score(eval_set, self._classifier(path)) for stage, path in self.graphs.items()
        }
        self.evaluation = Evaluation(eval_set.task, eval_set.source, len(eval_set.texts), scores)

    def _classifier(self, graph: Path) -> Any:
        sess, vocab = ort.session(graph), int(self.model.config.vocab_size)

        def logits(texts: Sequence[str], pairs: Sequence[str] | None) -> np.ndarray:
            batch = _tokenise(self.tokenizer, self.spec, texts, vocab, self.max_length, pairs)
            return ort.run(sess, batch.feeds)["logits"]

        return logits

    def _check_fp32(self, stage: str, graph: Path, *, strict: bool) -> bool:
        sess = ort.session(graph)
        checks = [
            _fp32_check(stage, self.spec, ort.run(sess, b.feeds), ref, b, self.tolerance)
            for b, ref in zip(self.batches, self.torch_outputs, strict=True)
        ]
        self.checks += checks
        failed = next((c for c in checks if not c.passed), None)
        if failed is not None and strict:
            raise ExportParityError(
                f"{stage} parity failed: ONNX output {failed.worst_output!r} differs from "
                f"PyTorch by {failed.max_abs_diff:.3g} (tolerance {failed.tolerance:g}) at "
                f"batch {failed.batch} x seq {failed.seq_len}; the graph is wrong, do not deploy it"
            )
        return failed is None

    def _optimize(self, exported: Path, fused: Path) -> Path:
        layout = ort.GraphLayout(tuple(self.heads_per_layer), _head_dim(self.model))
        try:
            fusions = ort.optimize(exported, fused, layout)
        except ort.FusionRejected as err:
            self.warnings.append(f"optimize: kept the unfused graph: {err}")
            return exported
        if not self._check_fp32("optimize", fused, strict=False):
            worst = max(c.max_abs_diff for c in self.checks if c.stage == "optimize")
            self.warnings.append(
                f"optimize: kept the unfused graph: the fused graph differs from PyTorch by "
                f"{worst:.3g} (tolerance {self.tolerance:g})"
            )
            return exported
        if self.speed_check is not None and not self._faster(fused, exported, self.speed_check):
            return exported
        self.warnings += [
            f"optimize: attention in layer {i} was not fused" for i in fusions.unfused_attention
        ]
        self.fusions = fusions
        return fused

    def _faster(self, fused: Path, unfused: Path, threads: int) -> bool:
        """Whether the fused graph runs faster than the unfused one at every timed shape (on
        ORT 1.31's CPU kernels it may not: docs/export.md); recorded in the report."""
        seq = min(128, self.max_length)
        vocab = int(self.model.config.vocab_size)
        timing: dict[str, Any] = {"threads": threads, "shapes": []}
        for batch, runs in ((1, 30), (32, 10)):
            medians = median_ms(
                [fused, unfused], vocab=vocab, batch=batch, seq=seq, threads=threads, runs=runs
            )
            timing["shapes"].append(
                {"batch": batch, "seq": seq, "fused_ms": medians[0], "unfused_ms": medians[1]}
            )
        self.fusion_timing = timing
        slower = [t for t in timing["shapes"] if t["fused_ms"] >= t["unfused_ms"]]
        if slower:
            said = "; ".join(
                f"batch {t['batch']}: {t['fused_ms']:.1f} vs {t['unfused_ms']:.1f} ms"
                for t in slower
            )
            self.warnings.append(
                f"optimize: kept the unfused graph: the fused graph ran slower on this machine "
                f"({said}, {threads} threads)"
            )
        return not slower

    def _quantize(self, fp32: Path, int8: Path) -> Path:
        try:
            # Per-channel scales: on SST-2-tuned MiniLM they kept 98.0% of 200 dev decisions
            # (per-tensor 97.0%) and halved the largest logit change (0.75 vs 1.80).
            ort.quantize_int8(fp32, int8, per_channel=True)
        except Exception as err:  # ORT's quantizer: report it as one line, keep the cause
            raise ExportError(f"int8 quantisation failed: {type(err).__name__}: {err}") from err
        fp32_sess, int8_sess = ort.session(fp32), ort.session(int8)
        for batch in self.batches:
            reference = ort.run(fp32_sess, batch.feeds)
            check = _int8_check(self.spec, ort.run(int8_sess, batch.feeds), reference, batch)
            self.checks.append(check)
            if not check.passed:
                raise ExportParityError(
                    f"quantize parity failed: the int8 graph keeps {check.agreement or 0:.1%} of "
                    f"the fp32 graph's decisions (need {INT8_MIN_AGREEMENT:.0%}) and moves "
                    f"{check.worst_output!r} by up to {check.max_abs_diff:.3g} (bound "
                    f"{check.tolerance:.3g}) at batch {check.batch} x seq {check.seq_len}; "
                    "export without quantize"
                )
        # The decision agreement above is a proxy on a few sentences, not an accuracy: with
        # eval_data, `evaluate` measures the task metric of both graphs.
        self.quantized = "int8"
        return int8

    @property
    def heads_per_layer(self) -> list[int]:
        return PruningPlan.of_model(self.model).heads_per_layer

    def report(self, source: Path, target: Path, opset: int, model_bytes: int) -> ExportReport:
        import onnx
        import onnxruntime

        config = self.model.config
        labels = (
            [str(config.id2label[i]) for i in range(config.num_labels)]
            if self.spec.labelled
            else None
        )
        return ExportReport(
            output=target,
            source=str(source),
            architecture=type(self.model).__name__,
            model_type=config.model_type,
            spec=self.spec,
            opset=opset,
            max_length=self.max_length,
            labels=labels,
            heads_per_layer=self.heads_per_layer,
            ffn_per_layer=PruningPlan.of_model(self.model).ffn_per_layer,
            fusions=self.fusions,
            quantized=self.quantized,
            parity=tuple(self.checks),
            warnings=tuple(self.warnings),
            evaluation=self.evaluation,
            fusion_timing=self.fusion_timing,
            model_bytes=model_bytes,
            versions={
                "compresskit": __version__,
                "torch": torch.__version__,
                "onnx": onnx.__version__,
                "onnxruntime": onnxruntime.__version__,
            },
        )


def _head_dim(model: Any) -> int:
    adapter = get_adapter(model)
    return adapter.head_dim(adapter.layers()[0])


def _max_length(model: Any, tokenizer: Any) -> int:
    """The longest input the model takes: its position table, capped by the tokenizer's own
    limit when it states one."""
    positions = get_adapter(model).max_positions(model.config)
    stated = getattr(tokenizer, "model_max_length", None)
    if isinstance(stated, int) and 0 < stated < 1_000_000:
        positions = min(positions, stated)
    return positions


# --- graphs for timing only -----------------------------------------------------------------
def timed_call(
    graph: Path, *, vocab: int, batch: int, seq: int, threads: int
) -> Callable[[], None]:
    """One forward pass of `graph` in a session of `threads` intra-op threads, on seeded token
    ids (batch, seq) without padding, fed to the inputs the graph has (a graph without
    attention has no attention_mask input)."""
    from compresskit.bench import synthetic_ids
    from compresskit.runtime import open_session

    ids = synthetic_ids(vocab, batch, seq)
    arrays = {
        "input_ids": ids,
        "attention_mask": np.ones_like(ids),
        "token_type_ids": np.zeros_like(ids),
    }
    # Its threads stop spinning when a run ends: with several sessions alive, one timed right
    # after another would otherwise share the cores with the other's idle spinners.
    sess = open_session(graph, threads=threads, spin_between_runs=False)
    feeds = {i.name: arrays[i.name] for i in sess.get_inputs()}

    def call() -> None:
        sess.run(None, feeds)

    return call


def median_ms(
    graphs: Sequence[Path], *, vocab: int, batch: int, seq: int, threads: int, runs: int
) -> list[float]:
    """Median milliseconds of each graph on the same inputs, in interleaved rounds after 3
    warm-up ones (compresskit.bench)."""
    from compresskit.bench import interleaved_times

    calls = [timed_call(g, vocab=vocab, batch=batch, seq=seq, threads=threads) for g in graphs]
    return [1e3 * float(np.median(s)) for s in interleaved_times(calls, runs, 3)]


def timing_graph(
    model: Any,
    folder: Path,
    *,
    head_dim: int,
    optimize: bool = False,
    quantize: str | None = None,
    opset: int = 17,
) -> Path:
    """The graph `export_onnx` would deploy for `model` (traced, fused with `optimize`, int8
    with `quantize`), written into `folder` for timing only: traced on synthetic token ids,
    without parity checks or a tokenizer. The latency model times such graphs of random-init
    models; nothing deploys them. A fusion that cannot be proved falls back to the unfused
    graph, as in `export_onnx`."""
    spec = onnx_spec(model)
    ids = np.random.default_rng(0).integers(0, int(model.config.vocab_size), size=(2, 16))
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    if "token_type_ids" in spec.inputs:
        feeds["token_type_ids"] = np.zeros_like(ids)
    graph = folder / "exported.onnx"
    _export_graph(model, spec, _Batch(feeds, np.ones(ids.shape, bool)), graph, opset)
    if optimize:
        heads = tuple(PruningPlan.of_model(model).heads_per_layer)
        try:
            ort.optimize(graph, folder / "optimized.onnx", ort.GraphLayout(heads, head_dim))
            graph = folder / "optimized.onnx"
        except ort.FusionRejected:
            pass
    if quantize == "int8":
        ort.quantize_int8(graph, folder / "int8.onnx", per_channel=True)
        graph = folder / "int8.onnx"
    return graph


# --- parity ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Batch:
    feeds: dict[str, np.ndarray]  # the graph's inputs, int64 (batch, seq)
    real: np.ndarray  # (batch, seq) bool: True at real tokens, False at padding


def _parity_batches(
    tokenizer: Any, spec: OnnxSpec, texts: tuple[str, ...], model: Any, max_length: int
) -> list[_Batch]:
    """All texts in one padded batch, and the two shortest in another: two batch sizes and
    two lengths, so a size fixed by the trace would show."""
    vocab = int(model.config.vocab_size)
    return [
        _tokenise(tokenizer, spec, chunk, vocab, min(max_length, 128))
        for chunk in (texts, sorted(texts, key=len)[:2])
    ]


def _tokenise(
    tokenizer: Any,
    spec: OnnxSpec,
    texts: Sequence[str],
    vocab: int,
    max_length: int,
    pairs: Sequence[str] | None = None,
) -> _Batch:
    encoded = tokenizer(
        list(texts),
        list(pairs) if pairs is not None else None,
        padding=True,
        truncation=True,
        max_length=max_length,
        return_tensors="np",
    )
    ids = np.asarray(encoded["input_ids"], dtype=np.int64)
    if ids.max() >= vocab or ids.min() < 0:
        raise ModelFileError(
            f"the tokenizer gives token ids up to {ids.max()} but the model's vocabulary has "
            f"{vocab}: the folder's tokenizer does not belong to its model"
        )
    mask = np.asarray(encoded["attention_mask"], dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": mask}
    if "token_type_ids" in spec.inputs:
        feeds["token_type_ids"] = np.asarray(
            encoded.get("token_type_ids", np.zeros_like(ids)), dtype=np.int64
        )
    return _Batch(feeds, mask.astype(bool))


def _torch_outputs(model: Any, spec: OnnxSpec, batch: _Batch) -> dict[str, np.ndarray]:
    with torch.no_grad():
        out = model(**{k: torch.from_numpy(v) for k, v in batch.feeds.items()}, return_dict=True)
    return {name: out[name].detach().float().numpy() for name in spec.outputs}


def _real(spec: OnnxSpec, name: str, values: np.ndarray, batch: _Batch) -> np.ndarray:
    """The values at real tokens only: outputs at padding are meaningless (helpers.py)."""
    return values[batch.real] if name in spec.token_outputs else values


def _fp32_check(
    stage: str,
    spec: OnnxSpec,
    got: dict[str, np.ndarray],
    expected: dict[str, np.ndarray],
    batch: _Batch,
    tolerance: float,
) -> ParityCheck:
    diffs = {
        name: _max_abs(
            _real(spec, name, got[name], batch) - _real(spec, name, expected[name], batch)
        )
        for name in spec.outputs
    }
    worst = max(diffs, key=lambda n: diffs[n])
    rows, length = batch.real.shape
    return ParityCheck(
        stage, diffs[worst], tolerance, rows, length, diffs[worst] <= tolerance, worst
    )


def _int8_check(
    spec: OnnxSpec, got: dict[str, np.ndarray], fp32: dict[str, np.ndarray], batch: _Batch
) -> ParityCheck:
    diffs, scales, kept = {}, [], []
    for name in spec.outputs:
        x, y = _real(spec, name, got[name], batch), _real(spec, name, fp32[name], batch)
        diffs[name] = _max_abs(x - y)
        scales.append(_max_abs(y))
        if name == "last_hidden_state":
            kept.append(_cosine(x, y) >= INT8_MIN_COSINE)
        else:
            pred = _predictions(spec, name, got[name], batch)
            kept.append(pred == _predictions(spec, name, fp32[name], batch))
    worst = max(diffs, key=lambda n: diffs[n])
    bound = INT8_RELATIVE_TOLERANCE * max(scales)
    decisions = np.concatenate([k.reshape(-1) for k in kept])
    agreement = float(decisions.mean()) if decisions.size else 1.0
    passed = diffs[worst] <= bound and agreement >= INT8_MIN_AGREEMENT
    rows, length = batch.real.shape
    return ParityCheck("quantize", diffs[worst], bound, rows, length, passed, worst, agreement)


def _cosine(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Cosine similarity of matching rows (token vectors)."""
    norms = np.linalg.norm(x, axis=-1) * np.linalg.norm(y, axis=-1)
    return (x * y).sum(-1) / np.maximum(norms, 1e-12)


def _predictions(spec: OnnxSpec, name: str, values: np.ndarray, batch: _Batch) -> np.ndarray:
    """The argmax decisions an output stands for: a class per row or per real token, or (for
    start/end logits, one score per token) a position per row among its real tokens."""
    if name in spec.token_outputs and values.ndim == 2:
        return np.where(batch.real, values, -np.inf).argmax(-1)
    return _real(spec, name, values, batch).argmax(-1)


def _max_abs(values: np.ndarray) -> float:
    return float(np.abs(values).max()) if values.size else 0.0


# --- the trace -----------------------------------------------------------------------------
class _GraphSignature(nn.Module):
    """Positional tensors in, the spec's outputs out: the signature the exporter traces."""

    def __init__(self, model: nn.Module, spec: OnnxSpec) -> None:
        super().__init__()
        self.model, self.spec = model, spec

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(**dict(zip(self.spec.inputs, tensors, strict=True)), return_dict=True)
        return tuple(out[name] for name in self.spec.outputs)


def _export_graph(model: nn.Module, spec: OnnxSpec, batch: _Batch, path: Path, opset: int) -> None:
    """TorchScript export (dynamo=False: one self-contained file, no onnxscript) with dynamic
    batch and sequence axes, traced on a padded batch so the mask path is in the graph."""
    axes = {name: {0: "batch", 1: "sequence"} for name in spec.inputs}
    axes |= {
        name: {0: "batch", 1: "sequence"} if name in spec.token_outputs else {0: "batch"}
        for name in spec.outputs
    }
    args = tuple(torch.from_numpy(batch.feeds[name]) for name in spec.inputs)
    # The exporter traces in eval mode and then restores the wrapper's mode, recursively: a
    # fresh module is in training mode, which would leave `model` training (dropout on).
    signature = _GraphSignature(model, spec).train(model.training)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
            torch.onnx.export(
                signature,
                args,
                str(path),
                input_names=list(spec.inputs),
                output_names=list(spec.outputs),
                dynamic_axes=axes,
                opset_version=opset,
                dynamo=False,
                do_constant_folding=True,
            )
    except Exception as err:  # the exporter raises many types; report one line, keep the cause
        raise ExportError(f"torch.onnx.export failed: {type(err).__name__}: {err}") from err
