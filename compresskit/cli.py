"""The `compresskit` command. Each command parses its options, builds a config and calls one
library function; heavy imports (torch, transformers) happen inside the commands so that
`compresskit --help` stays fast."""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import click
import yaml

from compresskit._version import __version__
from compresskit.errors import CompressKitError, one_line

DEBUG_ENV = "COMPRESSKIT_DEBUG"


class _Group(click.Group):
    """The one error boundary: every failure ends in one line on stderr and an exit status
    that says which kind it was (docs/failure-behaviour.md); the traceback is shown only with
    COMPRESSKIT_DEBUG=1.

    0 done; 1 bad input (a CompressKitError); 2 a flag click cannot parse; 3 the system
    refused a read or write (disk full, read-only, permissions); 4 a bug in compresskit;
    130 interrupted (Ctrl-C)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.exceptions.Exit:
            raise
        except click.UsageError as err:  # a wrong flag or value: one line too, not the usage
            if os.environ.get(DEBUG_ENV) == "1":
                raise
            command = err.ctx.command_path if err.ctx else "compresskit"
            raise _exit_line(f"{err.format_message()} (see `{command} --help`)", 2) from None
        except click.ClickException:
            raise
        except BaseException as err:
            if _terminated_by is not None:  # whatever a library made of the SystemExit
                raise SystemExit(128 + _terminated_by) from None
            if os.environ.get(DEBUG_ENV) == "1" or isinstance(err, SystemExit):
                raise
            raise _exit_line(*_one_line(err)) from None


def _exit_line(message: str, exit_code: int) -> click.ClickException:
    """A ClickException that exits with `exit_code` (click reads it from the class)."""
    line_class = type(f"ExitWith{exit_code}", (click.ClickException,), {"exit_code": exit_code})
    return line_class(message)


class Interrupted(CompressKitError):
    """Ctrl-C: `message` says what was kept and how to continue."""


def _one_line(err: BaseException) -> tuple[str, int]:
    """The line and exit status for an exception that reached the command line."""
    if isinstance(err, Interrupted):
        return str(err), 130
    if isinstance(err, KeyboardInterrupt):
        return "interrupted: nothing was written", 130
    if isinstance(err, CompressKitError):
        return str(err), 1
    if isinstance(err, OSError) and err.strerror:
        return _os_error_line(err), 3
    if _disk_full(err):
        return _os_error_line(OSError(errno.ENOSPC, "No space left on device")), 3
    return (
        f"internal error ({type(err).__name__}: {one_line(err)}): this is a bug in compresskit; "
        f"run again with {DEBUG_ENV}=1 and report the traceback",
        4,
    )


# How the writers that do not raise OSError say the disk is full: torch.save (checkpoints)
# and safetensors (weights).
_DISK_FULL_TEXT = ("No space left on device", "StorageFull", "file write failed")


def _disk_full(err: BaseException) -> bool:
    """Whether `err`, or an exception it was raised from, says the disk is full."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno == errno.ENOSPC:
            return True
        if any(text in str(seen) for text in _DISK_FULL_TEXT):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _os_error_line(err: OSError) -> str:
    where = f": {err.filename}" if err.filename else " while writing the output or a checkpoint"
    hint = {
        errno.ENOSPC: "free some space or choose another --output (a training run continues "
        "from its last checkpoint with --resume)",
        errno.EDQUOT: "free some of your quota or choose another --output",
        errno.EROFS: "choose an --output on a writable file system",
        errno.EACCES: "choose a folder you may write to, or read",
        errno.EPERM: "choose a folder you may write to, or read",
        errno.ENAMETOOLONG: "choose a shorter --output",
    }.get(err.errno or 0, "check the path")
    return f"{(err.strerror or '').lower()}{where}: {hint}"


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="compresskit")
def cli() -> None:
    """Structured pruning for BERT-family models: prune heads and FFN neurons, save and load
    the slim model exactly, and inspect it."""
    _hide_loading_bars()
    _show_warnings()


