"""The torch-free names the help lists are the registry's."""

from lmlab import ladder, models
from lmlab.names import DEFAULT_MODEL, LADDER_RUNGS, MODEL_NAMES


def test_the_names_are_the_registrys():
    assert MODEL_NAMES == tuple(models.REGISTRY)
    assert DEFAULT_MODEL == models.DEFAULT_MODEL
    assert LADDER_RUNGS == tuple(ladder.default_rungs())

