"""GPTSAN-japanese in plain PyTorch: a Switch Transformer decoder trained as a prefix-LM.

Each block is post-norm with the residual outside the norm (`x + LayerNorm(f(x))`): bias-free
self-attention, then either a top-1 routed mixture of experts (switch layers) or a dense SiLU
MLP (extension layers). The router sends each token to its most probable expert while that
expert has room (`expert_capacity` tokens per row and forward call); a token left over keeps
its input. Either way the result is scaled by the router's probability, and a tanh "soft
bypass" of the input is added. Learned position embeddings are added once at the bottom and,
when there are extension layers, again before the first of them. The output goes through
`last_project` + SiLU into the tied embedding matrix plus a logits bias.

Tokens with token type 1 are the prefix: every position sees them, so the prefix is read both
ways; the rest is causal. An optional `spout` vector becomes one extra key/value pair in every
layer, ahead of the text. Parameter names follow the hub checkpoints so they load unchanged.

Two places differ on purpose from transformers 4.x, whose results this code otherwise matches
(tests/data/gptsan): positions and expert capacity ignore left padding, so a row in a padded
batch gets exactly the logits it gets alone (4.x shifted positions only before its cache, and
counted pad tokens towards capacity).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_outputs import CausalLMOutputWithPast

from bot.models.gptsan.config import GPTSanConfig

_SPOUT_DEPTH = 8  # tanh layers before the projection into keys and values


class Attention(nn.Module):
    def __init__(self, config: GPTSanConfig) -> None:
        super().__init__()
        self.num_heads = config.num_heads
        self.head_dim = config.d_model // config.num_heads
        self.q_proj = nn.Linear(config.d_model, config.d_model, bias=False)
        self.k_proj = nn.Linear(config.d_model, config.d_model, bias=False)
        self.v_proj = nn.Linear(config.d_model, config.d_model, bias=False)
        self.out_proj = nn.Linear(config.d_model, config.d_model, bias=False)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(
        self, hidden: torch.Tensor, visible: torch.Tensor, cache: Cache, layer: int
    ) -> torch.Tensor:
        query = self._heads(self.q_proj(hidden)) * self.head_dim**-0.5
        key, value = cache.update(
            self._heads(self.k_proj(hidden)), self._heads(self.v_proj(hidden)), layer
        )
        scores = torch.matmul(query, key.transpose(-1, -2)).float()
        scores = scores.masked_fill(~visible, torch.finfo(torch.float32).min)
        weights = torch.softmax(scores, dim=-1).to(value.dtype)
        out = torch.matmul(weights, value).transpose(1, 2).reshape(hidden.shape)
        return self.out_proj(out)


class SelfAttentionLayer(nn.Module):
    def __init__(self, config: GPTSanConfig) -> None:
        super().__init__()
        self.self_attn = Attention(config)
        self.norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_epsilon)

    def forward(
        self, hidden: torch.Tensor, visible: torch.Tensor, cache: Cache, layer: int
    ) -> torch.Tensor:
        return hidden + self.norm(self.self_attn(hidden, visible, cache, layer))


class Expert(nn.Module):
    def __init__(self, config: GPTSanConfig) -> None:
        super().__init__()
        self.wi = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.wo = nn.Linear(config.d_ff, config.d_model, bias=False)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.wo(F.relu(self.wi(hidden)))


class Router(nn.Module):
    def __init__(self, config: GPTSanConfig) -> None:
        super().__init__()
        self.classifier = nn.Linear(config.d_model, config.num_experts, bias=config.router_bias)

    def forward(
        self, hidden: torch.Tensor, capacity: int, real: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(which expert takes each token, one-hot and all-zero when it overflowed; the
        router's top probability). Computed in float32 whatever the model's dtype."""
        weight = self.classifier.weight.float()
        bias = self.classifier.bias.float() if self.classifier.bias is not None else None
        probs = torch.softmax(F.linear(hidden.float(), weight, bias), dim=-1).to(hidden.dtype)
        chosen = F.one_hot(probs.argmax(dim=-1), probs.shape[-1])
        # Tokens claim an expert's capacity in order along the row; padding claims none.
        priority = torch.cumsum(chosen * real.unsqueeze(-1), dim=1)
        return chosen * (priority <= capacity), probs.max(dim=-1, keepdim=True).values


