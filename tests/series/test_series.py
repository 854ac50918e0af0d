"""Forecasting: windows, the synthetic series and baselines against the reference figures, the forecasters
trained by the Trainer, the CSV source and the `lmlab forecast` command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lmlab.config import TrainConfig
from lmlab.errors import ConfigError, DataError
from lmlab.series.baselines import (
    baseline_forecasts,
    errors,
    moving_average_forecast,
    naive_forecast,
    seasonal_forecast,
)
from lmlab.series.conv_lstm import ConvLSTMForecaster, ConvLSTMForecasterConfig
from lmlab.series.data import WindowDataset, load_series, read_csv_column, split_time, synthetic_series
from lmlab.series.differencing import SeasonalDifference, detect_period
from lmlab.series.linear import LinearForecaster, LinearForecasterConfig
from lmlab.series.mlp import MLPForecaster, MLPForecasterConfig
from lmlab.training.trainer import Trainer

# -- windows ----------------------------------------------------------------------------------------------


def test_windows_and_pairs_by_hand():
    ds = WindowDataset(np.arange(10), window=3, shift=2)
    # tf.data: window(4, shift=2, drop_remainder=True) over 0..9 -> [0..3], [2..5], [4..7], [6..9]
    assert ds.windows.tolist() == [[0, 1, 2, 3], [2, 3, 4, 5], [4, 5, 6, 7], [6, 7, 8, 9]]
    (x, y), = list(ds.iter_batches(8))
    assert x.shape == (4, 3) and y.shape == (4,)
    assert x.tolist() == [[0, 1, 2], [2, 3, 4], [4, 5, 6], [6, 7, 8]] and y.tolist() == [3, 5, 7, 9]
    assert [len(b[1]) for b in WindowDataset(np.arange(10), window=3).iter_batches(3)] == [3, 3, 1]


def test_shuffle_buffer_covers_every_window_once_per_epoch():
    ds = WindowDataset(np.arange(50), window=4, shuffle_buffer=5)
    g = torch.Generator().manual_seed(0)
    epoch = [int(w[0]) for w in ds.shuffled(g)]
    assert sorted(epoch) == list(range(len(ds))) and epoch != sorted(epoch)
    # A buffer of 5 can only pull an element forward by at most 4 places.
    assert all(start <= position + 4 for position, start in enumerate(epoch))
    in_order = WindowDataset(np.arange(50), window=4, shuffle_buffer=1)
    assert [int(w[0]) for w in in_order.shuffled(g)] == list(range(len(in_order)))
    x, y = ds.sample_batch(100, g)  # straddles epochs
    assert x.shape == (100, 4) and torch.equal(y, x[:, -1] + 1)


def test_window_errors():
    with pytest.raises(DataError, match="no window"):
        WindowDataset(np.arange(3), window=3)
    with pytest.raises(DataError):
        WindowDataset(np.arange(10), window=0)


def test_split_respects_period():
    assert split_time(1000, period=100, val_fraction=0.25) == 700
    assert split_time(1000, val_fraction=0.25) == 750
    with pytest.raises(DataError, match="whole period"):
        split_time(100, period=365)


# -- synthetic series and baselines -----------------------------------------------------------------------


def test_synthetic_series_reproduces_reference_baselines():
    series = synthetic_series()
    assert series.shape == (1461,) and series.dtype == np.float32
    scores = {k: errors(series[1000:], v) for k, v in baseline_forecasts(series, 1000, period=365).items()}
    # the course's errors: naive 61.83 / 5.938, MA30 106.67 / 7.142, diff+MA 52.97 / 5.839, smoothed 33.45 / 4.569
    expected = {"naive": (61.83, 5.938), "moving average 30": (106.67, 7.142),
                "seasonal diff + MA 50": (52.97, 5.839),
                "seasonal diff + MA 50, past smoothed 10": (33.45, 4.569)}
    for name, (mse, mae) in expected.items():
        assert scores[name]["mse"] == pytest.approx(mse, abs=0.006)
        assert scores[name]["mae"] == pytest.approx(mae, abs=0.0006)


def test_baselines_match_loops():
    rng = np.random.default_rng(0)
    s = rng.normal(size=60).cumsum()
    start, p, w, k = 30, 12, 5, 4
    t = np.arange(start, len(s))
    assert np.allclose(naive_forecast(s, start), [s[i - 1] for i in t])
    assert np.allclose(moving_average_forecast(s, start, w), [s[i - w : i].mean() for i in t])
    diff_ma = np.array([np.mean([s[j] - s[j - p] for j in range(i - w, i)]) for i in t])
    assert np.allclose(seasonal_forecast(s, start, period=p, window=w), diff_ma + s[t - p])
    centred = np.array([s[i - p - k // 2 : i - p - k // 2 + k].mean() for i in t])
    assert np.allclose(seasonal_forecast(s, start, period=p, window=w, smooth=k), diff_ma + centred)
    with pytest.raises(DataError, match="history"):
        seasonal_forecast(s, 10, period=p, window=w)


# -- models and the trainer -------------------------------------------------------------------------------


@pytest.mark.parametrize("cls,config", [
    (LinearForecaster, LinearForecasterConfig(window=6)),
    (MLPForecaster, MLPForecasterConfig(window=6, n_hidden=8)),
    (ConvLSTMForecaster, ConvLSTMForecasterConfig(window=6, n_filters=4, n_hidden=8, kernel_size=3)),
])
def test_forecasters_speak_the_model_interface(cls, config):
    model = cls(config)
    out = model(torch.randn(5, 6), labels=torch.randn(5))
    assert out.logits.shape == (5,) and out.loss.shape == () and out.loss.item() > 0
    assert model(torch.randn(2, 6)).loss is None


def test_conv_lstm_reads_every_step_causally():
    torch.manual_seed(0)
    model = ConvLSTMForecaster(ConvLSTMForecasterConfig(window=8, n_filters=4, n_hidden=8, kernel_size=3))
    seen = []
    model.lstm.register_forward_hook(lambda _m, inputs, _o: seen.append(inputs[0]))
    x = torch.randn(2, 8)
    bumped = x.clone()
    bumped[:, -1] += 1.0  # change only the newest value
    base, changed = model(x).logits, model(bumped).logits
    assert seen[0].shape == (2, 8, 4)  # left padding keeps one conv feature per time step
    # Causal: features of steps before the last do not see the last value; the forecast does.
    assert torch.equal(seen[0][:, :-1], seen[1][:, :-1]) and not torch.equal(seen[0][:, -1], seen[1][:, -1])
    assert not torch.equal(base, changed)


def test_mean_loss_is_the_exact_mean_over_uneven_batches():
    from lmlab.training.scoring import mean_loss

    torch.manual_seed(0)
    ds = WindowDataset(np.random.default_rng(0).normal(size=40), window=5)  # 35 windows
    model = LinearForecaster(LinearForecasterConfig(window=5))
    loss, count = mean_loss(model, ds, batch_size=8)
    x, y = ds.windows[:, :-1], ds.windows[:, -1]
    assert count == 35
    with torch.no_grad():
        expected = float(torch.nn.functional.mse_loss(model(x).logits, y))
    assert loss == pytest.approx(expected, rel=1e-6)


def test_config_checks_name_the_field():
    with pytest.raises(ConfigError, match="model.window"):
        LinearForecasterConfig(window=0)
    with pytest.raises(ConfigError, match="model.n_hidden"):
        MLPForecasterConfig(n_hidden=0)


def test_trainer_trains_the_linear_forecaster(tmp_path):
    series = synthetic_series()[:400]
    train, val = WindowDataset(series[:300], 10), WindowDataset(series[290:], 10)
    torch.manual_seed(0)
    model = LinearForecaster(LinearForecasterConfig(window=10, loc=float(series[:300].mean()),
                                                    scale=float(series[:300].std())))
    config = TrainConfig(lr=1e-2, weight_decay=0.0, warmup_steps=0, max_steps=150, eval_interval=150,
                         log_interval=10, device="cpu")
    first_val = Trainer(model, train, val, config).evaluate()["val_loss"]
    trainer = Trainer(model, train, val, config, run_dir=tmp_path).fit()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert trainer.last_val_loss < first_val / 3 and losses[-1] < losses[0]
    assert records[0]["tokens"] == 32  # one target per window in a batch of 32, via count_targets
    assert [r for r in records if "val_loss" in r][-1]["val_tokens"] == len(val)


# -- data sources and the CLI -----------------------------------------------------------------------------


def test_csv_column(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("day,temp\n1,2.5\n2,3\n\n3,-1e1\n")
    assert read_csv_column(path, "temp").tolist() == [2.5, 3.0, -10.0]
    assert load_series(f"{path}:day").tolist() == [1.0, 2.0, 3.0]
    with pytest.raises(DataError, match="no column 'x'; columns are day, temp"):
        read_csv_column(path, "x")
    path.write_text("day,temp\n1,warm\n")
    with pytest.raises(DataError, match=r"t.csv:2: column 'temp' holds 'warm'"):
        read_csv_column(path, "temp")
    with pytest.raises(DataError, match="FILE.csv:COLUMN"):
        load_series("series.csv")


def test_csv_delimiter_detected_or_named(tmp_path):
    path = tmp_path / "semi.csv"
    path.write_text("date;temp\n2020-01-01;2.5\n2020-01-02;3\n2020-01-03;-1\n")
    assert read_csv_column(path, "temp").tolist() == [2.5, 3.0, -1.0]  # csv.Sniffer finds the ';'
    assert load_series(f"{path}:temp", delimiter=";").tolist() == [2.5, 3.0, -1.0]
    with pytest.raises(DataError, match=r"columns are 'date;temp': is the file separated by ';'\? "
                                        r"pass --delimiter ';'"):
        read_csv_column(path, "temp", delimiter=",")
    tabs = tmp_path / "tabs.tsv"
    tabs.write_text("t\tv\n1\t4\n2\t5\n")
    assert read_csv_column(tabs, "v").tolist() == [4.0, 5.0]


def test_forecast_cli_end_to_end(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    t = np.arange(160)
    values = 20 + 0.1 * t + 5 * np.sin(2 * np.pi * t / 20) + np.random.default_rng(1).normal(size=160)
    path = tmp_path / "s.csv"
    path.write_text("t,value\n" + "".join(f"{i},{v:.4f}\n" for i, v in zip(t, values, strict=True)))
    out = tmp_path / "run"
    result = cli("forecast", "--data", f"{path}:value", "--model", "mlp", "--window", "8", "--period", "20",
                 "--max-steps", "30", "--out", str(out), "--set", "train.eval_interval=15",
                 "--horizon", "5")
    assert result.returncode == 0, result.stderr
    for name in ("mlp ", "naive", "moving average 30", "seasonal diff + MA 50, past smoothed 10"):
        assert name in result.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["split_time"] == 100 and summary["validation_steps"] == 60
    assert (out / "forecast.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Differencing at --period (auto), the range test's rate, early stopping and the future beyond the data.
    assert summary["difference"] == {"period": 20, "smooth": 5} and summary["lr_found"]
    assert summary["mae"] == summary["scores"]["mlp"]["mae"] and len(summary["future"]) == 5
    assert "differenced at period 20" in result.stdout and "next 5 steps: " in result.stdout
    config = json.loads((out / "config.json").read_text())
    assert config["data"]["difference"] == {"period": 20, "smooth": 5}
    bad = cli("forecast", "--data", f"{path}:nope", "--out", str(tmp_path / "r2"))
    assert bad.returncode == 2 and "no column 'nope'" in bad.stderr and "Traceback" not in bad.stderr


# -- seasonal differencing and forecasts beyond the data --------------------------------------------------


def test_detect_period_from_the_autocorrelation():
    assert detect_period(synthetic_series()[:1000]) == 365
    t = np.arange(100)
    assert detect_period(20 + 0.1 * t + 5 * np.sin(2 * np.pi * t / 20)
                         + np.random.default_rng(1).normal(size=100)) == 20
    assert detect_period(np.random.default_rng(0).normal(size=500)) is None  # white noise: no season
    assert detect_period(np.random.default_rng(0).normal(size=500).cumsum()) is None  # a random walk neither


def test_seasonal_difference_by_hand_and_back():
    s = np.random.default_rng(0).normal(size=50).cumsum()
    diff = SeasonalDifference(12, smooth=4)
    assert diff.first == 14
    base = np.array([s[t - 12 - 2 : t - 12 + 2].mean() for t in range(14, 50)])  # centred on t - 12
    assert np.isnan(diff.base(s)[:14]).all() and np.allclose(diff.base(s)[14:], base)
    assert diff.base_at(s, 20) == pytest.approx(base[6])
    d = diff.apply(s)
    assert np.allclose(d, s[14:] - base, atol=1e-5)
    assert np.allclose(diff.restore(s, 14, d), s[14:], atol=1e-5)  # adding the period back undoes it
    assert np.allclose(SeasonalDifference(12).apply(s), s[12:] - s[:-12], atol=1e-5)  # plain differencing
    with pytest.raises(DataError, match="--smooth"):
        SeasonalDifference(4, smooth=8)


def test_prepare_fits_on_the_training_part_and_checks_room():
    from lmlab.series.forecast import prepare

    s = synthetic_series()
    plain = prepare(s, 1000, 20, period=365, difference="none")
    assert plain.difference is None and np.array_equal(plain.part(0, 1000), s[:1000])
    auto = prepare(s, 1000, 20, period=365)
    assert auto.difference == SeasonalDifference(365, 10) and auto.offset == 370
    assert len(auto.part(0, 1000)) == 630 and auto.part(1000)[0] == pytest.approx(s[1000] - s[630:640].mean())
    assert prepare(s, 1000, 20, period=None).difference is None  # auto without a season: off
    assert prepare(s, 1000, 20, period=None, difference=7).difference == SeasonalDifference(7, 1)
    with pytest.raises(DataError, match="leaves no window"):
        prepare(s, 380, 20, period=365)
    with pytest.raises(DataError, match="--difference takes auto, none or a period"):
        prepare(s, 1000, 20, period=None, difference="weekly")


def test_forecast_ahead_iterates_and_adds_the_period_back():
    from lmlab.series.forecast import Prepared, forecast_ahead, prepare

    s = np.random.default_rng(0).normal(size=60).cumsum().astype(np.float32)
    model = LinearForecaster(LinearForecasterConfig(window=3))
    with torch.no_grad():  # a model that repeats the last value it sees
        model.dense.weight.copy_(torch.tensor([[0.0, 0.0, 1.0]]))
        model.dense.bias.zero_()
    assert np.allclose(forecast_ahead(model, s, Prepared(s), 3, 4), [s[-1]] * 4)
    prepared = prepare(s, 40, 3, period=10, difference=10, smooth=2)
    future = forecast_ahead(model, s, prepared, 3, 15)
    # The last difference repeats; each step adds back the mean of the two values around one period earlier,
    # which past step 9 ahead are forecasts themselves.
    values, last = list(s.astype(np.float64)), float(prepared.values[-1])
    for _ in range(15):
        t = len(values)
        values.append(last + np.mean(values[t - 11 : t - 9]))
    assert np.allclose(future, values[60:], atol=1e-4)



@pytest.mark.slow
def test_linear_matches_the_differenced_baseline_and_least_squares(tmp_path):
    from lmlab.series.forecast import run_forecast

    # Plain MSE regression on the series itself (no differencing, fixed rate, no early stopping).
    result = run_forecast("synthetic", "linear", window=20, out=tmp_path, difference="none", patience=0,
                          model_values={"loss": "mse"})
    assert result.scores["linear"]["mae"] <= result.scores["seasonal diff + MA 50"]["mae"]  # 5.839
    # The reference: the closed-form least-squares fit of the same 20 weights and bias.
    s = synthetic_series().astype(np.float64)
    train = np.lib.stride_tricks.sliding_window_view(s[:1000], 21)
    coef = np.linalg.lstsq(np.c_[train[:, :-1], np.ones(len(train))], train[:, -1], rcond=None)[0]
    val = np.lib.stride_tricks.sliding_window_view(s[980:], 21)
    lstsq = errors(s[1000:], np.c_[val[:, :-1], np.ones(len(val))] @ coef)
    assert result.scores["linear"]["mae"] == pytest.approx(lstsq["mae"], abs=0.05)


@pytest.mark.slow
def test_plain_forecast_beats_the_best_baseline(tmp_path):
    """Issue 19's target: `lmlab forecast` with its defaults (seasonal differencing, range test, early
    stopping, Huber loss) at or below MAE 4.50, under the best baseline's 4.569."""
    from lmlab.series.forecast import run_forecast

    result = run_forecast("synthetic", "linear", out=tmp_path)
    best = min(v["mae"] for k, v in result.scores.items() if k != "linear")
    assert result.scores["linear"]["mae"] <= 4.50 < best  # 4.469 measured
    assert json.loads((tmp_path / "summary.json").read_text())["mae"] == result.scores["linear"]["mae"]
