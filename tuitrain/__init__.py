"""tuitrain: a terminal training monitor for PyTorch image classifiers."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # PEP 562: `tuitrain.init` loads the logging API on first use, so `import tuitrain` stays light
    # (no textual, no torch, no pydantic until a script starts a run)
    if name in ("init", "Run"):
        from tuitrain import script

        return getattr(script, name)
    raise AttributeError(f"module 'tuitrain' has no attribute {name!r}")