class SparseMLP(nn.Module):
    def __init__(self, config: GPTSanConfig) -> None:
        super().__init__()
        self.capacity = config.expert_capacity
        self.router = Router(config)
        self.experts = nn.ModuleDict(
            {f"expert_{i}": Expert(config) for i in range(config.num_experts)}
        )

    def forward(self, hidden: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        routes, top_prob = self.router(hidden, self.capacity, real)
        out = hidden.clone()  # an overflowed token passes through unchanged
        for index, expert in enumerate(self.experts.values()):
            taken = routes[..., index].bool()
            if taken.any():
                out[taken] = expert(hidden[taken]).to(out.dtype)
        return top_prob * out


class SparseFeedForward(nn.Module):
    def __init__(self, config: GPTSanConfig) -> None:
        super().__init__()
        self.mlp = SparseMLP(config)
        self.soft_bypass_mlp = nn.Linear(config.d_model, config.d_model, bias=False)
        self.norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_epsilon)

    def forward(self, hidden: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        mixed = self.mlp(hidden, real) + torch.tanh(self.soft_bypass_mlp(hidden))
        return hidden + self.norm(mixed)


class DenseMLP(nn.Module):
    def __init__(self, config: GPTSanConfig) -> None:
        super().__init__()
        self.wi = nn.Linear(config.d_model, config.d_ext, bias=True)
        self.wo = nn.Linear(config.d_ext, config.d_model, bias=True)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.wo(F.silu(self.wi(hidden)))


class DenseFeedForward(nn.Module):
    def __init__(self, config: GPTSanConfig) -> None:
        super().__init__()
        self.mlp = DenseMLP(config)
        self.norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_epsilon)

    def forward(self, hidden: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        return hidden + self.norm(self.mlp(hidden))


class Block(nn.Module):
    def __init__(self, config: GPTSanConfig, *, extension: bool) -> None:
        super().__init__()
        self.self_attn = SelfAttentionLayer(config)
        self.feed_forward: nn.Module = (
            DenseFeedForward(config) if extension else SparseFeedForward(config)
        )

    def forward(
        self,
        hidden: torch.Tensor,
        visible: torch.Tensor,
        real: torch.Tensor,
        cache: Cache,
        layer: int,
    ) -> torch.Tensor:
        return self.feed_forward(self.self_attn(hidden, visible, cache, layer), real)


class GPTSanModel(nn.Module):
    def __init__(self, config: GPTSanConfig) -> None:
        super().__init__()
        self.config = config
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.d_model)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.d_model)
        self.last_project = nn.Linear(config.d_model, config.d_model, bias=True)
        self.blocks = nn.ModuleList(
            [Block(config, extension=False) for _ in range(config.num_switch_layers)]
            + [Block(config, extension=True) for _ in range(config.num_ext_layers)]
        )
        if config.num_ext_layers > 0:
            self.extra_position_embeddings = nn.Embedding(
                config.max_position_embeddings, config.d_model
            )
        if config.d_spout:
            layers: list[nn.Module] = []
            for _ in range(_SPOUT_DEPTH):
                layers += [nn.Linear(config.d_spout, config.d_spout, bias=False), nn.Tanh()]
            layers.append(
                nn.Linear(config.d_spout, config.num_layers * 2 * config.d_model, bias=False)
            )
            self.spout = nn.Sequential(*layers)

    def _add_spout(self, spout: torch.Tensor, cache: Cache) -> None:
        """The spout's keys and values go into every layer's cache, ahead of the text."""
        config = self.config
        batch = spout.shape[0]
        head_dim = config.d_model // config.num_heads
        projected = self.spout(spout.to(self.embed_tokens.weight.dtype))
        projected = projected.view(batch, config.num_layers, 2, config.num_heads, 1, head_dim)
        for layer in range(config.num_layers):
            cache.update(projected[:, layer, 0], projected[:, layer, 1], layer)
        cache.gptsan_spout_length = 1  # type: ignore[attr-defined]

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        token_type_ids: torch.Tensor | None,
        spout: torch.Tensor | None,
        cache: Cache,
    ) -> torch.Tensor:
        config = self.config
        batch, length = input_ids.shape
        device = input_ids.device
        if spout is not None and not config.d_spout:
            raise ValueError("this GPTSAN checkpoint has no spout weights; call it without spout")
        if spout is not None and cache.get_seq_length() == 0:
            self._add_spout(spout, cache)
        spout_length = getattr(cache, "gptsan_spout_length", 0)
        past = cache.get_seq_length()
        total = past + length
        if attention_mask is None:
            attention_mask = torch.ones((batch, total - spout_length), device=device)
        text_mask = attention_mask.to(device=device, dtype=torch.long)
        # A token's position counts only the real tokens before it, so left padding moves none.
        positions = (text_mask.cumsum(-1) - 1)[:, -length:] + spout_length
        positions = positions.clamp(0, config.max_position_embeddings - 1)
        key_mask = torch.cat(
            [torch.ones((batch, spout_length), dtype=torch.long, device=device), text_mask], -1
        ).bool()
        query_at = torch.arange(length, device=device) + past
        visible = torch.arange(total, device=device)[None, :] <= query_at[:, None]
        visible = visible[None, None].expand(batch, 1, length, total)
        if token_type_ids is not None:  # the prefix is visible from every position
            prefix = torch.zeros((batch, total), dtype=torch.bool, device=device)
            prefix[:, past:] = token_type_ids.to(device).bool()
            visible = visible | prefix[:, None, None, :]
        visible = visible & key_mask[:, None, None, :]
        real = text_mask[:, -length:].to(torch.long)

        hidden = self.embed_tokens(input_ids) + self.position_embeddings(positions)
        for layer, block in enumerate(self.blocks):
            if layer == config.num_switch_layers:
                hidden = hidden + self.extra_position_embeddings(positions)
            hidden = block(hidden, visible, real, cache, layer)
        return F.silu(self.last_project(hidden))