class _WarningLines(logging.Handler):
    """compresskit's warnings as one line each on stderr (the stderr of the moment, so that
    click's test runner sees them too)."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(f"warning: {record.getMessage()}", err=True)


def _show_warnings() -> None:
    logger = logging.getLogger("compresskit")
    if not any(isinstance(h, _WarningLines) for h in logger.handlers):
        handler = _WarningLines(logging.WARNING)
        logger.addHandler(handler)


def _hide_loading_bars() -> None:
    """transformers' bars for loading and writing weights would come before an error's one
    line; training keeps its own bar (--no-progress). HF_HUB_DISABLE_PROGRESS_BARS=0 brings
    them back. transformers reads the variable when imported (here, later, in most commands;
    already, when called from Python)."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules and os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1":
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()


@cli.command()
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.option(
    "--seq-len",
    default=128,
    show_default=True,
    type=click.IntRange(min=1),
    help="Sequence length the MACs are counted for.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def info(model_dir: Path, seq_len: int, as_json: bool) -> None:
    """Show a saved model's heads, FFN width, parameters and MACs per layer."""
    from compresskit.io import load, read_manifest
    from compresskit.stats import dense_stats, model_stats

    model = load(model_dir)
    manifest = read_manifest(model_dir)
    stats, dense = model_stats(model, seq_len), dense_stats(model, seq_len)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "model": str(model_dir),
                    "model_type": manifest["model_type"],
                    "architecture": manifest["architecture"],
                    "stats": stats.to_dict(),
                    "dense": dense.to_dict(),
                },
                indent=1,
            )
        )
        return
    click.echo(f"{model_dir}: {manifest['architecture']} ({manifest['model_type']})")
    click.echo(stats.table(baseline=dense))


