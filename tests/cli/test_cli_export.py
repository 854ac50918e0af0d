"""`lmlab export` and `lmlab import` through the CLI's own entry point (in-process, so no interpreter start-up):
files written, one-line refusals, and an imported run that evaluates, samples and fine-tunes."""

from __future__ import annotations

import json

import pytest

from lmlab.cli import main

pytest.importorskip("transformers")

TINY_GPT = ["--set", "model.n_layer=1", "--set", "model.n_embd=16", "--set", "model.n_head=2"]


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["-q", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_export_import_eval_sample_finetune(tmp_path, tiny_names, capsys):
    run, hf, back = tmp_path / "run", tmp_path / "hf", tmp_path / "back"
    code, _, err = cli(capsys, "train", "--data", str(tiny_names), "--model", "gpt", "--max-steps", "3",
                       "--out", str(run), *TINY_GPT)
    assert code == 0, err
    code, out, err = cli(capsys, "export", str(run), "--format", "hf", str(hf))
    assert code == 0, err
    assert "AutoModelForCausalLM" in out
    config = json.loads((hf / "config.json").read_text())
    assert config["model_type"] == "gpt2" and config["n_layer"] == 1 and config["n_embd"] == 16

    code, out, err = cli(capsys, "import", str(hf), "--out", str(back), "--data", str(tiny_names))
    assert code == 0, err
    nll = [json.loads(cli(capsys, "eval", str(r), "--json")[1])["nll"] for r in (run, back)]
    assert nll[0] == pytest.approx(nll[1], abs=1e-5)
    code, out, _ = cli(capsys, "sample", str(back), "-n", "3", "--json")
    assert code == 0 and len(json.loads(out)["samples"]) == 3
    code, _, err = cli(capsys, "train", "--out", str(back), "--resume", "--max-steps", "2")
    assert code == 0, err
    assert json.loads((back / "summary.json").read_text())["steps"] == 2


def test_export_refuses_an_mlp_run_in_one_line(tmp_path, tiny_names, capsys):
    run = tmp_path / "mlp"
    assert cli(capsys, "train", "--data", str(tiny_names), "--model", "mlp", "--max-steps", "2",
               "--out", str(run))[0] == 0
    code, _, err = cli(capsys, "export", str(run), str(tmp_path / "hf"))
    assert code == 2
    assert err.count("\n") == 1 and "'mlp' model cannot be expressed as GPT-2" in err


def test_import_of_a_missing_directory_is_one_line(tmp_path, capsys):
    code, _, err = cli(capsys, "import", str(tmp_path / "nothing"), "--out", str(tmp_path / "run"))
    assert code == 2 and err.count("\n") == 1 and "config.json is missing" in err


def test_import_will_not_overwrite_a_run(tmp_path, tiny_names, capsys):
    run = tmp_path / "run"
    assert cli(capsys, "train", "--data", str(tiny_names), "--model", "gpt", "--max-steps", "1", "--out", str(run),
               *TINY_GPT)[0] == 0
    assert cli(capsys, "export", str(run), str(tmp_path / "hf"))[0] == 0
    code, _, err = cli(capsys, "import", str(tmp_path / "hf"), "--out", str(run))
    assert code == 2 and "is a run directory" in err


@pytest.fixture(scope="module")
def lines_run(tmp_path_factory):
    """A tiny GPT trained 40 steps on made-up names (lines mode): enough that greedy samples end."""
    import random

    from lmlab.cli import main

    folder = tmp_path_factory.mktemp("lines")
    rng = random.Random(0)
    syllables = ["ka", "mi", "lo", "ra", "en", "to", "sa", "li", "na", "ve"]
    names = sorted({"".join(rng.choice(syllables) for _ in range(rng.randint(1, 3))) for _ in range(400)})[:200]
    (folder / "names.txt").write_text("\n".join(names) + "\n")
    assert main(["-q", "train", "--data", str(folder / "names.txt"), "--model", "gpt", "--max-steps", "40",
                 "--out", str(folder / "run"), "--no-inspect", *TINY_GPT]) == 0
    return folder / "run"


def test_pipeline_greedy_text_equals_lmlab_sample(tmp_path, lines_run, capsys):
    transformers = pytest.importorskip("transformers")
    capsys.readouterr()
    code, out, err = cli(capsys, "export", str(lines_run), str(tmp_path / "hf"))
    assert code == 0, err
    context = json.loads((lines_run / "config.json").read_text())["model"]["block_size"]
    assert f"context {context} tokens" in out
    generate = transformers.pipeline("text-generation", model=str(tmp_path / "hf"))
    for prompt in ["", "ka", "mi"]:
        code, out, err = cli(capsys, "sample", str(lines_run), "-n", "1", "--temperature", "0", "--prompt", prompt,
                             "--json")
        ours = json.loads(out)["samples"][0]
        # The tokenizer adds the boundary as BOS, generation stops at it: one name, as lmlab samples it.
        assert generate(prompt, do_sample=False)[0]["generated_text"] == ours, prompt
    # Imported back, the export is a lines-mode run again: its samples end at the boundary, as the original's.
    back = tmp_path / "back"
    code, _, err = cli(capsys, "import", str(tmp_path / "hf"), "--out", str(back), "--data",
                       str(lines_run.parent / "names.txt"))
    assert code == 0, err
    for run in (lines_run, back):
        code, out, err = cli(capsys, "sample", str(run), "-n", "5", "--json")
        assert code == 0, err
        samples = json.loads(out)["samples"]
        assert max(len(s) for s in samples) <= max(4 * context, 64), samples  # stream mode would run to 500
        if run == lines_run:
            expected = samples
    assert samples == expected


def test_export_cli_refuses_a_busy_folder_and_a_run(tmp_path, lines_run, capsys):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("x")
    code, _, err = cli(capsys, "export", str(lines_run), str(busy))
    assert code == 2 and err.count("\n") == 1 and "--force" in err
    assert cli(capsys, "export", str(lines_run), str(busy), "--force")[0] == 0
    before = {p.name: p.stat().st_mtime_ns for p in lines_run.iterdir()}
    for extra in ([], ["--force"]):
        code, _, err = cli(capsys, "export", str(lines_run), str(lines_run), *extra)
        assert code == 2 and "is a run directory (the run being exported)" in err
        code, _, err = cli(capsys, "export", str(lines_run), str(lines_run / "hf"), *extra)  # inside the run
        assert code == 2 and f"is inside the run {lines_run}" in err
    assert {p.name: p.stat().st_mtime_ns for p in lines_run.iterdir()} == before


def gpt2_with_byte_level_bpe(path, texts):
    """A GPT-2-shaped model and a byte-level BPE tokenizer made locally with tokenizers/transformers."""
    import torch
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=bpe.get_vocab_size(), n_positions=32, n_embd=32, n_layer=2,
                                     n_head=4, bos_token_id=0, eos_token_id=0)
    transformers.GPT2LMHeadModel(config).save_pretrained(path)
    transformers.PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>").save_pretrained(path)


