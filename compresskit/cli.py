"""The `compresskit` command. Each command parses its options, builds a config and calls one
library function; heavy imports (torch, transformers) happen inside the commands so that
`compresskit --help` stays fast."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from compresskit._version import __version__
from compresskit.errors import CompressKitError

DEBUG_ENV = "COMPRESSKIT_DEBUG"


class _Group(click.Group):
    """Turns every CompressKitError into one line on stderr and exit status 1; the traceback
    is shown only with COMPRESSKIT_DEBUG=1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CompressKitError as err:
            if os.environ.get(DEBUG_ENV) == "1":
                raise
            raise click.ClickException(str(err)) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="compresskit")
def cli() -> None:
    """Structured pruning for BERT-family models: prune heads and FFN neurons, save and load
    the slim model exactly, and inspect it."""


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


# Options of `prune` that are not strategy config fields.
_JOB_KEYS = ("model", "strategy", "output", "overwrite", "seq_len", "trust_remote_code")


@cli.command()
@click.option("--strategy", help="Strategy name (see `compresskit strategies`).")
@click.option("--model", help="Model folder, compresskit folder or hub id.")
@click.option("--heads-ratio", type=float, help="Fraction of attention heads to remove, [0, 1).")
@click.option("--ffn-ratio", type=float, help="Fraction of FFN neurons to remove, [0, 1).")
@click.option("--output", type=click.Path(path_type=Path), help="Folder to write the model to.")
@click.option(
    "--recipe",
    type=click.Path(path_type=Path),
    help="YAML or JSON file with any of these options; flags override it.",
)
@click.option("--seed", type=int, help="Seed for strategies that draw random numbers.")
@click.option("--seq-len", type=click.IntRange(min=1), help="Sequence length for MACs [128].")
@click.option("--overwrite", is_flag=True, default=None, help="Replace an existing output.")
@click.option(
    "--trust-remote-code",
    is_flag=True,
    default=None,
    help="Allow a hub model's own Python code to run (off by default).",
)
def prune(recipe: Path | None, **flags: Any) -> None:
    """Prune a model with a one-shot strategy, save it and print the per-layer table."""
    from compresskit.pipeline import PruneJob, run_prune

    settings = read_recipe(recipe) if recipe else {}
    settings.update({k: v for k, v in flags.items() if v is not None})
    for required in ("strategy", "model", "output"):
        if required not in settings:
            raise click.UsageError(f"--{required} is required (or set {required!r} in --recipe)")
    job = {k: settings.pop(k) for k in _JOB_KEYS if k in settings}
    report = run_prune(
        PruneJob(
            model=str(job["model"]),
            strategy=str(job["strategy"]),
            output=Path(job["output"]),
            options=settings,
            overwrite=bool(job.get("overwrite", False)),
            seq_len=int(job.get("seq_len", 128)),
            trust_remote_code=bool(job.get("trust_remote_code", False)),
        )
    )
    click.echo(f"{job['model']} pruned with {job['strategy']} -> {job['output']}")
    click.echo(report.table())


def read_recipe(path: Path) -> dict[str, Any]:
    """A recipe's options, with dashes in keys read as underscores (`heads-ratio` too)."""
    import yaml

    from compresskit.errors import ConfigError

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))  # JSON is YAML too
    except OSError as err:
        raise ConfigError(f"cannot read recipe {path}: {err.strerror}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"recipe {path} is not valid YAML/JSON: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"recipe {path} must be a mapping of option names to values")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


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


def main() -> None:
    try:
        cli(prog_name="compresskit")
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
