"""Click commands, one module each; every module exposes ``command``. No science here."""
