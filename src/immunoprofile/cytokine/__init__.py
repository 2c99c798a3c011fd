"""Multiplex cytokine plates: read exports, fit standard curves, quantify and QC-flag.

Contract: :func:`read_plate` (tidy well × analyte :class:`PlateData`) feeds :func:`fit_curve`
and :func:`quantify_plate`; :func:`quantify_plates` quantifies plates already read (with
bridging across them). :func:`quantify_files` is the ``cytokines`` stage (exports in, quantified
plates and outputs out; its options are :class:`CytokineOptions`). Every name loads on first use.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "read_plate": "readers", "PlateData": "readers", "detect_format": "readers",
    "read_standards": "readers.standards",
    "fit_curve": "curves", "CurveFit": "curves",
    "quantify_plate": "quantify", "quantify_plates": "quantify", "PlateResult": "quantify",
    "write_cytokine_outputs": "quantify",
    "quantify_files": "stage", "QuantifyFilesResult": "stage",
    "QuantifyOptions": "options", "CytokineOptions": "options",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
