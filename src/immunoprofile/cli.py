"""The ``immunoprofile`` command line: a thin click group over the library.

Subcommands live in ``immunoprofile._cli.<name>`` and are imported only when invoked, so
``immunoprofile --help`` stays instant (no numpy/pandas/anndata/flowkit import).
Exit codes: 0 all good, 1 some samples failed (listed), 2 usage error or invalid input.
"""

from __future__ import annotations

import importlib

import click

__all__ = ["main", "cli"]

# name -> (module under immunoprofile._cli, one-line help shown by --help without importing it)
COMMANDS: dict[str, tuple[str, str]] = {
    "inspect": ("inspect", "First look at an FCS file: channels, markers, spillover, keywords."),
    "gate": ("gate", "Compensate, transform, gate and summarise FCS files."),
    "compensate": ("compensate", "Compute a spillover matrix from single-stain controls."),
    "plot": ("plot", "Density plot or histogram of a population, with the strategy's gates."),
    "cytokines": ("cytokines", "Fit standard curves and quantify multiplex cytokine plates."),
    "assemble": ("assemble", "Join flow and cytokine results with the manifest into AnnData."),
    "compare": ("compare", "Compare run-in, treatment and post-treatment periods."),
    "report": ("report", "Build the self-contained HTML QC and results report."),
    "run": ("run", "Run a whole pipeline config (gate, cytokines, assemble, compare, report)."),
    "validate": ("validate", "Check a pipeline config and its inputs without computing."),
    "schema": ("schema", "Print the JSON Schema of pipeline configs."),
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module = importlib.import_module(f"immunoprofile._cli.{COMMANDS[cmd_name][0]}")
        return module.command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, short) for name, (_, short) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="immunoprofile")
def cli() -> None:
    """immunoprofile: flow cytometry and cytokine plates to trustworthy study matrices."""


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="immunoprofile")


if __name__ == "__main__":  # pragma: no cover
    main()
