"""The throughput a training run shows: in the data's own unit, and FLOP/s only where the estimate holds."""

import torch

from lmlab.config import TrainConfig
from lmlab.training.progress import Progress


def _shown(unit: str) -> tuple[str, dict]:
    model = torch.nn.Linear(4, 1)
    # peak_tflops given: no CPU matmul rate to measure for the test
    progress = Progress(model, TrainConfig(max_steps=10, peak_tflops=1.0), step=0, block_size=4,
                        device=torch.device("cpu"), dtype=torch.float32, world_size=1, show=False, unit=unit)
    progress.step_done(1000)
    record = {"loss": 1.0, "lr": 1e-3}
    progress.logged(record, None)
    progress.close()
    return progress.speed(record), record


def test_text_shows_tokens_and_flops():
    line, record = _shown("tokens")
    assert " tokens/s, " in line and "GFLOP/s" in line and "of peak" in line
    assert record["flops_per_s"] > 0 and "mfu" in record


def test_windows_and_images_show_their_own_unit_and_no_flops():
    for unit in ("windows", "images"):
        line, record = _shown(unit)
        assert line.startswith("; ") and line.endswith(f" {unit}/s"), line
        assert "tokens" not in line and "FLOP" not in line
        assert record["tokens_per_s"] > 0 and "flops_per_s" not in record and "mfu" not in record
