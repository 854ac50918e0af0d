"""HF transformers GPT-2 format: export parity (logits, greedy tokens, tokenizer ids), refusals, import."""

from __future__ import annotations

import json

import pytest
import torch

from lmlab.errors import LmlabError
from lmlab.export import export_hf, import_hf, load_hf_dir
from lmlab.export.hf_convert import hf_tokenizer_files
from lmlab.models import REGISTRY
from lmlab.run.config import build_model, resolve_config
from lmlab.run.folder import LoadedRun, load_run
from lmlab.tokenizers import CharTokenizer, load_tokenizer

transformers = pytest.importorskip("transformers")

TEXTS = ["emma", "olivia", "ava", "isabella", "sophia", "mia"]


def make_run(tmp_path, model="gpt", **model_values) -> LoadedRun:
    values = {"model": {"name": model, **model_values}}
    if model == "gpt":
        values["model"] = {"name": "gpt", "n_layer": 2, "n_head": 2, "n_embd": 32, **model_values}
    config = resolve_config(values)
    tokenizer = CharTokenizer.fit(TEXTS)
    built = build_model(config, tokenizer, 12).eval()
    with torch.no_grad():  # move biases and LayerNorms off their 0/1 init, so a missed one would show
        for _name, p in built.named_parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.1)
    return LoadedRun(tmp_path / "run", config, tokenizer, built, 0)


def load_hf(path):
    model = transformers.AutoModelForCausalLM.from_pretrained(path, local_files_only=True).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    return model, tokenizer


