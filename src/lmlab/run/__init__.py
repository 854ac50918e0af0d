"""The run: its config resolved (config.py), its data prepared (data.py), the defaults fitted to the data
(fit_defaults.py), its folder and the names of the files in it (folder.py), and the pipeline that trains or
loads one (pipeline.py: `train`, `load`, `Run`).

The pipeline is imported on first use: the lower parts (the folder, the config) are read by the trainer,
sample and evaluate, which the pipeline itself imports.
"""

__all__ = ["Run", "load", "train"]


def __getattr__(name: str):
    if name in __all__:
        from lmlab.run import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'lmlab.run' has no attribute {name!r}")