@cli.command()
@click.argument("outputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--output",
    type=click.Path(path_type=Path),
    help="Folder for compare.md and compare.png (the figure); without it, the table only.",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing --output.")
def report(outputs: tuple[Path, ...], output: Path | None, overwrite: bool) -> None:
    """Compare training runs side by side from their outputs' report.json: a table, and with
    --output a figure (the metric against training time and against MACs, kept per layer)."""
    from compresskit.compare import read_reports, table, write_comparison
    from compresskit.outputs import atomic_directory

    reports = read_reports(list(outputs))
    click.echo(table(reports))
    if output is not None:
        with atomic_directory(output, overwrite=overwrite) as tmp:
            write_comparison(tmp, reports)
        click.echo(f"-> {output}")


# Options of `prune` that are not strategy config fields.
_JOB_KEYS = (
    "model",
    "strategy",
    "output",
    "overwrite",
    "seq_len",
    "trust_remote_code",
    "standalone",
)
# Options that only make sense when fine-tuning (with --task and --data).
_TRAINING_KEYS = (
    "epochs",
    "batch_size",
    "lr",
    "max_seq_len",
    "max_train_samples",
    "eval_batch_size",
    "weight_decay",
    "progress",
    "max_steps",
    "eval_every",
    "save_every",
)
_TASK_KEYS = ("task", "data", "resume", "encoding")
# Distillation while the slim model trains (train/distill.py).
_DISTILL_FIELDS = {  # option -> DistillOptions field
    "distill": "enabled",
    "teacher": "teacher",
    "distill_temperature": "temperature",
    "distill_weight": "weight",
    "distill_hidden": "hidden_weight",
}
# A model built from scratch, for pre-training (--task mlm) instead of --model.
_SCRATCH_KEYS = ("config", "tokenizer")


class _PruneCommand(click.Command):
    """`prune`, with an option for every field of every registered strategy's config
    (plugins' too), made when the command line is read: cli.py names no strategy."""

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        from compresskit.strategy_options import strategy_options

        own = super().get_params(ctx)
        taken = {name for p in own for name in p.opts}
        return own[:-1] + [o for o in strategy_options() if o.opts[0] not in taken] + own[-1:]


@cli.command(cls=_PruneCommand)
@click.option(
    "--strategy",
    help="Strategy name (see `compresskit strategies`); with --task, "
    "`none` trains the dense model as the reference.",
)
@click.option(
    "--model", help="Model folder, compresskit folder or hub id (or, with --task mlm, --config)."
)
@click.option("--heads-ratio", type=float, help="Fraction of attention heads to remove, [0, 1).")
@click.option("--ffn-ratio", type=float, help="Fraction of FFN neurons to remove, [0, 1).")
@click.option("--output", type=click.Path(path_type=Path), help="Folder to write the model to.")
@click.option(
    "--recipe",
    type=click.Path(path_type=Path),
    help="YAML or JSON file with any of these options; flags override it.",
)
@click.option("--seed", type=int, help="Seed for the strategy and for training [0].")
@click.option("--seq-len", type=click.IntRange(min=1), help="Sequence length for MACs [128].")
@click.option("--overwrite", is_flag=True, default=None, help="Replace an existing output.")
@click.option(
    "--standalone",
    is_flag=True,
    default=None,
    help="Also save the modeling code, so that the output loads without compresskit "
    "(from_pretrained with trust_remote_code=True).",
)
@click.option(
    "--trust-remote-code",
    is_flag=True,
    default=None,
    help="Allow a hub model's own Python code to run (off by default).",
)
# Fine-tuning: prune while training on a task.
@click.option(
    "--task",
    help="sst2, cola, mrpc, rte, qnli, qqp, mnli, wnli, classification, or mlm (pre-training).",
)
@click.option(
    "--data",
    help="Folder with train/dev files (TSV, CSV, JSONL), a train file, or hf:NAME[:CONFIG]; "
    "for mlm: text files (comma-separated) or a folder of *.txt.",
)
@click.option(
    "--config",
    help="Pre-train a BERT from scratch of this size: layers=4,hidden=256,heads=4,ffn=1024.",
)
@click.option("--tokenizer", help="Tokenizer folder or hub id for --config.")
@click.option(
    "--encoding", help="Encoding of the --data files (utf-8, latin-1, cp1252, ...) [utf-8]."
)
@click.option("--max-steps", type=int, help="Step budget; replaces --epochs.")
@click.option("--eval-every", type=int, help="Held-out loss every N steps (report.json curve).")
@click.option(
    "--save-every",
    type=int,
    help="Checkpoint every N steps, the search included, for --resume [each epoch].",
)
@click.option("--epochs", type=float, help="Training epochs [3].")
@click.option("--batch-size", type=int, help="Training batch size [32].")
@click.option("--lr", type=float, help="Learning rate [2e-5].")
@click.option("--max-seq-len", type=int, help="Truncate examples to this many tokens [128].")
@click.option("--max-train-samples", type=int, help="Train on a seeded subset of this size.")
@click.option("--eval-batch-size", type=int, help="Evaluation batch size [64].")
@click.option("--weight-decay", type=float, help="AdamW weight decay of the weights [0.01].")
@click.option(
    "--resume", is_flag=True, default=None, help="Continue the unfinished run left in OUTPUT.run/."
)
@click.option("--progress/--no-progress", default=None, help="Progress bars [on].")
@click.option(
    "--distill/--no-distill",
    default=None,
    help="Distil from a teacher while the slim model trains [on when --model is a classifier "
    "fine-tuned on the task: it teaches, as it was before pruning].",
)
@click.option("--teacher", help="The teacher: a classifier fine-tuned on the task.")
@click.option("--distill-temperature", type=float, help="Softmax temperature of distillation [2].")
@click.option(
    "--distill-weight", type=float, help="Weight of the teacher's soft labels in [0, 1] [0.5]."
)
@click.option(
    "--distill-hidden", type=float, help="Weight of the hidden-state loss of every layer [0]."
)
# Compression to a target, on the runtime it deploys to (compresskit/target.py).
@click.option(
    "--target-speedup",
    type=float,
    help="Prune to run this many times faster than the model as given (measured on "
    "--runtime), keeping the most of the strategy's scores; --target-shape says how.",
)
@click.option("--target-latency", type=float, help="Like --target-speedup: milliseconds per batch.")
@click.option(
    "--target-macs", type=float, help="Like --target-speedup: this many times fewer encoder MACs."
)
@click.option(
    "--target-shape",
    type=click.Choice(["ratios", "layers"]),
    help="ratios: one heads ratio and one FFN ratio (--heads-scope, --ffn-scope), the smallest "
    "that meets the target (the more accurate after fine-tuning); layers: every layer's widths "
    "chosen for the target (the least loss right after pruning) [ratios].",
)
@click.option(
    "--runtime",
    type=click.Choice(["ort"]),
    help="Runtime the target is for [ort: ONNX Runtime CPU].",
)
@click.option("--threads", type=int, help="Threads the target is for [the cores available].")
@click.option("--batch", type=int, help="Batch size the target is for [1]; --seq-len its length.")
@click.option(
    "--int8", is_flag=True, default=None, help="The target is for int8 weights (export --quantize)."
)
@click.option(
    "--optimize",
    is_flag=True,
    default=None,
    help="The target is for the fused graph (export --optimize).",
)
@click.option(
    "--latency-model",
    type=click.Path(path_type=Path),
    help="A latency model file (`compresskit latency`) instead of measuring on this machine.",
)
@click.option(
    "--verify/--no-verify",
    default=None,
    help="Time the result against the model as given [on].",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the run's report as JSON on stdout (the same as OUTPUT/report.json) instead "
    "of the summary.",
)
@click.option(
    "--set",
    "set_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="A strategy option (repeatable), the value read as in a recipe: --set eps=0.05.",
)
def prune(recipe: Path | None, set_options: tuple[str, ...], as_json: bool, **flags: Any) -> None:
    """Prune a model and save it with a per-layer table.

    Without --task: a one-shot strategy scores the model once. With --task and --data: the
    model is fine-tuned; one-shot strategies prune at step 0, training-time ones (earlybird,
    movement, plugins) decide while training, and `--strategy none` trains the dense model;
    then the slim model trains, is evaluated on dev and saved with report.json and a figure.
    `--task mlm` pre-trains on raw text instead (from --model, or from scratch with --config
    and --tokenizer). Each strategy option has a flag below; `--set KEY=VALUE` sets any.
    """
    params = click.get_current_context().command.get_params(click.get_current_context())
    settings = read_recipe(recipe, params) if recipe else {}
    settings.update(_set_options(set_options, params))
    settings.update({k: v for k, v in flags.items() if v is not None})
    required = ("strategy", "output") if "config" in settings else ("strategy", "model", "output")
    for name in required:
        if name not in settings:
            raise click.UsageError(f"--{name} is required (or set {name!r} in --recipe)")
    job = {k: settings.pop(k) for k in (*_JOB_KEYS, *_SCRATCH_KEYS) if k in settings}
    job["target"] = _target(settings, int(job.get("seq_len", 128)))
    task = {k: settings.pop(k) for k in _TASK_KEYS if k in settings}
    training = {k: settings.pop(k) for k in _TRAINING_KEYS if k in settings}
    distill = {k: settings.pop(k) for k in _DISTILL_FIELDS if k in settings}
    if task or training or distill or set(_SCRATCH_KEYS) & set(job):
        training |= {"distill": distill}
        _prune_training(job, task, training, settings, as_json)
    else:
        _prune_one_shot(job, settings, as_json)


def _target(settings: dict[str, Any], seq_len: int) -> Any:
    """TargetOptions from the target flags (taken out of `settings`), or None."""
    from compresskit.target import TARGET_FLAGS, target_from_flags

    return target_from_flags({k: settings.pop(k) for k in TARGET_FLAGS if k in settings}, seq_len)


def _prune_one_shot(job: dict[str, Any], options: dict[str, Any], as_json: bool) -> None:
    from compresskit.pipeline import PruneJob, run_prune

    report = run_prune(
        PruneJob(
            model=str(job["model"]),
            strategy=str(job["strategy"]),
            output=Path(job["output"]),
            options=options,
            overwrite=bool(job.get("overwrite", False)),
            seq_len=int(job.get("seq_len", 128)),
            trust_remote_code=bool(job.get("trust_remote_code", False)),
            standalone=bool(job.get("standalone", False)),
            target=job["target"],
        )
    )
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=1))
        return
    click.echo(f"{job['model']} pruned with {job['strategy']} -> {job['output']}")
    click.echo(report.table())


