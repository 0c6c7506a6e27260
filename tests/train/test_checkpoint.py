"""Checkpoints are atomic: only complete step folders count, leftovers of an interrupted save are ignored."""

import torch

from rftune.train import checkpoint


class TinyModule(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(2, 2)

    def save_pretrained(self, folder, safe_serialization=True):
        from safetensors.torch import save_file
        folder.mkdir(parents=True)
        save_file(self.state_dict(), folder / "model.safetensors")


def make():
    model = TinyModule()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    return model, optimizer, scheduler


def test_save_load_roundtrip_and_pruning(tmp_path):
    model, optimizer, scheduler = make()
    model.linear(torch.ones(1, 2)).sum().backward()
    optimizer.step()
    scheduler.step()
    for step in (1, 2, 3):
        checkpoint.save_checkpoint(tmp_path, step, model, optimizer, scheduler,
                                   {"step": step, "stream_position": 4 * step}, keep=2)
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == ["step-000002", "step-000003"]
    expected_rand = torch.rand(3)
    fresh, fresh_opt, fresh_sched = make()
    torch.rand(5)  # disturb the RNG: loading must restore it
    state = checkpoint.load_checkpoint(checkpoint.latest_checkpoint(tmp_path), fresh, fresh_opt, fresh_sched,
                                       lora=False)
    assert state == {"step": 3, "stream_position": 12}
    torch.testing.assert_close(fresh.linear.weight, model.linear.weight)
    assert fresh_opt.state_dict()["state"][0]["step"] == optimizer.state_dict()["state"][0]["step"]
    torch.testing.assert_close(torch.rand(3), expected_rand)


def test_interrupted_save_is_ignored_and_cleaned(tmp_path):
    model, optimizer, scheduler = make()
    checkpoint.save_checkpoint(tmp_path, 1, model, optimizer, scheduler, {"step": 1, "stream_position": 0}, keep=3)
    half = checkpoint.checkpoint_root(tmp_path) / ".tmp-step-000002-999"
    (half / "model").mkdir(parents=True)  # a save killed before its rename
    no_state = checkpoint.checkpoint_root(tmp_path) / "step-000005"
    no_state.mkdir()  # not a complete checkpoint (no trainer_state.json)
    assert checkpoint.latest_checkpoint(tmp_path).name == "step-000001"
    checkpoint.save_checkpoint(tmp_path, 2, model, optimizer, scheduler, {"step": 2, "stream_position": 0}, keep=3)
    assert not half.exists()
    assert checkpoint.latest_checkpoint(tmp_path).name == "step-000002"
