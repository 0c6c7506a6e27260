"""The CPU speed layer reads back which of its parts are in force, and a part that fits but is not warns.

An upstream release (transformers 5.25 kernelizing hub-decorated layers at every ``train()``) once undid the
fused RMS norm without a word; these tests check the layer from the model's side after the mode switches a run
makes, and that the warning names the part.
"""

import warnings

import pytest
import torch

from rftune.cpu import SpeedLayerWarning, enable_training_kernels, parts_in_force, report_parts
from rftune.cpu.prepacked import onednn_serves
from rftune.model.loading import apply_lora, load_model

TRAINING_PARTS = {"bf16_weights", "lora_fused", "matmul_attention", "rms_norm"}


def lora_model(folder):
    model = load_model(folder, dtype="float32")
    return apply_lora(model, r=4, alpha=8, dropout=0.0, target_modules="all-linear")


@pytest.mark.parametrize("bf16", [True, False])
def test_every_training_part_stays_in_force_through_mode_switches(tiny_model_dir, bf16):
    model = lora_model(tiny_model_dir)
    enable_training_kernels(model, bf16)
    for switch in (model.train, model.eval, model.train):  # a run switches modes; none may undo a part
        switch()
        parts = parts_in_force(model, bf16)
        expected = TRAINING_PARTS if bf16 else TRAINING_PARTS - {"bf16_weights"}
        assert {name for name, on in parts.items() if on} == expected
        assert parts["bf16_weights"] is (True if bf16 else None)


def test_hub_kernelization_is_switched_off_where_transformers_has_it(tiny_model_dir):
    model = lora_model(tiny_model_dir)
    enable_training_kernels(model, bf16=False)
    assert getattr(model.get_base_model(), "use_kernels", False) is False


def test_a_part_undone_after_enabling_warns_by_name(tiny_model_dir):
    model = lora_model(tiny_model_dir)
    enable_training_kernels(model, bf16=False)
    norm = model.get_base_model().model.layers[1].post_attention_layernorm
    del norm.forward  # what the upstream release did: the class's own forward again
    parts = parts_in_force(model, bf16=False)
    assert parts["rms_norm"] is False and parts["lora_fused"] and parts["matmul_attention"]
    with pytest.warns(SpeedLayerWarning, match="part 'rms_norm' fits this model but is not in force"):
        line = report_parts(parts)
    assert line == "lora_fused, matmul_attention"


def test_a_model_without_the_layer_expects_nothing_and_warns_nothing(tiny_model_dir):
    model = load_model(tiny_model_dir, dtype="float32")  # no adapters, kernels never enabled
    parts = parts_in_force(model, bf16=False)
    assert parts["lora_fused"] is None and parts["bf16_weights"] is None
    assert parts["matmul_attention"] is False and parts["rms_norm"] is False  # they fit, and were not switched on


def test_decoder_parts_follow_the_generation_backend(tiny_model_dir):
    model = lora_model(tiny_model_dir)
    fast = parts_in_force(model, bf16=False, backend="cpu-fast")
    assert fast["decoder"] is True
    assert fast["prepacked"] is (True if onednn_serves(torch.device("cpu"), torch.float32) else None)
    plain = parts_in_force(model, bf16=False, backend="hf")
    assert plain["decoder"] is False and plain["prepacked"] is None


def test_the_lean_decoder_prepacks_every_weight_onednn_serves(tiny_model_dir):
    from rftune.cpu.fast_decode import build_decoder

    model = lora_model(tiny_model_dir)
    decoder = build_decoder(model)
    assert decoder.prepacked_in_force() is (True if onednn_serves(torch.device("cpu"), torch.float32) else None)
    if decoder.prepacked_in_force():
        decoder.layers[0]["o"] = torch.zeros(32, 32)  # one weight left plain: no longer all prepacked
        assert decoder.prepacked_in_force() is False


def test_the_trainer_start_line_lists_the_parts_in_force(tiny_model_dir, tmp_path, capsys):
    from rftune.config import config_from_dict
    from rftune.train.trainer import GRPOTrainer

    config = config_from_dict({"model": {"name_or_path": tiny_model_dir}, "lora": {"r": 4, "alpha": 8},
                               "generation": {"num_generations": 4, "max_new_tokens": 4},
                               "train": {"output_dir": str(tmp_path / "run"), "max_steps": 1, "batch_size": 4,
                                         "bf16": False, "report_to": []}})
    with warnings.catch_warnings():
        warnings.simplefilter("error", SpeedLayerWarning)
        GRPOTrainer(config, reward_funcs=[lambda prompt, completion, example: 1.0],
                    dataset=[{"prompt": "ab"}] * 4, progress=True)
    start = capsys.readouterr().out
    prepacked = ", prepacked" if onednn_serves(torch.device("cpu"), torch.float32) else ""
    assert f"; cpu kernels: lora_fused, matmul_attention, rms_norm, decoder{prepacked}\n" in start
