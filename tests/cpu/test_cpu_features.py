"""rftune.cpu.features: one answer per CPU feature, which RFTUNE_CPU_FEATURES_OFF can hide."""

import pytest
import torch

from rftune.cpu.features import FEATURES, cpu_features, hidden_features
from rftune.errors import ConfigError
from rftune.runtime.device import bf16_enabled, run_summary


def test_hiding_avx512_hides_what_an_avx2_only_cpu_lacks_with_it():
    assert hidden_features("avx512") == {"avx512", "avx512_bf16", "amx", "onednn_bf16_weights"}
    assert hidden_features(" AVX512-BF16 , amx") == {"avx512_bf16", "amx"}  # case, spaces and hyphens
    assert hidden_features("avx2") == set(FEATURES)
    assert hidden_features("all") == set(FEATURES)
    assert hidden_features("") == set()


def test_an_unknown_feature_name_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"RFTUNE_CPU_FEATURES_OFF='avx9000': unknown feature\(s\) avx9000; known: "
                                          r"avx2, avx512, avx512_bf16, amx, onednn_bf16_weights, all"):
        hidden_features("avx9000")


def test_hidden_features_are_reported_absent_and_the_rest_kept(cpu_without):
    real = cpu_features()
    features = cpu_without("avx512")
    assert not (features.avx512 or features.avx512_bf16 or features.amx or features.onednn_bf16_weights)
    assert not features.native_bf16
    assert features.avx2 == real.avx2 and features.model == real.model
    assert "no native bf16" in features.describe()


def test_onednn_bf16_weights_is_torch_own_answer():
    # The probe packs a weight; the answer must agree with what packing a real weight does on this CPU.
    weight = torch.randn(32, 48).to(torch.bfloat16)
    if cpu_features().onednn_bf16_weights:
        assert torch.ops.mkldnn._reorder_linear_weight(weight, None).is_mkldnn
    elif torch.backends.mkldnn.is_available():
        with pytest.raises(RuntimeError, match="bf16"):
            torch.ops.mkldnn._reorder_linear_weight(weight, None)


def test_bf16_auto_follows_native_bf16_and_true_is_kept_on_any_cpu(cpu_without):
    assert bf16_enabled("auto") == cpu_features().native_bf16
    assert bf16_enabled(False) is False
    cpu_without("avx512_bf16", "amx")
    assert bf16_enabled("auto") is False and bf16_enabled(True) is True
    assert "bf16 off" in run_summary("cpu", "auto")
    summary = run_summary("cpu", True)
    assert "bf16 on (train.bf16=true on a CPU without native bf16: emulated, slower than float32" in summary
