"""``immunoprofile schema``: print the JSON Schema of pipeline configs."""

from __future__ import annotations

import click

from .common import common_options

__all__ = ["command"]


@click.command("schema")
@common_options
def command(verbosity) -> None:
    """Print the JSON Schema of pipeline configs (for editors and CI checks)."""
    import json

    from ..pipeline.config import config_json_schema

    click.echo(json.dumps(config_json_schema(), indent=2, sort_keys=True))
