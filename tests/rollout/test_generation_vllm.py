"""The optional vLLM backend: never imported on the default path; its merged weights equal PEFT's merge."""

import copy
import subprocess
import sys

import pytest
import torch

from rftune.errors import ConfigError
from rftune.rollout.vllm_backend import VllmSampler, merged_state
from rftune.model.loading import apply_lora, load_model_and_tokenizer


def test_the_default_path_never_imports_vllm():
    code = "import sys, rftune.train.trainer, rftune.rollout.generation; assert 'vllm' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_merged_state_equals_peft_merge_and_leaves_the_model_unmerged(tiny_model_dir):
    model, _ = load_model_and_tokenizer(tiny_model_dir)
    model = apply_lora(model, r=4, alpha=8, dropout=0.0, target_modules="all-linear")
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    expected = copy.deepcopy(model).merge_and_unload().state_dict()
    state = dict(merged_state(model))
    assert set(state) == set(expected)
    for name, tensor in state.items():
        torch.testing.assert_close(tensor, expected[name], atol=1e-6, rtol=1e-6)
    assert not any(getattr(m, "merged", False) for m in model.modules())


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only error")
def test_vllm_backend_without_a_gpu_says_so(tiny_model_dir):
    with pytest.raises(ConfigError, match="CUDA GPU"):
        VllmSampler(tiny_model_dir, "float32", model=None)
