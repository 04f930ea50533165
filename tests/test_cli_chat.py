"""`py-engine train | score | generate` on a chat model: the command-line contract (chat data in
every accepted format, --mode, scores as transformers + PEFT compute them, greedy completions
as transformers generates them) and its errors."""

import json

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from test_cli_classifier import cli, write_jsonl
from tiny_chat import tiny_chat_dir

ROWS = [
    {"messages": [{"role": "system", "content": "Be brief."},
                  {"role": "user", "content": "What is the capital of France?"},
                  {"role": "assistant", "content": "Paris."},
                  {"role": "user", "content": "And my name?"},
                  {"role": "assistant", "content": "Ada, and you like tea."}]},
    {"instruction": "Write a short poem about the sea", "input": "", "output": "Waves roll in, waves roll out."},
    {"instruction": "Summarize the text.", "input": "the quick brown fox jumps over the lazy dog",
     "output": "A fox jumps over a dog."},
    {"prompt": "Hello! How are you today?", "response": "I am fine, thank you."},
    {"text": "Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 2026."},
]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("chat-cli")
    model = tiny_chat_dir(root, family="llama", initializer_range=0.2)
    return root, model, write_jsonl(root / "chat.jsonl", ROWS * 2)


def peft_scores(model, adapter, rows):
    """transformers' mean loss over the assistant tokens (conversations) or every token after
    the first (text), with the tokens found independently of py_engine: the template through
    transformers, assistant contents located in the rendered text by their offsets."""
    tok = AutoTokenizer.from_pretrained(model)
    hf = AutoModelForCausalLM.from_pretrained(model)
    hf = PeftModel.from_pretrained(hf, adapter).eval() if adapter else hf.eval()
    out = []
    for row in rows:
        if "text" in row:
            ids = tok(row["text"]).input_ids
            labels = list(ids)
        else:
            messages = row.get("messages") or [
                {"role": "user", "content": row.get("prompt") or (row["instruction"] + (
                    "\n\n" + row["input"] if row.get("input") else ""))},
                {"role": "assistant", "content": row.get("response") or row.get("output")}]
            text = tok.apply_chat_template(messages, tokenize=False)
            enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
            ids, spans, pos = enc.input_ids, [], 0
            for m in messages:
                if m["role"] == "assistant":
                    start = text.index(m["content"] + "<|im_end|>", pos)
                    pos = start + len(m["content"]) + len("<|im_end|>")
                    spans.append((start, pos))
            labels = [i if any(a < e and s < b for a, b in spans) else -100
                      for i, (s, e) in zip(ids, enc.offset_mapping)]
        with torch.no_grad():
            loss = hf(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss.item()
        out.append((loss, sum(y != -100 for y in labels[1:])))
    return out


def check_scores_as_peft(model, adapter, data, rows):
    """`py-engine score` of the adapter gives PEFT's losses and token counts (1e-5)."""
    scored = cli("score", "--model", model, "--adapter", adapter, "--data", data)
    lines = [json.loads(line) for line in scored.stdout.splitlines()]
    for got, (loss, tokens) in zip(lines, peft_scores(model, adapter, rows)):
        assert got["tokens"] == tokens and abs(got["loss"] - loss) <= 1e-5 * loss


@pytest.mark.parametrize("mode", ["lora", "full", "dora"])
def test_train_score_generate(workspace, mode):
    check_train_score_generate(*workspace, mode)


def check_train_score_generate(root, model, data, mode):
    """Train (LoRA on every projection, DoRA there with mode "dora", or every weight), score
    and generate through the CLI; scores and the greedy reply against transformers (+ PEFT)."""
    out = root / f"out-{mode}"
    dora = mode == "dora"
    mode = "lora" if dora else mode
    # LoRA on every projection (PEFT's "all-linear": q, k, v, o, gate, up and down)
    lora = ("--target-modules", "all-linear") if mode == "lora" else ()   # full has no LoRA options
    lora += ("--use-dora",) if dora else ()
    trained = cli("train", "--model", model, "--data", data, "--out", out, "--mode", mode,
                  "--epochs", 2, "--lr", 1e-2 if mode == "lora" else 1e-3, "--batch-size", 4, *lora)
    steps = [json.loads(line) for line in trained.stderr.splitlines() if line.startswith('{"step"')]
    assert len(steps) == 6 and all(s["tokens"] > 0 for s in steps)
    if mode == "lora":      # spelled out in adapter_config.json, as PEFT saves it
        saved = json.loads((out / "adapter_config.json").read_text())["target_modules"]
        layers = {m.split(".")[2] for m in saved}
        assert len(saved) == 7 * len(layers) == len(set(saved)) and {m.rsplit(".", 1)[1] for m in saved} == {
            "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
        assert json.loads((out / "adapter_config.json").read_text())["use_dora"] is dora
    adapter_args = ("--adapter", out) if mode == "lora" else ()
    scored_model = model if mode == "lora" else out
    scored = cli("score", "--model", scored_model, *adapter_args, "--data", data)
    lines = [json.loads(line) for line in scored.stdout.splitlines()]
    want = peft_scores(scored_model, out if mode == "lora" else None, ROWS * 2)
    assert len(lines) == len(want)
    for got, (loss, tokens) in zip(lines, want):
        assert got["tokens"] == tokens
        assert abs(got["loss"] - loss) <= 1e-5 * loss

    prompt = "What is the capital of France?"
    generated = cli("generate", "--model", scored_model, *adapter_args, "--prompt", prompt,
                    "--max-new-tokens", 16, "--greedy")
    tok = AutoTokenizer.from_pretrained(model)
    hf = AutoModelForCausalLM.from_pretrained(scored_model)
    if mode == "lora":
        hf = PeftModel.from_pretrained(hf, out)
    ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True)
    ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
    reply = hf.eval().generate(torch.tensor([ids]), max_new_tokens=16, do_sample=False,
                               eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    assert generated.stdout.rstrip("\n") == tok.decode(reply[0, len(ids):], skip_special_tokens=True)


def test_sampling_options_and_errors(workspace):
    root, model, data = workspace
    a = cli("generate", "--model", model, "--prompt", "Hi", "--temperature", 0.8, "--top-p", 0.9,
            "--seed", 3, "--max-new-tokens", 8)
    b = cli("generate", "--model", model, "--prompt", "Hi", "--temperature", 0.8, "--top-p", 0.9,
            "--seed", 3, "--max-new-tokens", 8)
    assert a.stdout == b.stdout
    bad = write_jsonl(root / "bad.jsonl", [ROWS[0], {"messages": [{"role": "user"}]}])
    out = cli("train", "--model", model, "--data", bad, "--out", root / "x", check=False)
    assert out.returncode == 2 and "bad.jsonl:2" in out.stderr
    out = cli("generate", "--model", model, "--prompt", "Hi", "--greedy", "--temperature", 0.5, check=False)
    assert out.returncode == 2 and "greedy" in out.stderr
    out = cli("score", "--model", root / "missing", "--data", data, check=False)
    assert out.returncode == 2 and "missing" in out.stderr
    out = cli("generate", "--model", model, "--prompt", "Hi", "--max-length", 6,
              "--max-new-tokens", 8, check=False)      # prompt and reply together
    assert out.returncode == 2 and "+ max_new_tokens (8) exceeds max_length 6" in out.stderr
    assert not (root / "x").exists()


def test_a_lora_on_the_embedding_and_output_layer_from_the_command_line(workspace):
    """--target-modules naming embed_tokens and lm_head: the adapter holds PEFT's
    lora_embedding_A/B and lm_head's lora_A/B, PEFT scores as the CLI does (1e-5), and the
    GGUF exports carry them: merged, and as a llama.cpp adapter (token_embd's and output's
    pairs beside the projections'; test_lora_tables holds its values to the merged model)."""
    root, model, data = workspace
    out = root / "out-tables"
    cli("train", "--model", model, "--data", data, "--out", out, "--epochs", 1, "--lr", 1e-2,
        "--batch-size", 4, "--target-modules", "q_proj,v_proj,embed_tokens,lm_head")
    from gguf import GGUFReader

    from py_engine.formats import safetensors

    keys = set(safetensors.load(out / "adapter_model.safetensors").keys())
    assert {"base_model.model.model.embed_tokens.lora_embedding_A",
            "base_model.model.lm_head.lora_B.weight"} <= keys
    check_scores_as_peft(model, out, data, ROWS * 2)
    for fmt in ("gguf", "gguf-lora"):
        cli("export", "--format", fmt, "--model", model, "--adapter", out, "--out",
            root / "tables" / fmt)
    assert (root / "tables" / "gguf" / "model.gguf").is_file()
    names = {t.name for t in GGUFReader(root / "tables" / "gguf-lora" / "adapter.gguf").tensors}
    assert {f"{t}.weight.lora_{x}" for t in ("token_embd", "output") for x in "ab"} <= names


def check_exports_merged_only(model, adapter, root, words):
    """The adapter exports as a merged GGUF; as a GGUF adapter it is refused (`words` in the
    message) and nothing is written."""
    cli("export", "--format", "gguf", "--model", model, "--adapter", adapter, "--out", root / "gguf")
    assert (root / "gguf" / "model.gguf").is_file()
    refused = cli("export", "--format", "gguf-lora", "--model", model, "--adapter", adapter,
                  "--out", root / "gguf-lora", check=False)
    assert refused.returncode == 2 and words in refused.stderr, refused.stderr
    assert not (root / "gguf-lora").exists()


def test_modules_to_save_trains_the_output_layer_whole(workspace):
    """--modules-to-save lm_head: the output layer trains whole beside the LoRA (PEFT's
    modules_to_save); the adapter holds it and PEFT scores as the CLI does (1e-5). A classifier
    takes only its head (its module named otherwise is refused by name, before anything
    loads); T5 and training jobs refuse the option by name."""
    root, model, data = workspace
    out = root / "out-saved"
    cli("train", "--model", model, "--data", data, "--out", out, "--epochs", 1, "--lr", 1e-2,
        "--batch-size", 4, "--modules-to-save", "lm_head")
    assert json.loads((out / "adapter_config.json").read_text())["modules_to_save"] == ["lm_head"]
    from py_engine.formats import safetensors

    assert "base_model.model.lm_head.weight" in safetensors.load(out / "adapter_model.safetensors").keys()
    check_scores_as_peft(model, out, data, ROWS * 2)

    from peft_oracle import tiny_bert_dir

    bert = tiny_bert_dir(root / "bert")
    labelled = write_jsonl(root / "labelled.jsonl", [{"text": "a b", "label": "x"},
                                                      {"text": "c d", "label": "y"}])
    refused = cli("train", "--model", bert, "--data", labelled, "--out", root / "no",
                  "--modules-to-save", "classifier,LayerNorm", check=False)
    assert refused.returncode == 2 and "modules_to_save 'LayerNorm' names bert.embeddings." \
        "LayerNorm" in refused.stderr and not (root / "no").exists(), refused.stderr
    broken = root / "broken.jsonl"
    broken.write_text("{not json\n")
    norm = cli("train", "--model", model, "--data", broken, "--out", root / "no",
               "--modules-to-save", "model.norm", check=False)
    assert norm.returncode == 2 and "--modules-to-save: modules_to_save ['model.norm']" in norm.stderr \
        and "may train whole" in norm.stderr, norm.stderr     # named before the data is read
    job = cli("export-job", "--model", model, "--data", data, "--out", root / "job",
              "--modules-to-save", "lm_head", check=False)
    assert job.returncode == 2 and "--modules-to-save" in job.stderr and \
        "not for training jobs" in job.stderr, job.stderr


def test_peft_s_narrowing_and_per_module_options_from_the_command_line(workspace):
    """--use-rslora, --exclude-modules, --layers-to-transform, --rank-pattern and
    --alpha-pattern are PEFT's options: the adapter wraps what PEFT would (layer 0's q_proj and
    v_proj, v_proj at rank 4), its adapter_config.json says so, and PEFT scores it as the CLI
    does (1e-5: its scalings, lora_alpha/sqrt(r) per module, are ours; with PiSSA's start, the
    residual base it rebuilds is ours). A training job's
    adapter_config.json carries them too; a pattern that is no JSON object is refused."""
    root, model, data = workspace
    out = root / "out-narrowed"
    options = ["--target-modules", "q_proj,v_proj,o_proj", "--exclude-modules", "o_proj",
               "--layers-to-transform", "0", "--rank-pattern", '{"v_proj": 4}',
               "--alpha-pattern", '{"q_proj": 24}', "--use-rslora", "--r", "6",
               "--init-lora-weights", "pissa"]
    cli("train", "--model", model, "--data", data, "--out", out, "--epochs", 1, "--lr", 2e-2,
        "--batch-size", 4, *options)
    config = json.loads((out / "adapter_config.json").read_text())
    assert (config["use_rslora"], config["exclude_modules"], config["layers_to_transform"],
            config["rank_pattern"], config["alpha_pattern"], config["init_lora_weights"]) == \
        (True, ["o_proj"], [0], {"v_proj": 4}, {"q_proj": 24}, "pissa")
    from py_engine.formats import safetensors

    saved = safetensors.load(out / "adapter_model.safetensors")
    shapes = {k: saved.info(k)[1] for k in saved.keys()}
    prefix = "base_model.model.model.layers.0.self_attn."
    assert shapes == {prefix + "q_proj.lora_A.weight": (6, 32), prefix + "q_proj.lora_B.weight": (32, 6),
                      prefix + "v_proj.lora_A.weight": (4, 32), prefix + "v_proj.lora_B.weight": (16, 4)}
    check_scores_as_peft(model, out, data, ROWS * 2)
    cli("export-job", "--model", model, "--data", data, "--out", root / "job-narrowed", *options)
    job = json.loads((root / "job-narrowed" / "adapter" / "adapter_config.json").read_text())
    fields = ("use_rslora", "exclude_modules", "layers_to_transform", "rank_pattern",
              "alpha_pattern", "r", "init_lora_weights")
    assert {k: job[k] for k in fields} == {k: config[k] for k in fields}
    refused = cli("train", "--model", model, "--data", data, "--out", root / "no",
                  "--rank-pattern", "v_proj=4", check=False)
    assert refused.returncode == 2 and "expected a JSON object" in refused.stderr, refused.stderr
