"""Lean sampling for Llama-family causal LMs: merged LoRA weights, one prefill per prompt, a preallocated KV cache.

It samples from the same distribution as Hugging Face ``generate`` (logits / temperature, then top-k, then top-p,
then softmax); only the execution differs:

- **Merged weights in a separate copy.** The decoder holds its own fused weights (q|k|v and gate|up concatenated)
  equal to the trained model's *effective* weights W + scale * B @ A, computed from the base weights when the
  decoder is built. The trained model is never merged or unmerged in place, so nothing drifts. The copy is
  dropped with the decoder after sampling.
- **Weights prepacked for the CPU matmul.** Each fused weight is reordered once into oneDNN's blocked layout
  (`rftune.cpu.prepacked`): a plain weight costs oneDNN extra work in every call, a large share of the matmul at
  the few dozen rows of a decode step.
- **One prefill per prompt.** Each distinct prompt is run once; its KV cache is copied to its G rows.
- **One prefill of the common prefix.** When all prompts begin with the same tokens (a system prompt), those
  tokens run once for the whole batch; each prompt's remainder runs against that cache. Every row's cache then
  holds the prefix, the remainder's left padding, then the remainder (padding is never attended to, and positions
  count real tokens only, so the values are those of the unshared prompt).
- **Finished rows leave the batch.** Once a quarter of the rows still in the cache have sampled EOS, the cache is
  compacted to the unfinished rows (until then finished rows ride along and their tokens are discarded);
  decoding stops when every row has finished, so no padding is ever decoded at the end.
- **bfloat16 matmuls on request.** ``build_decoder(model, dtype=torch.bfloat16)`` keeps the weights and the KV
  cache in bfloat16 (half the memory traffic; twice the matmul rate on CPUs with native bf16), while the residual
  stream, the norms, the attention softmax and the final logits stay float32, as under torch autocast. In bf16 the
  adapters are not merged (a merged bf16 weight would round a small adapter update away): their A rows are stacked
  under the base weights and their scaled B factors applied in one extra multiply-add per projection.
- **Little Python per token.** Per layer a decode step is a handful of tensor operations (two fused matmuls for
  q|k|v and gate|up); grouped-query attention for one query token is done by folding the query heads of a
  KV head into the query-length axis, which needs no copy of the cache.

`build_decoder` returns None for architectures it does not know (then `rftune.rollout.generation` falls back to HF
``generate``). Supported: the architectures `rftune.cpu.architectures` lists for ``decoder`` (``mistral`` without
a sliding window); LoRA adapters without DoRA.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from rftune.algo.lora import effective_weight, merged_weight
from rftune.algo.sampling import group_uniforms, sample_tokens
from rftune.cpu.architectures import fits
from rftune.cpu.prepacked import linear, onednn_serves, prepack

COMPACT_FRACTION = 0.75  # compact the cache when at most this fraction of its rows are still sampling
MIN_SHARED_PREFIX = 16  # a common prefix of fewer tokens is not worth a separate pass


def _supported_layer(module) -> bool:
    base = getattr(module, "base_layer", None)
    if base is None:
        return isinstance(module, torch.nn.Linear)
    return (isinstance(base, torch.nn.Linear) and not getattr(module, "fan_in_fan_out", False)
            and not any(getattr(module, "use_dora", {}).values()))


def _inner(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def decoder_supports(model) -> bool:
    """Whether `build_decoder` can serve `model`: a listed architecture with SiLU MLPs, no sliding window, no MLP
    bias, and plain linear layers (LoRA without DoRA)."""
    inner = _inner(model)
    config = getattr(inner, "config", None)  # None: not a transformers model (e.g. a scripted stand-in)
    if not fits(inner, "decoder") or getattr(config, "hidden_act", None) != "silu":
        return False
    if getattr(config, "use_sliding_window", False) or getattr(config, "sliding_window", None) \
            or getattr(config, "mlp_bias", False):
        return False
    linears = [m for layer in inner.model.layers for m in (layer.self_attn.q_proj, layer.self_attn.k_proj,
                                                           layer.self_attn.v_proj, layer.self_attn.o_proj,
                                                           layer.mlp.gate_proj, layer.mlp.up_proj,
                                                           layer.mlp.down_proj)]
    return all(_supported_layer(m) for m in linears + [inner.lm_head])


def build_decoder(model, dtype: torch.dtype | None = None) -> "LeanDecoder | None":
    """A `LeanDecoder` with the model's current effective weights, or None when `decoder_supports` says no.

    ``dtype``: the matmuls' dtype (weights and KV cache); None keeps the model's own.
    """
    return LeanDecoder(_inner(model), dtype) if decoder_supports(model) else None


class LeanDecoder:
    """Decoding-only forward of a Llama-family model with fused weights (see the module docstring)."""

    def __init__(self, inner, dtype: torch.dtype | None = None):
        config = inner.config
        attn = inner.model.layers[0].self_attn
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.num_heads
        self.eps = config.rms_norm_eps
        self.scale = attn.scaling if hasattr(attn, "scaling") else self.head_dim ** -0.5
        self.rotary = inner.model.rotary_emb
        self.embed = inner.model.embed_tokens.weight.detach()  # the residual stream keeps the model's dtype
        self.final_norm = inner.model.norm.weight.detach()
        self.dtype = dtype or self.embed.dtype  # matmuls, weights and the KV cache
        with torch.no_grad():
            self.layers = self._fuse(inner.model.layers)
            head, factors, bias = effective_weight(inner.lm_head)
            # An adapter on the output projection (rare) is merged in the model's dtype, never rounded away.
            self.lm_head = prepack(merged_weight(head, factors) if factors else head.detach().to(self.dtype))
            self.lm_bias = bias.detach().to(self.lm_head.dtype) if bias is not None else None

    def _fuse(self, layers) -> list[dict[str, torch.Tensor]]:
        """Every layer's fused projection weights, each prepacked for the CPU matmul (`rftune.cpu.prepacked`).

        A fused projection ``name`` holds its weights' rows stacked; in the model's own dtype each row is the merged
        W + scale * B @ A. In a lower dtype the adapters stay apart, as under autocast (a merged bf16 weight would
        round away a small adapter update): the LoRA A rows are stacked under W (one matmul gives x W^T and x A^T),
        and ``name + "_up"`` holds the scaled B factors block-diagonally, applied to the x A^T part.
        """
        fused = []
        for layer in layers:
            a, m = layer.self_attn, layer.mlp
            q, k, v, o, g, u, d = (effective_weight(x) for x in (a.q_proj, a.k_proj, a.v_proj, a.o_proj,
                                                                 m.gate_proj, m.up_proj, m.down_proj))
            out = {"ln1": layer.input_layernorm.weight.detach(), "ln2": layer.post_attention_layernorm.weight.detach()}
            for name, linears in {"qkv": [q, k, v], "o": [o], "gate_up": [g, u], "down": [d]}.items():
                stacked = torch.empty(self._stacked_rows(linears), linears[0][0].shape[1], dtype=self.dtype)
                up = self._fill(stacked, linears)
                out[name] = prepack(stacked)
                if up is not None:
                    out[name + "_up"] = up
            if q[2] is not None:
                out["qkv_bias"] = torch.cat([bias.detach() for _, _, bias in (q, k, v)]).to(self.dtype)
            fused.append(out)
        return fused

    def prepacked_in_force(self) -> bool | None:
        """Whether every projection weight that oneDNN serves is prepacked; None where it serves none (see
        `rftune.cpu.prepacked.onednn_serves`)."""
        weights = [layer[name] for layer in self.layers for name in ("qkv", "o", "gate_up", "down")]
        served = [weight for weight in weights + [self.lm_head] if onednn_serves(weight.device, weight.dtype)]
        return all(weight.is_mkldnn for weight in served) if served else None

    def _keeps_adapters_apart(self, linears) -> bool:
        return any(factors for _, factors, _ in linears) and linears[0][0].dtype != self.dtype

    def _stacked_rows(self, linears) -> int:
        rows = sum(w.shape[0] for w, _, _ in linears)
        if self._keeps_adapters_apart(linears):
            rows += sum(a.shape[0] for _, factors, _ in linears for _, a, _ in factors)
        return rows

    def _fill(self, view: torch.Tensor, linears) -> torch.Tensor | None:
        """Write the stacked rows into `view`; returns the block-diagonal scaled B factors, or None if merged."""
        apart = self._keeps_adapters_apart(linears)
        out_rows = sum(w.shape[0] for w, _, _ in linears)
        up = torch.zeros(out_rows, view.shape[0] - out_rows, dtype=self.dtype) if apart else None
        start, rank_start = 0, out_rows
        for weight, factors, _ in linears:
            rows = slice(start, start + weight.shape[0])
            if not apart:  # the model's own dtype (merged exactly), or no adapter (converted)
                merged_weight(weight, factors, out=view[rows])
            else:
                view[rows] = weight.detach()
                for lora_b, lora_a, scale in factors:
                    rank = lora_a.shape[0]
                    view[rank_start:rank_start + rank] = lora_a.detach()
                    up[rows, rank_start - out_rows:rank_start - out_rows + rank] = lora_b.detach() * scale
                    rank_start += rank
            start += weight.shape[0]
        return up

    def _project(self, layer, name: str, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """x [b, t, in] -> [b, t, out] through the fused projection `name` (and its separate adapters, if any)."""
        up = layer.get(name + "_up")
        if up is None:
            return linear(x, layer[name], bias)
        y = linear(x, layer[name])  # [b, t, out + ranks]: x W^T, then x A^T
        rows, out_features = y.shape[0] * y.shape[1], up.shape[0]
        out = torch.addmm(y[..., :out_features].reshape(rows, out_features), y[..., out_features:].reshape(rows, -1),
                          up.t()).view(*y.shape[:2], out_features)  # x W^T + (x A^T) (s B)^T
        return out if bias is None else out + bias

    # ------------------------------------------------------------------------------------------------ layers
    def _norm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """RMS norm in the residual stream's dtype, handed to the matmuls in theirs."""
        return F.rms_norm(x, weight.shape, weight, self.eps).to(self.dtype)

    def _qkv(self, layer, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """x [b, t, H] -> q [b, nh, t, d], k and v [b, nkv, t, d], with rotary embedding on q and k."""
        b, t, _ = x.shape
        d, nh, nkv = self.head_dim, self.num_heads, self.num_kv_heads
        qkv = self._project(layer, "qkv", self._norm(x, layer["ln1"]), layer.get("qkv_bias"))  # [b, t, (nh+2nkv)d]
        heads = qkv.view(b, t, nh + 2 * nkv, d).transpose(1, 2)  # [b, nh+2nkv, t, d]
        q, k = _rope(heads[:, :nh + nkv], cos, sin).split([nh, nkv], dim=1)  # one rotation for q and k together
        return q, k, heads[:, nh + nkv:]

    def _mlp(self, layer, x: torch.Tensor) -> torch.Tensor:
        gate, up = self._project(layer, "gate_up", self._norm(x, layer["ln2"])).chunk(2, dim=-1)  # [b, t, I] each
        return x + self._project(layer, "down", F.silu(gate) * up)  # a bf16 update is added to the fp32 stream

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return linear(self._norm(x, self.final_norm).to(self.lm_head.dtype), self.lm_head, self.lm_bias).float()

    def _cos_sin(self, positions: torch.Tensor):
        cos, sin = self.rotary(self.embed[:1], positions)  # [b, t, d]
        return cos.unsqueeze(1).to(self.dtype), sin.unsqueeze(1).to(self.dtype)  # [b, 1, t, d]

    # ------------------------------------------------------------------------------------------------ passes
    def prefill(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, cache: torch.Tensor,
                rows: torch.Tensor, past: int = 0) -> torch.Tensor:
        """Run left-padded prompts [P, Tp] once; write their K/V to cache rows ``rows[p]`` (a [P, G] index).

        cache: [L, 2, B, nkv, Tmax, d]. ``past``: cache columns before this block, already filled with real
        tokens (a shared prefix) that every prompt attends to; the block goes to columns past .. past+Tp-1.
        Returns the logits [P, V] of each prompt's next token.
        """
        p, tp = prompt_ids.shape
        positions = past + (prompt_mask.cumsum(1) - 1).clamp(min=0)  # [P, Tp]
        cos, sin = self._cos_sin(positions)
        causal = torch.ones(tp, tp, dtype=torch.bool).tril()  # [Tp, Tp]
        # A padding query may see only itself (its output is never used; this keeps softmax finite).
        allowed = (causal & prompt_mask.bool()[:, None, :]) | torch.eye(tp, dtype=torch.bool)  # [P, Tp, Tp]
        allowed = torch.cat([torch.ones(p, tp, past, dtype=torch.bool), allowed], dim=2).unsqueeze(1)
        group = self.num_heads // self.num_kv_heads
        x = F.embedding(prompt_ids, self.embed)  # [P, Tp, H]
        for i, layer in enumerate(self.layers):
            q, k, v = self._qkv(layer, x, cos, sin)
            for g in range(rows.shape[1]):
                cache[i, 0, rows[:, g], :, past:past + tp] = k
                cache[i, 1, rows[:, g], :, past:past + tp] = v
            if past:
                k = cache[i, 0, rows[:, 0], :, :past + tp]  # [P, nkv, past+Tp, d]
                v = cache[i, 1, rows[:, 0], :, :past + tp]
            attn = F.scaled_dot_product_attention(q, k.repeat_interleave(group, 1), v.repeat_interleave(group, 1),
                                                  attn_mask=allowed, scale=self.scale)  # [P, nh, Tp, d]
            x = x + self._project(layer, "o", attn.transpose(1, 2).reshape(p, tp, -1))
            x = self._mlp(layer, x)
        return self._logits(x[:, -1])

    def decode(self, tokens: torch.Tensor, positions: torch.Tensor, cache: torch.Tensor, column: int,
               key_mask: torch.Tensor) -> torch.Tensor:
        """One token per row: tokens [b], positions [b]; writes K/V at ``column``; returns logits [b, V].

        key_mask [b, Tmax] marks the cache columns each row may attend to; columns after ``column`` are ignored.
        Attention runs over the whole preallocated cache (masked), because a column slice of it would be copied
        by every batched matmul: two copies of the cache per layer and step cost more than the masked columns.
        """
        b = tokens.shape[0]
        nkv, group, d = self.num_kv_heads, self.num_heads // self.num_kv_heads, self.head_dim
        cos, sin = self._cos_sin(positions[:, None])
        allowed = key_mask & (torch.arange(key_mask.shape[1]) <= column)  # [b, Tmax]
        key_bias = torch.zeros(b, 1, 1, key_mask.shape[1]).masked_fill(~allowed[:, None, None], -math.inf)
        x = F.embedding(tokens[:, None], self.embed)  # [b, 1, H]
        for i, layer in enumerate(self.layers):
            q, k, v = self._qkv(layer, x, cos, sin)  # q [b, nh, 1, d]
            cache[i, 0, :, :, column] = k[:, :, 0]
            cache[i, 1, :, :, column] = v[:, :, 0]
            # Query heads sharing a KV head become that head's "query positions": GQA without copying the cache.
            # Plain matmul-softmax-matmul: for one query token it is faster than the fused CPU kernel.
            scores = torch.matmul(q.reshape(b, nkv, group, d), cache[i, 0].transpose(-1, -2))  # [b, nkv, g, Tmax]
            weights = (scores.float() * self.scale + key_bias).softmax(-1)
            attn = torch.matmul(weights.to(self.dtype), cache[i, 1])  # [b, nkv, group, d]
            x = x + self._project(layer, "o", attn.reshape(b, 1, -1))
            x = self._mlp(layer, x)
        return self._logits(x[:, 0])

    def new_cache(self, rows: int, length: int) -> torch.Tensor:
        return torch.zeros(len(self.layers), 2, rows, self.num_kv_heads, length, self.head_dim, dtype=self.dtype)


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


@torch.no_grad()
def generate(decoder: LeanDecoder, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, num_generations: int,
             max_new_tokens: int, eos_ids: list[int], pad_id: int, temperature: float = 1.0, top_k: int = 0,
             top_p: float = 1.0, greedy: bool = False,
             generators: list[torch.Generator] | None = None, guide=None) -> torch.Tensor:
    """Sample G completions per left-padded prompt [P, Tp]; returns completion ids [P*G, Tc] (pad after EOS).

    Tc is the longest completion (at most max_new_tokens); rows are grouped by prompt (p*G .. p*G+G-1).
    ``greedy`` takes the most likely token instead of sampling (the warpers then do not matter).
    ``generators``: one per prompt, the source of its group's draws (None = torch's global generator).
    ``guide``: a `rftune.constraints.Guide` over the P*G rows, which masks each step's logits (None = no constraint).
    """
    p = prompt_ids.shape[0]
    total = p * num_generations
    shared = common_prefix_length(prompt_ids, prompt_mask)
    if shared < MIN_SHARED_PREFIX:
        shared = 0
    suffix_ids, suffix_mask = drop_prefix(prompt_ids, prompt_mask, shared)  # [P, Ts]
    tp = shared + suffix_ids.shape[1]  # cache columns of the prompt: prefix, then the left-padded remainders
    cache = decoder.new_cache(total, tp + max_new_tokens)
    grid = torch.arange(total).view(p, num_generations)  # the cache rows of each prompt
    if shared:
        first = int(prompt_mask[0].nonzero()[0])
        decoder.prefill(prompt_ids[:1, first:first + shared], prompt_mask[:1, first:first + shared], cache,
                        grid.view(1, -1))
    logits = decoder.prefill(suffix_ids, suffix_mask, cache, grid, past=shared)
    logits = logits.repeat_interleave(num_generations, dim=0)  # [B, V]
    layout_mask = torch.cat([torch.ones(p, shared, dtype=torch.bool), suffix_mask.bool()], dim=1)  # [P, tp]
    key_mask = torch.cat([layout_mask.repeat_interleave(num_generations, 0),
                          torch.ones(total, max_new_tokens, dtype=torch.bool)], dim=1)  # [B, Tmax]
    positions = layout_mask.sum(1).repeat_interleave(num_generations)  # [B] next token's position
    eos = torch.tensor(eos_ids)
    out = torch.full((total, max_new_tokens), pad_id, dtype=torch.long)
    rows = torch.arange(total)  # row of `out` that each cache row fills
    done = torch.zeros(total, dtype=torch.bool)  # [b] the row has sampled an EOS
    length = 0
    for step in range(max_new_tokens):
        if guide is not None:
            logits = guide.mask_logits(logits, rows, step)  # [b, V] tokens the constraint forbids at -inf
        uniform = None if generators is None or greedy else group_uniforms(generators, num_generations)[rows]
        tokens = logits.argmax(-1) if greedy else sample_tokens(logits, temperature, top_k, top_p, uniform)  # [b]
        if guide is not None:
            guide.advance(rows, tokens)
        out[rows, step] = tokens  # a finished row's extra tokens fall after its EOS and are masked below
        done |= torch.isin(tokens, eos)
        length = step + 1
        if length == max_new_tokens or done.all():
            break
        if (~done).sum() <= COMPACT_FRACTION * rows.numel():
            keep = (~done).nonzero().squeeze(1)
            cache, rows, tokens, done = cache[:, :, keep], rows[keep], tokens[keep], done[keep]
            positions, key_mask = positions[keep], key_mask[keep]
        column = tp + step
        logits = decoder.decode(tokens, positions + step, cache, column, key_mask)
    return _mask_after_eos(out[:, :length], eos, pad_id)


def common_prefix_length(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> int:
    """Tokens that every left-padded prompt [P, Tp] starts with, at most the shortest prompt's length - 1."""
    prompts = [ids[mask.bool()] for ids, mask in zip(prompt_ids, prompt_mask)]
    limit = min(len(ids) for ids in prompts) - 1
    if len(prompts) < 2 or limit <= 0:
        return 0
    same = torch.stack([ids[:limit] == prompts[0][:limit] for ids in prompts[1:]]).all(0)  # [limit]
    return int(same.long().cumprod(0).sum())


def drop_prefix(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The prompts without their first `count` real tokens, left-padded again to the longest remainder."""
    if count == 0:
        return prompt_ids, prompt_mask
    lengths = prompt_mask.sum(1) - count  # [P]
    width = int(lengths.max())
    keep = torch.arange(width)[None] >= (width - lengths)[:, None]  # [P, width] True on real tokens
    ids = torch.zeros(prompt_ids.shape[0], width, dtype=prompt_ids.dtype)
    ids[keep] = prompt_ids[:, -width:][keep]
    return ids, keep.long()


def _mask_after_eos(ids: torch.Tensor, eos: torch.Tensor, pad_id: int) -> torch.Tensor:
    is_eos = torch.isin(ids, eos)
    after = (is_eos.long().cumsum(1) - is_eos.long()) > 0
    return ids.masked_fill(after, pad_id)