def _prune_training(
    job: dict[str, Any],
    task: dict[str, Any],
    training: dict[str, Any],
    options: dict[str, Any],
    as_json: bool,
) -> None:
    from compresskit.errors import ConfigError

    distill = training.pop("distill", {})
    for required in ("task", "data"):
        if required not in task:
            scratch = [k for k in _SCRATCH_KEYS if k in job]
            named = [*scratch, *task, *training, *distill]
            given = ", ".join("--" + k.replace("_", "-") for k in named)
            does = "pre-train(s)" if scratch else "fine-tune(s)"
            raise ConfigError(f"{given} {does} a model: --{required} is needed too")
    from compresskit.train.distill import DistillOptions
    from compresskit.train.run import TrainingOptions, TrainJob, run_training

    if "seed" in options:
        training["seed"] = options["seed"]
    train_job = TrainJob(
        model=None if job.get("model") is None else str(job["model"]),
        strategy=str(job["strategy"]),
        task=str(task["task"]),
        data=str(task["data"]),
        output=Path(job["output"]),
        options=options,
        training=TrainingOptions(**training),
        overwrite=bool(job.get("overwrite", False)),
        resume=bool(task.get("resume", False)),
        encoding=str(task.get("encoding", "utf-8")),
        seq_len=int(job.get("seq_len", 128)),
        trust_remote_code=bool(job.get("trust_remote_code", False)),
        standalone=bool(job.get("standalone", False)),
        config=None if job.get("config") is None else str(job["config"]),
        tokenizer=None if job.get("tokenizer") is None else str(job["tokenizer"]),
        target=job["target"],
        distill=DistillOptions(**{_DISTILL_FIELDS[k]: v for k, v in distill.items()}),
    )
    try:
        report = run_training(train_job)
    except KeyboardInterrupt:
        raise Interrupted(_interrupted(train_job.run_dir)) from None
    if report.process_index:  # under torchrun: the main process (0) reports
        ticket = "" if report.search is None else f", decided at step {report.search.decided_at}"
        click.echo(
            f"process {report.process_index} of {report.processes}: done, with the same plan "
            f"as process 0{ticket}; process 0 wrote {job['output']}"
        )
        return
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=1))
        return
    start = job.get("model") or f"BERT ({job.get('config')})"
    click.echo(f"{start} trained on {task['task']} with {job['strategy']} -> {job['output']}")
    click.echo(report.after.table(baseline=report.dense))
    click.echo(report.summary())


