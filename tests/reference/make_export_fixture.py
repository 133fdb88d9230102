#!/usr/bin/env python3
"""Write the export reference fixture: logits of base + adapter computed by transformers + peft,
and checks that the directory our ./export_hf writes loads in transformers to the same model.

Reference only: the expected logits come from PyTorch + transformers + peft (and, as a cross-check,
from make_fixtures.independent_forward on weights merged here in float64), never from our C++
code. Rerun only to regenerate (see tests/reference/README.md), after building the tools:

    python3 tests/reference/make_export_fixture.py [--bin-dir .] [--regenerate-ours-adapter]

Reads:   tests/fixtures/tiny_llama/ (base model), tests/fixtures/tiny_llama_peft_adapter/ (written
         by PEFT), tests/fixtures/ours_adapter/ (written by our train_longlora).
Runs:    ./export_hf on each adapter (--dtype f32) into a temporary directory.
Writes:  tests/fixtures/export_reference.safetensors
         tests/fixtures/ours_adapter/ (only with --regenerate-ours-adapter: ./tokenize the GPL-3
         text, then ./train_longlora -ctx 256 for 4 steps; see OURS_TRAIN below)

Cases ("LoRA+" applied as LongLoRA's merge_lora_weights_and_save_hf_model.py does: the trained
embeddings/norms loaded into the base with load_state_dict(strict=False), then
PeftModel.from_pretrained; rope_scaling {"type": "linear", "factor": F} set on the base config as
LongLoRA's eval.py does):
  peft  PEFT's adapter (LoRA only, no longlora.json), exported with --rope-factor 2
  ours  our adapter (LoRA + trainable_params.safetensors + longlora.json, factor 2 from it)

Checks (exits non-zero on failure): peft loads every LoRA tensor of both adapters bit for bit;
the exported directory's config.json carries the factor and loads with from_pretrained (no
override) to logits equal to base + adapter (relative 1e-5), to a float64 independent forward of
the merged weights, and to peft's merge_and_unload weights; without the rope_scaling the exported
model's logits past max_position_embeddings are far off (why the factor must be exported).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

import torch
import transformers
import peft
from peft import PeftModel, get_peft_model_state_dict
from safetensors.torch import load_file

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
import make_fixtures as mf  # noqa: E402  (load_model, logits_of, independent_forward)
import make_training_fixtures as mtf  # noqa: E402  (check, write_safetensors, determinism)

BASE = os.path.join("tests", "fixtures", "tiny_llama")
PEFT_ADAPTER = os.path.join("tests", "fixtures", "tiny_llama_peft_adapter")
OURS_ADAPTER = os.path.join("tests", "fixtures", "ours_adapter")
OUT = os.path.join("tests", "fixtures", "export_reference.safetensors")

CASES = [("peft", PEFT_ADAPTER, 2.0), ("ours", OURS_ADAPTER, None)]  # None: from longlora.json
N_TOKENS, SEED_TOKENS = 160, 44       # 160 > max_position_embeddings 128
POSITIONS = list(range(3, N_TOKENS, 4))  # the logit rows stored (40; 8 of them past 128)
OURS_FILES = ["adapter_config.json", "adapter_model.safetensors", "trainable_params.safetensors",
              "longlora.json"]
# How tests/fixtures/ours_adapter was made (--regenerate-ours-adapter reruns it).
OURS_TRAIN = ["-m", BASE, "-ctx", "256", "--steps", "4", "--lr", "1e-3", "--warmup", "0",
              "--grad-accum", "1", "--seed", "7", "--device", "cpu"]
PEFT_PREFIX = "base_model.model."


def regenerate_ours_adapter(bin_dir, tmp):
    shard = os.path.join(tmp, "gpl3.shard")
    run_dir = os.path.join(tmp, "train")
    subprocess.run([os.path.join(bin_dir, "tokenize"), "-m", BASE, "-o", shard,
                    "/usr/share/common-licenses/GPL-3"], check=True)
    subprocess.run([os.path.join(bin_dir, "train_longlora")] + OURS_TRAIN +
                   ["--data", shard, "--out", run_dir], check=True)
    if os.path.isdir(OURS_ADAPTER):
        shutil.rmtree(OURS_ADAPTER)
    os.makedirs(OURS_ADAPTER)
    for name in OURS_FILES:
        shutil.copy(os.path.join(run_dir, name), os.path.join(OURS_ADAPTER, name))


def adapter_factor(adapter_dir, given):
    if given is not None:
        return given
    with open(os.path.join(adapter_dir, "longlora.json")) as f:
        rec = json.load(f)
    mtf.check("longlora.json format", rec["format"] == "longlora-adapter" and rec["version"] == 1
              and rec["rope_scaling"]["type"] == "linear", json.dumps(rec))
    return float(rec["rope_scaling"]["factor"])


def trained_params(adapter_dir):
    path = os.path.join(adapter_dir, "trainable_params.safetensors")
    if not os.path.exists(path):
        return {}
    return {k[len(PEFT_PREFIX):] if k.startswith(PEFT_PREFIX) else k: v
            for k, v in load_file(path).items()}


def reference_model(adapter_dir, factor):
    """Base with rope_scaling, trained tensors loaded, then PeftModel.from_pretrained."""
    base = mf.load_model(BASE, {"type": "linear", "factor": factor})
    mtf.check("base rope factor", mf.rope_factor_of(base) == ("linear", factor),
              str(mf.rope_factor_of(base)))
    trained = trained_params(adapter_dir)
    if trained:
        result = base.load_state_dict(trained, strict=False)
        mtf.check("trainable_params names", not result.unexpected_keys,
                  f"{len(trained)} tensors, unexpected {result.unexpected_keys}")
    model = PeftModel.from_pretrained(base, adapter_dir)
    model.eval()
    saved = load_file(os.path.join(adapter_dir, "adapter_model.safetensors"))
    state = get_peft_model_state_dict(model)
    mtf.check("peft loaded every LoRA tensor bit for bit",
              sorted(saved) == sorted(state) and all(torch.equal(saved[k], state[k]) for k in saved),
              f"{len(saved)} tensors")
    return model, trained


def merged_f64(adapter_dir, trained):
    """W + alpha/r * B @ A in float64, trained tensors replaced: the independent merge."""
    sd = {k: v.double() for k, v in load_file(os.path.join(BASE, "model.safetensors")).items()}
    sd.update({k: v.double() for k, v in trained.items()})
    with open(os.path.join(adapter_dir, "adapter_config.json")) as f:
        ac = json.load(f)
    scale = ac["lora_alpha"] / ac["r"]
    lora = load_file(os.path.join(adapter_dir, "adapter_model.safetensors"))
    for key, a in lora.items():
        if ".lora_A." not in key:
            continue
        b = lora[key.replace(".lora_A.", ".lora_B.")]
        name = key[len(PEFT_PREFIX):].replace(".lora_A.weight", ".weight")
        sd[name] = sd[name] + scale * (b.double() @ a.double())
    return sd


def exported_tensors(out_dir):
    tensors = {}
    for name in sorted(os.listdir(out_dir)):
        if name.endswith(".safetensors"):
            tensors.update(load_file(os.path.join(out_dir, name)))
    return tensors


def rel(a, b):
    return mtf.maxdiff(a, b) / b.double().abs().max().item()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bin-dir", default=".", help="where the built tools are (repo root)")
    parser.add_argument("--regenerate-ours-adapter", action="store_true")
    args = parser.parse_args()
    os.chdir(REPO)
    bin_dir = os.path.abspath(args.bin_dir)
    mtf.setup_determinism()
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}")
    g = torch.Generator().manual_seed(SEED_TOKENS)
    ids = torch.randint(0, 512, (N_TOKENS,), generator=g, dtype=torch.int64).to(torch.int32)
    with open(os.path.join(BASE, "config.json")) as f:
        cfg = json.load(f)
    out = {"tokens": ids.clone(), "positions": torch.tensor(POSITIONS, dtype=torch.int32)}

    with tempfile.TemporaryDirectory() as tmp:
        if args.regenerate_ours_adapter:
            regenerate_ours_adapter(bin_dir, tmp)
        for name, adapter_dir, given in CASES:
            factor = adapter_factor(adapter_dir, given)
            print(f"case {name}: {adapter_dir}, rope linear factor {factor}, {N_TOKENS} tokens")
            model, trained = reference_model(adapter_dir, factor)
            ref = mf.logits_of(model, ids)

            export_dir = os.path.join(tmp, name)
            cmd = [os.path.join(bin_dir, "export_hf"), "-m", BASE, "--lora", adapter_dir,
                   "--out", export_dir, "--dtype", "f32"]
            if given is not None:
                cmd += ["--rope-factor", str(given)]
            subprocess.run(cmd, check=True)
            with open(os.path.join(export_dir, "config.json")) as f:
                exported_cfg = json.load(f)
            mtf.check("exported config.json rope_scaling",
                      exported_cfg.get("rope_scaling") == {"type": "linear", "factor": factor} and
                      exported_cfg["max_position_embeddings"] == cfg["max_position_embeddings"],
                      json.dumps(exported_cfg.get("rope_scaling")))
            exported = transformers.LlamaForCausalLM.from_pretrained(
                export_dir, attn_implementation="eager", dtype=torch.float32)
            exported.eval()
            mtf.check("from_pretrained(export) applies the factor",
                      mf.rope_factor_of(exported) == ("linear", factor), str(mf.rope_factor_of(exported)))
            got = mf.logits_of(exported, ids)
            mtf.check("export logits == base + peft adapter", rel(got, ref) < 1e-5,
                      f"relative {rel(got, ref):.2e}")

            merged = merged_f64(adapter_dir, trained)
            ind = mf.independent_forward(merged, cfg, ids, factor)
            mtf.check("base + peft adapter == float64 forward of the merged weights",
                      rel(ref, ind) < 1e-5, f"relative {rel(ref, ind):.2e}")
            ours = exported_tensors(export_dir)
            unloaded = model.merge_and_unload().state_dict()
            worst = max(mtf.maxdiff(ours[k], merged[k]) for k in ours)
            worst_peft = max(mtf.maxdiff(ours[k], unloaded[k]) for k in ours)
            mtf.check("exported tensors == float64 merge and peft merge_and_unload",
                      sorted(ours) == sorted(k for k in merged) and worst < 1e-6 and worst_peft < 1e-6,
                      f"{len(ours)} tensors, max diff {worst:.1e} / {worst_peft:.1e}")

            plain_dir = os.path.join(tmp, name + "-no-rope-scaling")
            shutil.copytree(export_dir, plain_dir)
            exported_cfg["rope_scaling"] = None  # what the official merge script writes
            with open(os.path.join(plain_dir, "config.json"), "w") as f:
                json.dump(exported_cfg, f)
            plain = mf.load_model(plain_dir)
            wrong = mf.logits_of(plain, ids)
            past = slice(cfg["max_position_embeddings"], N_TOKENS)
            mtf.check("without rope_scaling the logits past max_position_embeddings differ",
                      mtf.maxdiff(wrong[past], ref[past]) > 0.1,
                      f"max diff {mtf.maxdiff(wrong[past], ref[past]):.3f}")
            out[f"{name}.logits"] = ref[POSITIONS].contiguous().float()
            out[f"{name}.factor"] = torch.tensor([factor], dtype=torch.float32)

    metadata = {
        "torch": torch.__version__, "transformers": transformers.__version__,
        "peft": peft.__version__,
        "description": f"logits rows {POSITIONS[0]}..{POSITIONS[-1]} step 4 of base tiny_llama + "
                       "adapter (transformers + peft, eager, fp32) for tokens (torch.Generator "
                       f"seed {SEED_TOKENS}, ids in [0, 512)); cases peft, ours",
    }
    mtf.write_safetensors(OUT, out, metadata)
    print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes)")


if __name__ == "__main__":
    main()
