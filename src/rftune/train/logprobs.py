"""Per-token log-probabilities (and entropy) of completions under a model.

log pi(o_t | q, o_<t) is read from the logits at the position *before* each token (the one-position shift),
divided by the sampling temperature so that it is the log-probability of the distribution that was sampled.
Position ids follow the attention mask (left padding does not shift positions), as in generation. Under a
generation constraint the distribution is the constrained one: ``allowed`` holds the token mask that was in force
at each position (`rftune.constraints.Constraint.replay`), and forbidden tokens get probability 0 before the
softmax, so log-probs, ratios, KL and entropy are those of what was sampled.

What the forward pass skips — each skip leaves the values unchanged, up to float rounding:
- **Padding columns.** Prompt columns that are padding in every row, and completion columns after the longest
  completion, are cut before the forward pass; the output is padded back with zeros to the given width.
- **Repeated prompts.** Rows that share a prompt (the G completions of a group) run that prompt once, with
  gradient; its KV cache is indexed out to the rows, and only the completion tokens run per row. The gradient
  through the shared prompt is the sum over its rows, exactly as if each row had run it.
- **Padding after short completions.** The completions then run in groups of similar length (`length_groups`),
  each group cut to its own longest completion, instead of every row running to the batch's longest.
- **Vocabulary projection of padding.** For Llama-family models the output projection is applied only at real
  completion tokens (chunked, so the [tokens, V] logits are never all alive at once); other models, and sharded
  ones (`rftune.runtime.sharding`), use their own forward with ``logits_to_keep``.
- **Whole-vocabulary float32 passes.** The log-softmax at each target and the entropy are computed from the
  projection's own (bf16 under autocast) logits a block of rows at a time (`token_logprobs`, gradient written
  out), so no [tokens, V] float32 tensor goes through memory.
"""

from __future__ import annotations

import torch

from rftune.constraints import unpack_bits
from rftune.runtime.sharding import is_sharded

PLAIN_HEAD = {"llama", "mistral", "qwen2", "qwen3"}  # logits = lm_head(final hidden state), nothing else
TOKENS_PER_CHUNK = 1024  # rows of logits alive at once in the vocabulary projection
ROWS_PER_BLOCK = 64  # rows of float32 logits processed at once in `token_logprobs` (~12 MB at V = 49152)
GROUP_OVERHEAD_TOKENS = 64  # cost of one more forward call, in padded token positions (see `length_groups`)


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """[R, T] mask -> [R, T] positions counting only real tokens (padding gets 0)."""
    return (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)


