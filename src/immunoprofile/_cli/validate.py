"""``immunoprofile validate CONFIG``: check a config and its inputs without computing."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .common import common_options, echo_err

__all__ = ["command"]


@click.command("validate")
@click.argument("config", type=click.Path(path_type=Path))
@common_options
def command(config: Path, verbosity) -> None:
    """Check CONFIG, its manifest and every input file; one line per problem, exit 2 if any."""
    from ..pipeline.validate import validate_config

    problems = validate_config(config)
    for problem in problems:
        echo_err(str(problem))
    if problems:
        echo_err(f"{len(problems)} problem(s) found in {config} and its inputs")
        sys.exit(2)
    if not verbosity.quiet:
        click.echo(f"{config}: OK (config, manifest and inputs check out)")