def test_readme_round_trip_import_sample_finetune_export_bpe(tmp_path, tiny_names, capsys):
    import torch
    import transformers

    from lmlab.run.folder import load_run

    hf, run, again = tmp_path / "hf", tmp_path / "run", tmp_path / "again"
    gpt2_with_byte_level_bpe(hf, tiny_names.read_text().splitlines())
    code, out, err = cli(capsys, "import", str(hf), "--out", str(run), "--data", str(tiny_names))
    assert code == 0, err
    code, out, err = cli(capsys, "sample", str(run), "-n", "2", "--json")
    assert code == 0 and len(json.loads(out)["samples"]) == 2, err
    # The README's fine-tune: the reloaded BPE tokenizer must equal the one the data is encoded with.
    code, out, err = cli(capsys, "train", "--out", str(run), "--resume", "--max-steps", "5", "--no-inspect")
    assert code == 0, err
    saved = json.loads((run / "config.json").read_text())["data"]
    assert saved["tokenizer"] == "bpe" and saved["mode"] == "lines"
    assert json.loads((run / "summary.json").read_text())["steps"] == 5
    code, out, err = cli(capsys, "export", str(run), str(again))
    assert code == 0, err
    tuned = load_run(run)
    model = transformers.AutoModelForCausalLM.from_pretrained(again, local_files_only=True).eval()
    tok = transformers.AutoTokenizer.from_pretrained(again, local_files_only=True)
    ids = torch.tensor([tok("kamilo ravesa").input_ids])
    assert ids[0, 0] == tuned.tokenizer.boundary_id  # a lines-mode run: BOS first
    with torch.no_grad():
        assert (model(ids).logits - tuned.model(ids).logits).abs().max() < 1e-4
    assert json.loads((again / "config.json").read_text())["lmlab"]["tokenizer"] == "bpe"
