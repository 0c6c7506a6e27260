"""Full fine-tuning sharded over the ranks of a torchrun job with FSDP2 (``train.fsdp: true``).

`shard` applies PyTorch's ``fully_shard`` to every transformer block (the model's ``_no_split_modules`` classes) and
then to the whole model, so each rank holds 1/world of every weight, gradient and optimizer state, and a block's
weights are gathered only while it runs. The frozen reference copy (beta > 0) is sharded the same way.

Gradients are *summed* over the ranks, not averaged: each rank's loss is its share of the batch loss (every
normaliser is global, `rftune.algo.losses.BatchNorms`), so the sum is the gradient of the batch loss, as for LoRA
data parallelism (`rftune.runtime.distributed.sum_gradients`).

What changes with a sharded model: generation goes through transformers ``generate`` with ``synced_gpus`` (every
rank keeps stepping until all ranks' rows have finished, since each step gathers weights collectively); the CPU
speed layer is off; checkpoints and the final model are gathered into full, unsharded weights (rank 0 writes them,
the files are those of an unsharded run); the optimizer state is saved keyed by parameter name. Multi-turn
episodes are refused: ranks would play different numbers of turns.
"""

from __future__ import annotations

import torch

from rftune.errors import ConfigError
from rftune.runtime.distributed import World


def is_sharded(model) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def shard(model, world: World):
    """Shard `model` in place over the world's ranks (one FSDP unit per transformer block, one for the rest)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import FSDPModule, fully_shard

    mesh = init_device_mesh(next(model.parameters()).device.type, (world.size,))
    block_types = set(getattr(model, "_no_split_modules", None) or [])
    blocks = [m for m in model.modules() if type(m).__name__ in block_types]
    if not blocks:
        raise ConfigError(f"train.fsdp: cannot find the transformer blocks of {type(model).__name__} "
                         "(it names no _no_split_modules)")
    for block in blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    for unit in model.modules():
        if isinstance(unit, FSDPModule):  # sum, not mean, over ranks (gloo has no pre-scaled sum)
            unit.set_gradient_divide_factor(1.0)
            unit.set_force_sum_reduction_for_comms(True)
    return model


def full_tensor(value: torch.Tensor) -> torch.Tensor:
    """A sharded tensor gathered whole (a collective), or the tensor itself."""
    return value.full_tensor() if hasattr(value, "full_tensor") else value


def model_state(model) -> dict[str, torch.Tensor]:
    """The full weights on the CPU, keyed as in an unsharded model, a tied weight once (a collective: every rank
    calls it)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return {name: value for name, value in state.items() if name not in _tied_copies(model)}


def _tied_copies(model) -> set[str]:
    """Names of parameters that are another parameter (tied embeddings: lm_head.weight), all but the first."""
    first: dict[int, str] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        first.setdefault(id(param), name)
    return {name for name, param in model.named_parameters(remove_duplicate=False) if first[id(param)] != name}


def load_model_state(model, weights: dict[str, torch.Tensor]):
    """Load full weights (`model_state`'s, or an unsharded run's files) into the sharded model; returns the
    (missing, unexpected) keys, as ``load_state_dict(strict=False)`` does."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    return set_model_state_dict(model, weights, options=StateDictOptions(full_state_dict=True, strict=False))


def optimizer_state(model, optimizer) -> dict:
    """The optimizer's full state keyed by parameter name (a collective for a sharded model)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer,
                                    options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_optimizer_state(model, optimizer, state: dict) -> None:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))
