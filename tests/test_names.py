"""The torch-free names the help lists are the registry's, and a misspelt name finds the one it meant."""

from lmlab import ladder, models
from lmlab.names import DEFAULT_MODEL, LADDER_RUNGS, MODEL_NAMES, did_you_mean


def test_the_names_are_the_registrys():
    assert tuple(models.REGISTRY) == MODEL_NAMES
    assert DEFAULT_MODEL == models.DEFAULT_MODEL
    assert tuple(ladder.default_rungs()) == LADDER_RUNGS


def test_a_close_name_is_suggested_and_a_far_one_is_not():
    assert did_you_mean("gtp", MODEL_NAMES) == "did you mean 'gpt'? "
    assert did_you_mean("lsmt", MODEL_NAMES) == "did you mean 'lstm'? "
    assert did_you_mean("transformer", MODEL_NAMES) == ""
    assert did_you_mean("lrr", ["lr", "batch_size"], prefix="train.") == "did you mean 'train.lr'? "
    assert did_you_mean(3, MODEL_NAMES) == ""  # a config file may hold any value
