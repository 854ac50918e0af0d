"""lmlab: train, look inside, compare and sample language models on your own text.

    import lmlab
    run = lmlab.train({"model": {"name": "gpt"}}, out="runs/gpt")   # the pipeline `lmlab train` runs
    run = lmlab.load("runs/gpt")                                    # a finished run
    run.sample(n=5), run.evaluate("test"), run.inspect(), run.export("hf", "hf-gpt")
"""

__version__ = "0.1.0"

__all__ = ["Run", "__version__", "load", "train"]


def __getattr__(name: str):
    # Imported on first use, so `import lmlab` (and every `lmlab.x` submodule import) stays light.
    if name in ("train", "load", "Run"):
        from lmlab import run

        return getattr(run, name)
    raise AttributeError(f"module 'lmlab' has no attribute {name!r}")