@pytest.mark.parametrize("variant", [{}, {"tie_embeddings": False, "activation": "gelu", "layer_norm_eps": 1e-6}])
def test_export_matches_transformers(tmp_path, variant):
    run = make_run(tmp_path, **variant)
    out = export_hf(run, tmp_path / "hf")
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= {
        p.name for p in out.iterdir()}
    hf_model, hf_tok = load_hf(out)
    assert type(hf_model).__name__ == "GPT2LMHeadModel"
    ids = torch.randint(run.tokenizer.vocab_size, (3, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, theirs = run.model(ids).logits, hf_model(ids).logits
    assert (ours - theirs).abs().max() < 1e-4
    prompt = torch.tensor([[0, 5, 9]])
    eos = run.tokenizer.boundary_id
    greedy_ours = run.model.generate(prompt, 8, do_sample=False, eos_token_id=eos)
    greedy_hf = hf_model.generate(prompt, max_new_tokens=8, do_sample=False, eos_token_id=eos, pad_token_id=eos)
    assert greedy_ours.tolist() == greedy_hf.tolist()
    for text in [*TEXTS, "", "mavis"]:
        assert hf_tok(text).input_ids == run.tokenizer(text).input_ids
    assert hf_tok.decode(run.tokenizer("isabella").input_ids) == "isabella"
    assert hf_tok.eos_token == "<|endoftext|>" and hf_tok.eos_token_id == eos


@pytest.mark.parametrize("model", ["mlp", "bigram"])
def test_export_refuses_models_gpt2_cannot_hold(tmp_path, model):
    with pytest.raises(LmlabError, match="cannot be expressed as GPT-2"):
        export_hf(make_run(tmp_path, model), tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def test_export_refuses_gpt_without_biases(tmp_path):
    with pytest.raises(LmlabError, match="bias"):
        export_hf(make_run(tmp_path, bias=False), tmp_path / "hf")


@pytest.mark.parametrize("ablation", ["attn_scale", "residual"])
def test_export_refuses_an_ablated_gpt(tmp_path, ablation):
    """GPT-2 has no switch for either ablation: an export would load in transformers and compute another model."""
    with pytest.raises(LmlabError, match=f"model.{ablation}=false"):
        export_hf(make_run(tmp_path, **{ablation: False}), tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def small_hf_gpt2(path, vocab_size: int, **config):
    torch.manual_seed(0)
    hf_config = transformers.GPT2Config(vocab_size=vocab_size, n_positions=24, n_embd=32, n_layer=2, n_head=4,
                                        bos_token_id=0, eos_token_id=0, **config)
    model = transformers.GPT2LMHeadModel(hf_config).eval()
    model.save_pretrained(path)
    return model


def test_import_random_gpt2_with_char_tokenizer(tmp_path):
    tokenizer = CharTokenizer.fit(TEXTS)
    hf_model = small_hf_gpt2(tmp_path / "hf", tokenizer.vocab_size)
    for name, text in hf_tokenizer_files(tokenizer, 24).items():
        (tmp_path / "hf" / name).write_text(text)
    run = import_hf(tmp_path / "hf", tmp_path / "run", {"source": "names"})
    loaded = load_run(tmp_path / "run")  # from disk, as `lmlab sample` and `lmlab eval` do
    assert loaded.tokenizer == tokenizer and loaded.model.config.block_size == 24
    assert loaded.config.train.lr == REGISTRY["gpt"].train_defaults["lr"]
    ids = torch.randint(tokenizer.vocab_size, (2, 24))
    with torch.no_grad():
        assert (loaded.model(ids).logits - hf_model(ids).logits).abs().max() < 1e-4
    assert run.step == 0 and (tmp_path / "run" / "trainer_state.pt").is_file()


def test_import_bpe_tokenizer_and_round_trip(tmp_path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(TEXTS * 5, trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    hf_model = small_hf_gpt2(tmp_path / "hf", bpe.get_vocab_size())
    transformers.PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>").save_pretrained(
        tmp_path / "hf")
    model, tokenizer = load_hf_dir(tmp_path / "hf")
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf", local_files_only=True)
    for text in ["emma and ava", "Zoë!"]:
        assert tokenizer(text).input_ids == hf_tok(text).input_ids
        assert tokenizer.decode(tokenizer(text).input_ids) == text
    tokenizer.save(tmp_path / "tok.json")
    assert load_tokenizer(tmp_path / "tok.json")("emma").input_ids == tokenizer("emma").input_ids
    # lmlab -> HF -> lmlab keeps the logits
    run = import_hf(tmp_path / "hf", tmp_path / "run")
    export_hf(run, tmp_path / "again")
    back, _ = load_hf_dir(tmp_path / "again")
    ids = torch.randint(tokenizer.vocab_size, (2, 16))
    with torch.no_grad():
        expected = hf_model(ids).logits
        assert (model(ids).logits - expected).abs().max() < 1e-4
        assert (back(ids).logits - expected).abs().max() < 1e-4


def test_import_refuses_what_lmlab_gpt_lacks(tmp_path):
    small_hf_gpt2(tmp_path / "hf", 10, scale_attn_by_inverse_layer_idx=True)
    with pytest.raises(LmlabError, match="scale_attn_by_inverse_layer_idx"):
        load_hf_dir(tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    (tmp_path / "hf" / "config.json").write_text(json.dumps({**config, "model_type": "llama"}))
    with pytest.raises(LmlabError, match="only the GPT-2 architecture"):
        load_hf_dir(tmp_path / "hf")
    with pytest.raises(LmlabError, match="config.json is missing"):
        load_hf_dir(tmp_path)


def test_char_tokenizer_with_spaces_and_newlines_exports_same_ids(tmp_path):
    text = "First Citizen:\nBefore we proceed any further, hear me speak.\n\n  All:\tSpeak."
    tokenizer = CharTokenizer.fit([text])
    for name, content in hf_tokenizer_files(tokenizer, 64).items():
        (tmp_path / name).write_text(content)
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    sample = "Before  we\nspeak,\n\thear."
    assert hf_tok(sample).input_ids == tokenizer(sample).input_ids
    assert hf_tok.decode(hf_tok(sample).input_ids) == sample
    assert hf_tok("<|endoftext|>ea").input_ids == [0, *tokenizer("ea").input_ids]


# ----------------------------------------------------------------------------------------------------------
# What the export carries beyond the weights: data mode, generation defaults, model card


def lines_run(tmp_path) -> LoadedRun:
    run = make_run(tmp_path)
    config = resolve_config({**run.config.to_dict(), "data": {"source": "names", "mode": "lines"}})
    return LoadedRun(run.run_dir, config, run.tokenizer, run.model, 0)


def test_lines_mode_export_adds_bos_and_imports_as_lines(tmp_path):
    run = lines_run(tmp_path)
    out = export_hf(run, tmp_path / "hf")
    hf_model, hf_tok = load_hf(out)
    assert hf_tok("emma").input_ids == run.tokenizer("emma", add_boundary=True).input_ids
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation == {"bos_token_id": 0, "eos_token_id": 0, "do_sample": True,
                          "temperature": 1.0, "top_k": 0, "top_p": 1.0, "max_length": 12}
    assert hf_model.generation_config.top_k == 0 and hf_model.generation_config.max_length == 12
    # Another eos passed to generate() must not turn the leading boundary (BOS) into padding.
    ids = hf_tok("emma", return_tensors="pt").input_ids
    other_eos = run.tokenizer("a").input_ids[0]
    with torch.no_grad():
        hf_out = hf_model.generate(ids, do_sample=False, max_length=12, eos_token_id=other_eos,
                                   output_logits=True, return_dict_in_generate=True)
        first_step = run.model(ids).logits[:, -1]
    assert (hf_out.logits[0] - first_step).abs().max() < 1e-4
    card = (out / "README.md").read_text()
    for needed in ("license:", "GPT2LMHeadModel", "context length | 12 tokens", "lines mode",
                   "lmlab train --data names --model gpt", "--set model.n_layer=2", "IndexError"):
        assert needed in card, needed
    # The mode comes back from config.json's "lmlab" entry ...
    assert json.loads((out / "config.json").read_text())["lmlab"]["data_mode"] == "lines"
    assert import_hf(out, tmp_path / "back", {"source": "names"}).config.data.mode == "lines"
    # ... or, without it (an older export), from the tokenizer that puts the boundary first.
    config = json.loads((out / "config.json").read_text())
    del config["lmlab"]
    (out / "config.json").write_text(json.dumps(config))
    back = import_hf(out, tmp_path / "back2", {"source": "names"})
    assert back.config.data.mode == "lines" and load_run(tmp_path / "back2").config.data.mode == "lines"
    assert back.tokenizer == run.tokenizer  # the post-processor is dropped: lmlab adds the boundary itself


def test_stream_mode_export_neither_adds_bos_nor_stops(tmp_path):
    run = make_run(tmp_path)
    config = resolve_config({**run.config.to_dict(), "data": {"source": "pystdlib", "mode": "stream"}})
    out = export_hf(LoadedRun(run.run_dir, config, run.tokenizer, run.model, 0), tmp_path / "hf")
    _, hf_tok = load_hf(out)
    assert hf_tok("emma").input_ids == run.tokenizer("emma").input_ids
    assert "eos_token_id" not in json.loads((out / "generation_config.json").read_text())
    assert import_hf(out, tmp_path / "back", {"source": "names"}).config.data.mode == "stream"


def test_export_refuses_a_non_empty_folder_and_any_run_directory(tmp_path):
    run = make_run(tmp_path)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(LmlabError, match="not empty.*--force"):
        export_hf(run, busy)
    assert sorted(p.name for p in busy.iterdir()) == ["notes.txt"]
    export_hf(run, busy, force=True)
    assert (busy / "model.safetensors").is_file() and (busy / "notes.txt").read_text() == "mine"
    # A run directory: never, with force or not (even the run's own).
    imported = import_hf(busy, tmp_path / "imported", {"source": "names"})
    before = {p.name: p.read_bytes() for p in imported.run_dir.iterdir()}
    for force in (False, True):
        with pytest.raises(LmlabError, match="is a run directory"):
            export_hf(imported, imported.run_dir, force=force)
        with pytest.raises(LmlabError, match="is a run directory"):
            export_hf(run, imported.run_dir, force=force)
    assert {p.name: p.read_bytes() for p in imported.run_dir.iterdir()} == before


# ----------------------------------------------------------------------------------------------------------
# Import: sizes checked before anything is built


def hf_dir_with(tmp_path, **overrides):
    path = tmp_path / "hf"
    if not path.exists():
        export_hf(make_run(tmp_path), path)
    config = json.loads((path / "config.json").read_text())
    config.update(overrides)
    (path / "config.json").write_text(json.dumps(config))
    return path


@pytest.mark.parametrize(("overrides", "message"), [
    ({"n_layer": 10000}, "n_layer=10,000 is outside 1..1,024"),
    ({"n_layer": 1000}, "holds 2 layer"),
    ({"n_positions": 10**9}, "n_positions=1,000,000,000 is outside"),
    ({"n_positions": 100_000}, r"wpe.weight is \(12, 32\), but config.json's sizes need \(100000, 32\)"),
    ({"n_embd": "32"}, "n_embd must be an integer"),
    ({"vocab_size": 10**6}, r"wte.weight is \(\d+, 32\)"),
])
def test_import_checks_config_against_the_weights_header(tmp_path, overrides, message):
    with pytest.raises(LmlabError, match=message):
        load_hf_dir(hf_dir_with(tmp_path, **overrides))


def test_import_refuses_a_config_that_is_not_an_object_and_truncated_weights(tmp_path):
    path = hf_dir_with(tmp_path)
    weights = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(weights[:-100])
    with pytest.raises(LmlabError, match="truncated"):
        load_hf_dir(path)
    (path / "config.json").write_text("[1, 2]")
    with pytest.raises(LmlabError, match="must hold a JSON object, not a list"):
        load_hf_dir(path)


def test_import_refuses_a_model_larger_than_memory(tmp_path, monkeypatch):
    from lmlab.export import safety

    path = hf_dir_with(tmp_path)
    monkeypatch.setattr(safety, "available_memory", lambda: 1000)
    with pytest.raises(LmlabError, match=r"needs about .* GiB of memory"):
        load_hf_dir(path)


def test_an_export_generates_without_a_warning(tmp_path):
    """The model card's example and plain generate() calls, with and without an attention mask, raise no
    warning and log none: transformers drops an all-ones mask, so a pad id in config.json made every
    lines-mode prompt (BOS first) look padded; a max_new_tokens beside generation_config's max_length
    made it say both were set."""
    import logging
    import re
    import warnings

    out = export_hf(lines_run(tmp_path), tmp_path / "hf")
    card = (out / "README.md").read_text()
    example = re.search(r"```python\n(.*?)```", card, re.S).group(1)
    assert "max_new_tokens" not in example
    example = example.replace("PATH/TO/THIS/FOLDER", str(out)).replace("PROMPT", "em")
    logged: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            logged.append(record.getMessage())

    hf_logger, keep = logging.getLogger("transformers"), Keep(logging.WARNING)
    hf_logger.addHandler(keep)
    logging.Logger.warning_once.cache_clear()  # a warning given once earlier in this process is given again
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            exec(compile(example, "README.md example", "exec"), {"print": lambda *a: None})
            hf_model, hf_tok = load_hf(out)
            inputs = hf_tok("em", return_tensors="pt")
            with torch.no_grad():
                hf_model.generate(**inputs)
                hf_model.generate(inputs.input_ids)
                hf_model.generate(**inputs, max_length=8)
    finally:
        hf_logger.removeHandler(keep)
    assert not logged, logged


@pytest.mark.parametrize("failure", ["SafetensorError", "OSError"])
def test_export_onto_a_full_disk_is_one_line_naming_the_path(tmp_path, monkeypatch, failure):
    """What safetensors raises when the disk fills (its own exception, the OS error inside its text), or an
    OSError(ENOSPC): either way one line naming the file and "disk full", and no half file left."""
    import errno

    import safetensors

    import lmlab.export.hf as hf_module
    from lmlab.files import DiskFull

    def full(*args, **kwargs):
        if failure == "OSError":
            raise OSError(errno.ENOSPC, "No space left on device")
        raise safetensors.SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                                          'message: "No space left on device" })')

    monkeypatch.setattr(hf_module.safetensors.torch, "save_file", full)
    out = tmp_path / "hf"
    with pytest.raises(DiskFull, match=r"model.safetensors: disk full") as caught:
        export_hf(make_run(tmp_path), out)
    assert "\n" not in str(caught.value) and "Safetensor" not in str(caught.value)
    assert not any(p.name.startswith(".model.safetensors") for p in out.iterdir())
