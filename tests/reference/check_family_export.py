#!/usr/bin/env python3
"""Load what ./export_hf writes for each model family in transformers and compare.

Not run by ctest (the tests need no Python); a check to run by hand after `make`:

    python3 tests/reference/check_family_export.py [--bin-dir .] [llama3 qwen2 mistral]

For each family of tests/fixtures/families (make_family_fixtures.py): runs
`./export_hf -m tests/fixtures/families/<name> --lora tests/fixtures/families/<name>_adapter
--out <tmp> --rope-factor 1` (f32, the base's dtype), loads the export with
AutoModelForCausalLM (no override of anything), and checks
  - it is the family's class (LlamaForCausalLM, Qwen2ForCausalLM, MistralForCausalLM), with the
    base's RoPE frequencies (llama3 scaling included) and tied embeddings where the base has them;
  - its logits equal transformers + peft on the base with the adapter (and, for qwen2, the
    adapter's trainable_params.safetensors loaded first), and the reference file's
    export.logits, within 1e-4 relative to the largest logit;
  - config.json: every field of the base's config.json is unchanged except dtype and
    transformers_version (RoPE fields compared as transformers reads them); differences are
    listed and fail the check.
Exits non-zero on a failed check.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
import make_family_fixtures as mff  # noqa: E402

CLASSES = {"llama3": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "mistral": "MistralForCausalLM"}
IGNORED = {"dtype", "torch_dtype", "transformers_version", "rope_parameters", "rope_scaling",
           "rope_theta"}
TOKENIZER = os.path.join("tests", "fixtures", "tiny_llama", "tokenizer.model")


def rope_of(cfg_dict):
    theta, scaling = mff.rope_params_of(cfg_dict)
    if scaling is not None:
        scaling = {("rope_type" if k == "type" else k): v for k, v in scaling.items() if k != "rope_theta"}
    return theta, scaling


def check_family(name, bin_dir):
    print(f"=== {name} ===")
    failures = []
    base_dir = os.path.join(mff.FAMILY_DIR, name)
    adapter_dir = base_dir + "_adapter"
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "merged")
        cmd = [os.path.join(bin_dir, "export_hf"), "-m", base_dir, "--lora", adapter_dir, "--out", out,
               "--rope-factor", "1", "--tokenizer", TOKENIZER]
        run = subprocess.run(cmd, capture_output=True, text=True)
        print(run.stdout, end="")
        if run.returncode != 0:
            print(run.stderr, end="")
            print(f"  FAIL {name}: export_hf exited {run.returncode}")
            return [f"{name}: export_hf exited {run.returncode}"]
        before = mff.read_config(base_dir)
        after = mff.read_config(out)
        for key, value in sorted(before.items()):
            if key in IGNORED:
                continue
            if key not in after:
                failures.append(f"{name}: config.json lost {key} = {json.dumps(value)}")
            elif after[key] != value:
                failures.append(f"{name}: config.json {key}: {json.dumps(value)} -> {json.dumps(after[key])}")
        if rope_of(after) != rope_of(before):
            failures.append(f"{name}: RoPE {rope_of(before)} -> {rope_of(after)}")

        model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, attn_implementation="eager").eval()
        if type(model).__name__ != CLASSES[name]:
            failures.append(f"{name}: transformers loads {type(model).__name__}")
        if before["tie_word_embeddings"] and model.lm_head.weight is not model.model.embed_tokens.weight:
            failures.append(f"{name}: embeddings not tied in the export")
        want_inv = mff.independent_inv_freq(before)
        if mff.maxdiff(model.model.rotary_emb.inv_freq, want_inv) > 1e-6 * want_inv.abs().max().item():
            failures.append(f"{name}: the export's RoPE frequencies differ from the base's")

        ref = load_file(base_dir + "_reference.safetensors")
        tokens = ref["export.tokens"].long()
        with torch.no_grad():
            exported = model(input_ids=tokens[None]).logits[0]
            base = mff.load_family(mff.FAMILIES[name], base_dir)
            trained = os.path.join(adapter_dir, "trainable_params.safetensors")
            if os.path.exists(trained):
                _, unexpected = base.load_state_dict(load_file(trained), strict=False)
                assert not unexpected, unexpected
            expected = PeftModel.from_pretrained(base, adapter_dir).eval()(input_ids=tokens[None]).logits[0]
        err = mff.relmax(exported, expected)
        err_ref = mff.relmax(exported[ref["export.positions"].long()], ref["export.logits"])
        print(f"  logits of the export in transformers vs base + peft adapter: max relative error "
              f"{err:.2e}; vs export.logits: {err_ref:.2e}")
        if not (err <= 1e-4 and err_ref <= 1e-4):
            failures.append(f"{name}: logits differ ({err:.2e}, {err_ref:.2e})")
    for f in failures:
        print(f"  FAIL {f}")
    if not failures:
        print("  OK")
    return failures


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin-dir", default=".", help="where export_hf is (default: the repository root)")
    ap.add_argument("families", nargs="*", default=list(CLASSES))
    args = ap.parse_args()
    bin_dir = os.path.abspath(args.bin_dir)
    os.chdir(REPO)
    torch.set_num_threads(1)
    failures = []
    for name in args.families:
        failures += check_family(name, bin_dir)
    if failures:
        sys.exit(f"error: {len(failures)} check(s) failed")
    print("all exports load in transformers with the expected logits and config")


if __name__ == "__main__":
    main()
