"""The options of the report stage (see :mod:`immunoprofile._options`).

:class:`ReportOptions` is :func:`~immunoprofile.report.build_report`'s keywords, the flags of
``immunoprofile report`` and (with ``enabled``) a config's ``report:`` section. Pydantic only.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from .._options import Cli, StageOptions

__all__ = ["ReportOptions"]


class ReportOptions(StageOptions):
    """The HTML report."""

    title: str | None = Field(None, description="The report's title (default \"immunoprofile "
                                                "report\"; in a run: the config's name).")
    max_gating_samples: int = Field(200, ge=0, description="At most this many samples get a "
                                    "gating figure (outliers first, then file order).")
    gating: Annotated[bool, Cli(flag="--gating", secondary="--no-gating")] = Field(
        True, description="Draw per-sample gating figures (re-reads the FCS files named in the "
                          "provenance).")
    jobs: int = Field(2, ge=1, description="Processes drawing the gating figures (1 = in this "
                                           "process).")
