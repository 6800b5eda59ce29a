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


def main() -> None:
    try:
        cli(prog_name="compresskit")
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
