import pytest

from lmlab.config import TrainConfig, Typed, build_config, load_config_file, parse_set_args
from lmlab.errors import ConfigError, check_count
from lmlab.run.config import resolve_config


def test_set_args_are_typed():
    values = parse_set_args(["train.lr=3e-3", "train.max_steps=1_000", "model.norm=batch"])
    config = resolve_config({**values, "model": {"name": "mlp", **values["model"]}})
    assert config.train.lr == 0.003 and config.train.max_steps == 1000 and config.model.norm == "batch"


@pytest.mark.parametrize("pairs, message", [
    (["train.lrr=1"], "unknown key train.lrr"),
    (["train.max_steps=lots"], "not an int"),
    (["train.lr=-1"], "must be positive"),
    (["model.norm=group"], "not one of"),
    (["data.val_fraction=0.6", "data.test_fraction=0.5"], "leave something to train on"),
    (["nonsense"], "SECTION.KEY=VALUE"),
    (["optim.lr=1"], "unknown config section"),
])
def test_bad_values_name_the_field(pairs, message):
    with pytest.raises(ConfigError, match=message):
        values = parse_set_args(pairs)
        resolve_config({**values, "model": {"name": "mlp", **values.get("model", {})}})


def test_unknown_model_lists_choices():
    with pytest.raises(ConfigError, match="ngram, bigram, mlp"):
        resolve_config({"model": {"name": "transformerxl"}})


def test_model_defaults_sit_between_trainconfig_and_user():
    assert resolve_config({"model": {"name": "bigram"}}).train.lr == 10.0
    assert resolve_config({"model": {"name": "bigram"}, "train": {"lr": 0.01}}).train.lr == 0.01


def test_config_round_trips_through_json():
    config = resolve_config({"model": {"name": "mlp", "n_hidden": 64}, "train": {"seed": 7}})
    assert resolve_config(config.to_dict()) == config
    # text is read as a number only when typed on the command line; a config file states its types
    assert build_config(TrainConfig, {"eval_interval": Typed("30")}, "train").eval_interval == 30
    with pytest.raises(ConfigError, match="'30' is not an int"):
        build_config(TrainConfig, {"eval_interval": "30"}, "train")
    assert build_config(TrainConfig, {"budget": "30s"}, "train").budget == "30s"


def test_check_count_bounds_a_users_count_before_work():
    assert check_count(5, "--seeds", 10) == 5
    assert check_count(0, "--horizon", 10, least=0) == 0
    for value, says in ((0, "--seeds must be at least 1, got 0"), (11, "--seeds must be at most 10, got 11"),
                        (True, "must be a whole number"), (2.0, "must be a whole number")):
        with pytest.raises(ConfigError, match=says):
            check_count(value, "--seeds", 10)


def test_a_config_file_section_must_be_a_table(tmp_path):
    for name, text in (("c.toml", "model = 5\n"), ("c.json", '{"train": [1, 2]}'), ("d.json", "[1]")):
        (tmp_path / name).write_text(text)
        with pytest.raises(ConfigError, match="section|not sections"):
            load_config_file(tmp_path / name)