class GPTSanForGeneration(PreTrainedModel, GenerationMixin):
    """The language model with `generate` from transformers (streamers, logits processors,
    stopping criteria, KV cache). Without `token_type_ids`, `generate` treats everything before
    the first `<|segmenter|>` of each row as the prefix, as GPTSAN's tokenizer does."""

    config_class = GPTSanConfig
    base_model_prefix = "gptsan"
    main_input_name = "input_ids"

    def __init__(self, config: GPTSanConfig) -> None:
        super().__init__(config)
        self.model = GPTSanModel(config)
        self.register_buffer("final_logits_bias", torch.zeros((1, config.vocab_size)))
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        """Weights always come from a checkpoint; nothing to initialise."""

    def get_input_embeddings(self) -> nn.Module:
        return self.model.embed_tokens

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        spout: torch.Tensor | None = None,
        cache: Cache | None = None,
        use_cache: bool | None = None,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast:
        use_cache = self.config.use_cache if use_cache is None else use_cache
        work_cache = cache if cache is not None else DynamicCache()
        hidden = self.model(input_ids, attention_mask, token_type_ids, spout, work_cache)
        logits = F.linear(hidden, self.model.embed_tokens.weight)
        if logits.shape[-1] == self.final_logits_bias.shape[-1]:
            logits = logits + self.final_logits_bias.to(logits.dtype)
        return CausalLMOutputWithPast(logits=logits, cache=work_cache if use_cache else None)

    def prepare_inputs_for_generation(
        self, input_ids: torch.Tensor, cache: Cache | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        first_step = cache is None or cache.get_seq_length() == 0
        if first_step and kwargs.get("token_type_ids") is None:
            kwargs["token_type_ids"] = prefix_types(input_ids, self.config.separator_token_id)
        return super().prepare_inputs_for_generation(input_ids, cache=cache, **kwargs)


def prefix_types(input_ids: torch.Tensor, separator_id: int) -> torch.Tensor:
    """Per row, 1 before the first separator and 0 from it on (all 0 in a row without one)."""
    is_separator = input_ids == separator_id
    seen = is_separator.long().cumsum(-1) > 0
    has_one = is_separator.any(-1, keepdim=True)
    return (~seen & has_one).long()