# Recipes are a few lines; a larger file is a mistake (or an attack on the parser).
RECIPE_MAX_BYTES = 64 * 1024
# Options a recipe may not set: they let files run code, so only the command line turns them on,
# as in the Hugging Face tools.
_COMMAND_LINE_ONLY = ("trust_remote_code",)


def _set_options(items: tuple[str, ...], params: list[click.Parameter]) -> dict[str, Any]:
    """`--set KEY=VALUE` options, each value read and checked as a recipe line would be."""
    from compresskit.errors import ConfigError

    settings: dict[str, Any] = {}
    by_name = {p.name: p for p in params if p.name}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: write it as KEY=VALUE, e.g. --set eps=0.05")
        name = key.strip().replace("-", "_")
        value = yaml.load(text, Loader=_RecipeLoader) if text.strip() else None
        if value is None:
            raise ConfigError(f"--set {item!r} has no value")
        settings[name] = _recipe_value(f"--set {item}", name, value, by_name.get(name))
    return settings


def _interrupted(run_dir: Path) -> str:
    if run_dir.is_dir():
        return (
            f"interrupted: the unfinished run is kept in {run_dir}; run the same command with "
            "--resume to continue from its last checkpoint"
        )
    return "interrupted: nothing was written"


def read_recipe(path: Path, options: list[click.Parameter] | None = None) -> dict[str, Any]:
    """A recipe's options, with dashes in keys read as underscores (`heads-ratio` too).

    Each value that has a flag among `options` must have the flag's type (YAML's own: a
    string is never a boolean or a number) and passes the flag's checks; the other keys are
    strategy options, which the strategy's config checks. No key is null, and
    `trust_remote_code` is refused.
    """
    from compresskit.errors import ConfigError

    data = _parse_recipe(path)
    by_name = {p.name: p for p in options or [] if p.name}
    settings = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name in _COMMAND_LINE_ONLY:
            raise ConfigError(
                f"recipe {path}: {name} cannot be set in a recipe, since it lets the model "
                f"folder run its own code: pass --{name.replace('_', '-')} on the command line"
            )
        if value is None:
            raise ConfigError(f"recipe {path}: {name} has no value: give one or remove the line")
        settings[name] = _recipe_value(f"recipe {path}", name, value, by_name.get(name))
    return settings


