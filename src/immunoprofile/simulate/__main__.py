"""``python -m immunoprofile.simulate OUT_DIR [--seed N] [--events N] [--subjects N]
[--no-controls] [--no-anomalies]``.

Contract: parses options, calls :func:`immunoprofile.simulate.simulate_trial`, prints the folder.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Generate the example trial; returns the process exit code."""
    from immunoprofile.simulate.trial import DEFAULT_SEED, simulate_trial

    parser = argparse.ArgumentParser(prog="python -m immunoprofile.simulate",
                                     description="Write the simulated example trial.")
    parser.add_argument("out_dir", help="destination folder (created)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="master seed")
    parser.add_argument("--events", type=int, default=8000, help="events per FCS file")
    parser.add_argument("--subjects", type=int, default=8, help="number of subjects (1-8)")
    parser.add_argument("--no-controls", action="store_true",
                        help="leave out controls/ (single-stain compensation controls)")
    parser.add_argument("--no-anomalies", action="store_true",
                        help="leave out the clogs and the drift (truth/acquisition.csv)")
    args = parser.parse_args(argv)
    if args.events < 1 or not 1 <= args.subjects <= 8:
        parser.error("--events must be >= 1 and --subjects between 1 and 8")
    out = simulate_trial(args.out_dir, seed=args.seed, n_events=args.events,
                         n_subjects=args.subjects, controls=not args.no_controls,
                         anomalies=not args.no_anomalies)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