def completion_logprobs(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, completion_ids: torch.Tensor,
                        attention_mask: torch.Tensor, temperature: float = 1.0,
                        with_entropy: bool = False,
                        allowed: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """logprobs [R, Tc] of `completion_ids` given the prompts, and (optionally, no grad) entropy [R, Tc].

    Positions where ``attention_mask`` is 0 get log-prob (and entropy) 0. ``allowed``: the constraint's token
    masks as bit words [R, Tc, W] (None: unconstrained).
    """
    rows, width = completion_ids.shape
    keep_c = _last_true(attention_mask.any(0)) + 1  # completion columns up to the longest completion
    first_p = min(_first_true(prompt_mask.any(0)), prompt_mask.shape[1] - 1)
    prompt_ids, prompt_mask = prompt_ids[:, first_p:], prompt_mask[:, first_p:]  # [R, Tp']
    completion_ids, attention_mask = completion_ids[:, :keep_c], attention_mask[:, :keep_c]  # [R, Tc']
    unique, inverse = torch.unique(torch.cat([prompt_ids, prompt_mask], 1), dim=0, return_inverse=True)
    device = completion_ids.device
    logprobs = torch.zeros(rows, width, dtype=torch.float32, device=device)
    entropy = torch.zeros(rows, width, dtype=torch.float32, device=device) if with_entropy else None
    out = (temperature, logprobs, entropy, allowed)
    if keep_c > 0 and unique.shape[0] < rows:
        _fill_shared_prefix(model, unique[:, :prompt_ids.shape[1]], unique[:, prompt_ids.shape[1]:], inverse,
                            completion_ids, prompt_mask, attention_mask, out)
    elif keep_c > 0:
        hidden = _full_hidden(model, prompt_ids, prompt_mask, completion_ids, attention_mask)
        _fill_positions(model, hidden, completion_ids, attention_mask.bool(), out, offset=0)
    return logprobs, entropy


def length_groups(lengths: list[int], overhead: int = GROUP_OVERHEAD_TOKENS) -> list[list[int]]:
    """Rows grouped by length so that sum over groups of (rows x longest + overhead) is smallest.

    Each group runs as one forward pass padded to its longest row; `overhead` prices a pass in token positions.
    Rows are sorted longest first and cut into consecutive runs by an exact dynamic programme. Only cuts between
    different lengths are tried: moving equal-length rows into the earlier group never costs more, so nothing
    better is missed, and the work grows with the number of distinct lengths, not of rows.
    Returns lists of row indices, longest rows first; a group's rows keep their sorted order.
    """
    if not lengths:
        return []
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    cuts = [0] + [k for k in range(1, len(order)) if lengths[order[k]] != lengths[order[k - 1]]] + [len(order)]
    best, previous = {0: 0}, {}  # best[j]: cheapest cost of the first j sorted rows (j a cut)
    for b, j in enumerate(cuts[1:], start=1):
        best[j], previous[j] = min((best[i] + (j - i) * lengths[order[i]] + overhead, i) for i in cuts[:b])
    groups, j = [], len(order)
    while j > 0:
        groups.append(order[previous[j]:j])
        j = previous[j]
    return groups[::-1]


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0,
                   with_entropy: bool = False,
                   allowed: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log softmax(logits / temperature) at `targets`, and (optionally, no grad) the entropy; float32 [n] each.

    logits [n, V] in any float dtype (bf16 logits are widened to float32 a block of rows at a time, as the
    values are computed, never as a whole [n, V] float32 copy). ``allowed`` [n, W]: bit words of the tokens a
    constraint allowed at each row (`rftune.constraints.unpack_bits`); the others get probability 0.
    """
    logprobs, entropy = _TokenLogProbs.apply(logits, targets, temperature, with_entropy, allowed)
    return logprobs, entropy if with_entropy else None


class _TokenLogProbs(torch.autograd.Function):
    """`token_logprobs` in blocks of `ROWS_PER_BLOCK` rows, so each block's float32 logits stay in the CPU cache.

    Unfused, the same values take a dozen passes over [n, V] float32 tensors in memory (widen, max, subtract,
    exp, sum, softmax for the entropy; exp, scatter, add and narrow again in the backward pass). Per block:
    z = logits / T, lse = logsumexp(z), log-prob = z[target] - lse, entropy = lse - sum(softmax(z) * z); the
    gradient is d logits = g (onehot(target) - softmax(z)) / T, recomputed from the saved logits and lse. Under a
    constraint, z is -inf at forbidden tokens (their softmax and gradient are 0).
    """

    @staticmethod
    def forward(ctx, logits, targets, temperature: float, with_entropy: bool, allowed=None):
        n = logits.shape[0]
        logprobs, lse = torch.empty(n, device=logits.device), torch.empty(n, device=logits.device)
        entropy = torch.empty(n if with_entropy else 0, device=logits.device)
        for start in range(0, n, ROWS_PER_BLOCK):
            rows = slice(start, start + ROWS_PER_BLOCK)
            z = logits[rows].to(torch.float32, copy=True)  # never a view of the (saved) logits
            if temperature != 1.0:
                z.div_(temperature)
            if allowed is not None:
                z.masked_fill_(~unpack_bits(allowed[rows], z.shape[1]), -torch.inf)
            top = z.amax(-1, keepdim=True)  # [r, 1]
            weights = (z - top).exp_()  # [r, V] unnormalised probabilities
            total = weights.sum(-1)  # [r]
            lse[rows] = top.squeeze(1) + total.log()
            logprobs[rows] = z.gather(1, targets[rows, None]).squeeze(1) - lse[rows]
            if with_entropy:  # lse - E_p[z] (forbidden tokens have p = 0: their -inf must not reach the sum)
                finite = z if allowed is None else z.masked_fill(z == -torch.inf, 0.0)
                entropy[rows] = lse[rows] - torch.linalg.vecdot(weights, finite) / total
        ctx.save_for_backward(logits, targets, lse, allowed)
        ctx.temperature = temperature
        ctx.mark_non_differentiable(entropy)
        return logprobs, entropy

    @staticmethod
    def backward(ctx, grad_logprobs, _grad_entropy):
        logits, targets, lse, allowed = ctx.saved_tensors
        grad = torch.empty_like(logits)
        scale = grad_logprobs / ctx.temperature  # [n]
        for start in range(0, logits.shape[0], ROWS_PER_BLOCK):
            rows = slice(start, start + ROWS_PER_BLOCK)
            z = logits[rows].to(torch.float32, copy=True)  # never a view of the (saved) logits
            if ctx.temperature != 1.0:
                z.div_(ctx.temperature)
            if allowed is not None:
                z.masked_fill_(~unpack_bits(allowed[rows], z.shape[1]), -torch.inf)
            block = z.sub_(lse[rows, None]).exp_().mul_(-scale[rows, None])  # -g p / T
            block.scatter_add_(1, targets[rows, None], scale[rows, None])  # + g / T at the target
            grad[rows] = block
        return grad, None, None, None, None


def _first_true(flags: torch.Tensor) -> int:
    index = flags.nonzero()
    return int(index[0]) if index.numel() else flags.numel()


def _last_true(flags: torch.Tensor) -> int:
    index = flags.nonzero()
    return int(index[-1]) if index.numel() else -1


def _inner(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _plain_head(model) -> bool:
    """Whether the decoder body and the output projection may be run apart (not for a sharded model, whose
    outer weights are gathered only by its own forward)."""
    return getattr(_inner(model).config, "model_type", None) in PLAIN_HEAD and not is_sharded(model)


def _full_hidden(model, prompt_ids, prompt_mask, completion_ids, attention_mask) -> torch.Tensor:
    """Every row runs prompt + completion; returns the states [R, Tc', *] predicting tokens 0..Tc'-1."""
    input_ids = torch.cat([prompt_ids, completion_ids[:, :-1]], dim=1)  # [R, Tp+Tc-1]
    full_mask = torch.cat([prompt_mask, attention_mask[:, :-1]], dim=1)  # [R, Tp+Tc-1]
    return final_states(model, input_ids, full_mask, position_ids_from_mask(full_mask), None, completion_ids.shape[1])


def _fill_shared_prefix(model, unique_ids, unique_mask, inverse, completion_ids, prompt_mask, attention_mask,
                        out) -> None:
    """Run each distinct prompt once, then the completions against its cache, in groups of similar length."""
    from transformers import DynamicCache

    config = _inner(model).config
    cache = DynamicCache(config=config)
    positions = position_ids_from_mask(unique_mask)
    first = final_states(model, unique_ids, unique_mask, positions, cache, 1)[inverse]  # [R, 1, *]
    mask = attention_mask.bool()
    _fill_positions(model, first, completion_ids[:, :1], mask[:, :1], out, offset=0)
    prefix = [(layer.keys, layer.values) for layer in cache.layers]  # [U, nkv, Tp, d] each
    columns = torch.arange(1, mask.shape[1] + 1, device=mask.device)
    lengths = (mask * columns).amax(1)  # [R] last real column + 1
    for group in length_groups(lengths.tolist(), GROUP_OVERHEAD_TOKENS):
        rows, width = torch.tensor(group, device=mask.device), int(lengths[group].max())
        if width <= 1:
            continue
        group_cache = DynamicCache([(k[inverse[rows]], v[inverse[rows]]) for k, v in prefix], config=config)
        full_mask = torch.cat([prompt_mask[rows], attention_mask[rows, :width - 1]], dim=1)  # [r, Tp+w-1]
        positions = position_ids_from_mask(full_mask)[:, prompt_mask.shape[1]:]  # [r, w-1]
        states = final_states(model, completion_ids[rows, :width - 1], full_mask, positions, group_cache, width - 1)
        _fill_positions(model, states, completion_ids[rows, 1:width], mask[rows, 1:width], out, offset=1,
                        rows=rows)


def final_states(model, input_ids, attention_mask, position_ids, cache, keep: int) -> torch.Tensor:
    """The last `keep` positions' final hidden states [R, keep, H] (plain-head models) or logits [R, keep, V]."""
    if _plain_head(model):
        body = _inner(model).get_decoder()
        out = body(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                   past_key_values=cache, use_cache=cache is not None)
        return out.last_hidden_state[:, -keep:]
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                past_key_values=cache, use_cache=cache is not None, logits_to_keep=keep)
    return out.logits


def _fill_positions(model, states, ids, mask, out, offset: int, rows: torch.Tensor | None = None) -> None:
    """states [r, T, *] predict ids [r, T]; positions with mask are projected and written at column + offset.

    ``out`` is (temperature, logprobs [R, Tc], entropy [R, Tc] or None, allowed [R, Tc, W] or None); ``rows`` [r]
    are the rows of those tensors that the states belong to (all rows, in order, when None).
    """
    temperature, logprobs, entropy, allowed = out
    where = mask.nonzero()  # [N, 2]
    if not where.numel():
        return
    target_rows = where[:, 0] if rows is None else rows[where[:, 0]]
    cols = where[:, 1] + offset
    words = allowed[target_rows, cols] if allowed is not None else None  # [N, W]
    values, entropies = selected_logprobs(model, states[mask], ids[mask], temperature, entropy is not None, words)
    logprobs.index_put_((target_rows, cols), values)
    if entropy is not None:
        entropy.index_put_((target_rows, cols), entropies)


def selected_logprobs(model, states: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0,
                      with_entropy: bool = False,
                      allowed: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log pi(target) [N] (and entropy [N] or None) of N selected positions, from their `final_states` [N, *]:
    hidden states are projected to the vocabulary a chunk at a time, logits are used as they are. ``allowed``:
    the constraint's masks of the positions as bit words [N, W], or None."""
    head = _inner(model).get_output_embeddings() if _plain_head(model) else None
    values, entropies = [], []
    for start in range(0, states.shape[0], TOKENS_PER_CHUNK):
        chunk = states[start:start + TOKENS_PER_CHUNK]
        logits = head(chunk) if head is not None else chunk  # [n, V], in the matmul's dtype
        words = allowed[start:start + TOKENS_PER_CHUNK] if allowed is not None else None
        value, chunk_entropy = token_logprobs(logits, targets[start:start + TOKENS_PER_CHUNK], temperature,
                                              with_entropy=with_entropy, allowed=words)
        values.append(value)
        entropies.append(chunk_entropy)
    return torch.cat(values), torch.cat(entropies) if with_entropy else None