def _parse_recipe(path: Path) -> dict[Any, Any]:
    from compresskit.errors import ConfigError

    try:
        size = path.stat().st_size
        if size > RECIPE_MAX_BYTES:
            raise ConfigError(
                f"recipe {path} is {size} bytes; recipes are at most {RECIPE_MAX_BYTES}: is it "
                "the right file?"
            )
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_RecipeLoader)  # JSON too
    except OSError as err:
        raise ConfigError(f"cannot read recipe {path}: {err.strerror}") from None
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as err:
        message = " ".join(str(err).split())
        raise ConfigError(f"recipe {path} is not valid YAML/JSON: {message}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"recipe {path} must be a mapping of option names to values")
    return data


def _recipe_value(where: str, name: str, value: Any, option: click.Parameter | None) -> Any:
    """`value` checked as the flag `option` would check it, or as it is for a strategy
    option (no flag)."""
    from compresskit.errors import ConfigError

    if option is None:
        return value
    wanted = _recipe_type(option)
    if not isinstance(value, wanted) or (isinstance(value, bool) and bool not in wanted):
        names = _TYPE_WORDS[wanted[-1]]  # (int, float) is "a number"
        raise ConfigError(
            f"{where}: {name} must be {names}, got {value!r} ({_TYPE_WORDS[type(value)]})"
            if type(value) in _TYPE_WORDS
            else f"{where}: {name} must be {names}, got {value!r}"
        )
    try:
        return option.type_cast_value(click.Context(prune), value)
    except click.BadParameter as err:
        raise ConfigError(f"{where}: {name}: {err.format_message()}") from None


_TYPE_WORDS = {
    bool: "true or false",
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "a list",
    dict: "a mapping",
}


def _recipe_type(option: click.Parameter) -> tuple[type, ...]:
    if isinstance(option, click.Option) and option.is_flag:
        return (bool,)
    if isinstance(option.type, click.types.IntParamType):
        return (int,)
    if isinstance(option.type, click.types.FloatParamType):
        return (int, float)
    return (str,)


class _RecipeLoader(yaml.SafeLoader):
    """YAML's safe loader without anchors and aliases: a recipe needs none, and a few lines
    of nested aliases expand to billions of values (a 'billion laughs' attack)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.get_event()
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not allowed in recipes", event.start_mark
            )
        return super().compose_node(parent, index)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def strategies(as_json: bool) -> None:
    """List the registered strategies (built-in and plugins)."""
    from compresskit.registry import describe, strategy_names

    infos = [describe(name) for name in strategy_names()]
    if as_json:
        click.echo(json.dumps([vars(i) for i in infos], indent=1))
        return
    width = max(len(i.name) for i in infos)
    for i in infos:
        click.echo(f"{i.name:<{width}}  {i.kind:<13}  {i.provider:<12}  {i.description}")


@cli.group()
def export() -> None:
    """Export a saved model to a folder that deploys on its own."""


@export.command("onnx")
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.option("--output", required=True, type=click.Path(path_type=Path), help="Folder to write.")
@click.option(
    "--optimize",
    is_flag=True,
    help="Fuse attention, LayerNorm and GELU with ONNX Runtime's optimizer (head counts per "
    "layer); keeps the unfused graph, with a warning, if the fused one fails parity or runs "
    "slower on this machine.",
)
@click.option(
    "--speed-check/--no-speed-check",
    default=True,
    show_default=True,
    help="With --optimize: time the fused graph against the unfused one (batch 1 and 32) and "
    "keep the faster.",
)
@click.option("--threads", type=click.IntRange(min=1), help="Threads of the speed check [cores].")
@click.option(
    "--quantize", type=click.Choice(["int8"]), help="Dynamic int8 weights (checked vs fp32)."
)
@click.option(
    "--eval-data",
    help="Labelled data (as `prune --data` takes it): measure the task metric of the fp32 and "
    "int8 graphs on its dev split and record both in export.json.",
)
@click.option(
    "--eval-task",
    help="The task of --eval-data [the task in MODEL_DIR's compresskit.json].",
)
@click.option("--opset", default=17, show_default=True, type=click.IntRange(14, 20))
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
def export_onnx(
    model_dir: Path,
    output: Path,
    optimize: bool,
    quantize: str | None,
    eval_data: str | None,
    eval_task: str | None,
    opset: int,
    overwrite: bool,
    speed_check: bool,
    threads: int | None,
) -> None:
    """Export MODEL_DIR (compresskit or transformers folder) to ONNX, checked against PyTorch."""
    from compresskit.exporters.onnx import export_onnx as run_export

    report = run_export(
        model_dir,
        output,
        optimize=optimize,
        quantize=quantize,
        opset=opset,
        overwrite=overwrite,
        eval_data=eval_data,
        eval_task=eval_task,
        speed_check=speed_check,
        threads=threads,
    )
    click.echo(report.summary())


@cli.command()
@click.option("--model", required=True, help="Model folder (its architecture and shape).")
@click.option("--threads", type=click.IntRange(min=1), help="Threads [the cores available].")
@click.option("--batch", default=1, show_default=True, type=click.IntRange(min=1))
@click.option("--seq-len", default=128, show_default=True, type=click.IntRange(min=1))
@click.option("--int8", is_flag=True, help="For int8 weights (export --quantize int8).")
@click.option("--optimize", is_flag=True, help="For the fused graph (export --optimize).")
@click.option("--remeasure", is_flag=True, help="Measure again instead of reading the cache.")
@click.option(
    "--output",
    type=click.Path(path_type=Path),
    help="Also write the latency model here, for --latency-model (e.g. on another machine).",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing --output file.")
def latency(
    model: str,
    threads: int | None,
    batch: int,
    seq_len: int,
    int8: bool,
    optimize: bool,
    remeasure: bool,
    output: Path | None,
    overwrite: bool,
) -> None:
    """Measure (or show the cached) latency of one encoder layer of MODEL's architecture by
    head count and FFN width, on ONNX Runtime with these settings: what --target-speedup
    and --target-latency plan with."""
    from compresskit.errors import OutputExistsError
    from compresskit.exporters.latency import latency_model_for, measure_latency_model
    from compresskit.latency import LatencySetting
    from compresskit.loading import load_model
    from compresskit.target import available_cores

    if output is not None and output.exists() and not overwrite:
        raise OutputExistsError(f"{output} exists: give --overwrite to replace it")
    setting = LatencySetting(
        threads=threads or available_cores(),
        batch_size=batch,
        seq_len=seq_len,
        int8=int8,
        optimize=optimize,
    )
    loaded = load_model(model)
    measured = (
        measure_latency_model(loaded, setting) if remeasure else latency_model_for(loaded, setting)
    )
    click.echo(measured.table())
    if output is not None:
        measured.save(output)
        click.echo(f"-> {output}")


def _add_lazy_commands() -> None:
    # bench lives in its own module; importing it loads neither torch nor onnxruntime.
    from compresskit.bench import bench_command

    cli.add_command(bench_command, "bench")


_add_lazy_commands()


def main() -> None:
    # SIGTERM (kill, a scheduler's stop) ends the command as an exception does, so that the
    # output's lock and an unfinished run's files are left as a failure leaves them.
    signal.signal(signal.SIGTERM, _terminated)
    try:
        cli(prog_name="compresskit")
    except KeyboardInterrupt:  # before a command started (while importing)
        click.echo("Error: interrupted: nothing was written", err=True)
        sys.exit(130)


# The signal that ended the command, if one did: the exception it raised may reach the
# boundary changed (a library that catches it and raises its own), the exit status may not.
_terminated_by: int | None = None


def _terminated(signum: int, frame: Any) -> None:
    global _terminated_by
    _terminated_by = signum
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    main()
