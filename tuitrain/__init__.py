"""tuitrain: a terminal training monitor for PyTorch, and a logging API for any training script."""

__version__ = "0.1.0"

API = ("init", "Run", "log", "log_epoch", "define_metric", "finish")
"""The logging API's functions (tuitrain.script), loaded on first use."""
CURRENT = ("run", "config", "summary")
"""wandb's module attributes that follow the run started by init()."""
WANDB_UNSUPPORTED = (
    "Artifact", "Image", "Table", "Histogram", "Audio", "Video", "Html", "Object3D", "Molecule", "Plotly", "Graph",
    "watch", "unwatch", "agent", "sweep", "controller", "login", "save", "restore", "alert", "log_artifact",
    "use_artifact", "log_model", "use_model", "link_model", "mark_preempting", "Settings", "plot", "Api", "setup",
    "teardown", "require", "termlog", "termwarn", "termerror", "AlertLevel",
)  # fmt: skip
"""What wandb has and tuitrain does not do: accepted and ignored, with one warning each (tuitrain.script.Ignored)."""


def __getattr__(name: str):
    # PEP 562: `tuitrain.init` loads the logging API on first use, so `import tuitrain` stays light
    # (no textual, no torch, no pydantic until a script starts a run); only these names, so that
    # `from tuitrain import <submodule>` still imports the submodule
    if name in API:
        from tuitrain import script

        return getattr(script, name)
    if name in CURRENT or name in WANDB_UNSUPPORTED:
        from tuitrain import script

        return script.module_attribute(name)
    raise AttributeError(f"module 'tuitrain' has no attribute {name!r}")
