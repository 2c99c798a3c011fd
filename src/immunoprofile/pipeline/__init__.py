"""Batch runs from a config: :mod:`.config` (validated YAML), :mod:`.cache` (content-addressed
per-sample results), :mod:`.runner` (gate → cytokines → assemble → compare → report) and
:mod:`.validate` (check a config and its inputs without computing)."""
