"""Mono-InternVL: a decoder-only LLM with visual experts embedded in every layer (paper 3.1).

Legend: B batch, S new tokens, P cached tokens, D width, N tiles, V vocabulary.

Image tokens enter as `<IMG_CONTEXT>` placeholders whose embeddings are replaced by the visual
tokenizer's output; those positions are the visual tokens the experts see. Decoded tokens are
text, so generation after the prompt runs the text path only.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    DynamicCache,
    GenerationMixin,
    PreTrainedModel,
)
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from model.attention import (
    MonoInternVLRMSNorm,
    MultimodalAttention,
    RotaryEmbedding,
)
from model.configuration import MonoInternVLConfig
from model.mmoe import ModalityRoute, SwiGLU
from model.packed_attention import plan_attention, positions_and_samples, resolve_backend
from model.supervised_loss import next_token_loss, supervised_loss
from model.vision import VisionTokenizer


class MonoInternVLDecoderLayer(GradientCheckpointingLayer):
    """x' = x + MHA(RMSNorm(x)); x'' = x' + MMoE(RMSNorm(x')) (paper eq. 4)."""

    def __init__(self, config: MonoInternVLConfig, layer_idx: int):
        super().__init__()
        d, f, eps = config.hidden_size, config.intermediate_size, config.rms_norm_eps
        self.input_layernorm = MonoInternVLRMSNorm(d, eps)
        self.self_attn = MultimodalAttention(config, layer_idx)
        self.post_attention_layernorm = MonoInternVLRMSNorm(d, eps)
        self.mlp = SwiGLU(d, f, bias=config.mlp_bias)
        self.visual_mlp = SwiGLU(d, f, bias=config.mlp_bias) if config.visual_ffn_experts else None

    def forward(self, x_BSD, route, cos_BSd, sin_BSd, plan, cache=None):
        x_BSD = x_BSD + self.self_attn(
            self.input_layernorm(x_BSD), route, cos_BSd, sin_BSd, plan, cache
        )
        return x_BSD + route.apply(self.post_attention_layernorm(x_BSD), self.mlp, self.visual_mlp)


class MonoInternVLPreTrainedModel(PreTrainedModel):
    config: MonoInternVLConfig
    config_class = MonoInternVLConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = ["MonoInternVLDecoderLayer"]
    _supports_sdpa = True

    def set_activation_checkpointing(self, mode: str, every: int = 2) -> None:
        """Recompute decoder layers in backward instead of keeping their activations.

        Args:
            mode: `none`, `full` (every layer) or `every_n` (every `every`-th layer, trading
                less recompute for more memory).
            every: the period for `every_n`.

        Non-reentrant `torch.utils.checkpoint`: frozen inputs (S1.x's text embeddings) need no
        `requires_grad` trick, and it runs under DeepSpeed ZeRO 0-3 like any module.
        """
        if mode not in ("none", "full", "every_n") or every < 1:
            raise ValueError(f"activation checkpointing: mode none|full|every_n and every >= 1, "
                             f"got {mode!r}, {every}")  # fmt: skip
        if mode == "none":
            self.gradient_checkpointing_disable()
            return
        self.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        layers = [m for m in self.modules() if isinstance(m, MonoInternVLDecoderLayer)]
        for index, layer in enumerate(layers):
            layer.gradient_checkpointing = mode == "full" or index % every == 0

    def set_packed_attention(self, backend: str) -> None:
        """How packed samples attend (`model.packed_attention.BACKENDS`), checked here against the
        model's device, dtype and mode (set it after `train()`)."""
        resolve_backend(backend, self.device, self.dtype, training=self.training)
        self.config.packed_attention = backend

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, VisionTokenizer):
            init.normal_(module.class_embedding, mean=0.0, std=self.config.initializer_range)
            init.normal_(module.position_embedding, mean=0.0, std=self.config.initializer_range)


class MonoInternVLModel(MonoInternVLPreTrainedModel):
    """Visual tokenizer + token embeddings + MMoE decoder layers + final norm."""

    def __init__(self, config: MonoInternVLConfig):
        super().__init__(config)
        self.vision = VisionTokenizer(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.layers = nn.ModuleList(
            MonoInternVLDecoderLayer(config, i) for i in range(config.num_hidden_layers)
        )
        self.norm = MonoInternVLRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary = RotaryEmbedding(config.head_dim, config.rope_theta, config.rope_scaling,
                                      config.max_position_embeddings)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self):
        return self.embed_tokens

    def set_input_embeddings(self, value):
        self.embed_tokens = value

    def _keep_visual_in_graph(self) -> bool:
        """While training, a batch without images still runs the visual path, with weight 0.

        Why: DeepSpeed (like DDP) reduces gradients bucket by bucket over the parameters that got
        one; a worker whose batch has no image would skip the visual parameters, and its
        collectives would no longer match the other workers' (gloo: "Received data size doesn't
        match expected size"). InternVL trains text-only samples with a dummy image alike.
        """
        return self.training and torch.is_grad_enabled()

    def embed(self, input_ids_BS, pixel_values_N3SS=None):
        """Token embeddings with `<IMG_CONTEXT>` positions replaced by visual tokens.

        Returns:
            (embeddings (B, S, D), visual mask (B, S) or None when there is no image).
        """
        embeds_BSD = self.embed_tokens(input_ids_BS)
        if pixel_values_N3SS is None or pixel_values_N3SS.shape[0] == 0:
            if self._keep_visual_in_graph():
                size = self.config.tile_size
                blank = self.vision(embeds_BSD.new_zeros(1, self.config.num_channels, size, size))
                embeds_BSD = embeds_BSD + 0.0 * blank.sum()
            return embeds_BSD, None
        if self.config.image_token_id is None:
            raise ValueError("config.image_token_id is not set; build the model with a tokenizer")
        visual_mask_BS = input_ids_BS == self.config.image_token_id
        visual_ND = self.vision(pixel_values_N3SS).reshape(-1, embeds_BSD.shape[-1])
        placeholders = int(visual_mask_BS.sum())
        if placeholders != visual_ND.shape[0]:
            raise ValueError(
                f"{placeholders} <IMG_CONTEXT> tokens in input_ids, but "
                f"{pixel_values_N3SS.shape[0]} tiles give {visual_ND.shape[0]} visual tokens "
                f"({self.config.tokens_per_tile} per tile)"
            )
        embeds_BSD = embeds_BSD.masked_scatter(
            visual_mask_BS[..., None], visual_ND.to(embeds_BSD.dtype)
        )
        return embeds_BSD, visual_mask_BS

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        sample_ids: torch.LongTensor | None = None,
        cache=None,
        inputs_embeds: torch.FloatTensor | None = None,
        use_cache: bool | None = None,
        past_key_values=None,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        """Runs the decoder.

        Args:
            input_ids: (B, S) token ids, with `<IMG_CONTEXT>` x tokens_per_tile per tile.
            pixel_values: (N, 3, tile, tile) tiles of every image in the batch, in order.
            attention_mask: (B, P + S) 1 for real tokens, 0 for padding.
            position_ids: (B, S); restarting at 0 inside a row marks a packed sample boundary.
            sample_ids: (B, S) packed-sample index per token; no token attends across samples.
            cache: a transformers `Cache` for KV-cached decoding.
        """
        cache = cache if cache is not None else past_key_values
        if inputs_embeds is None:
            if input_ids is None:
                raise ValueError("give input_ids or inputs_embeds")
            inputs_embeds, visual_mask_BS = self.embed(input_ids, pixel_values)
        else:
            visual_mask_BS = None
            if pixel_values is not None:
                raise ValueError("pixel_values need input_ids to find the image placeholders")
        b, s, _ = inputs_embeds.shape
        if use_cache is None:
            use_cache = self.config.use_cache and not self.training
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        num_cached = cache.get_seq_length() if cache is not None else 0
        position_ids, sample_ids = positions_and_samples(
            attention_mask, position_ids, sample_ids, s, num_cached, inputs_embeds.device
        )
        padding = (
            attention_mask if attention_mask is not None and not attention_mask.all() else None
        )
        plan = plan_attention(self.config.packed_attention, padding, sample_ids, s, num_cached,
                              inputs_embeds)
        cos_BSd, sin_BSd = self.rotary(position_ids.to(inputs_embeds.device), inputs_embeds.dtype)
        route = ModalityRoute(visual_mask_BS, keep_visual_in_graph=self._keep_visual_in_graph())
        x_BSD = inputs_embeds
        for layer in self.layers:
            x_BSD = layer(x_BSD, route, cos_BSd, sin_BSd, plan, cache)
        return BaseModelOutputWithPast(last_hidden_state=self.norm(x_BSD), cache=cache)


class MonoInternVLForCausalLM(MonoInternVLPreTrainedModel, GenerationMixin):
    """The causal LM: `MonoInternVLModel` + LM head, with `generate` from transformers."""

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: MonoInternVLConfig):
        super().__init__(config)
        self.model = MonoInternVLModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()
        self.set_image_token_ids(
            config.image_token_id, config.image_start_token_id, config.image_end_token_id
        )

    def set_image_token_ids(self, context_id: int | None, start_id: int | None, end_id: int | None):
        """Records the image tokens' ids and keeps `generate` from ever emitting them."""
        self.config.image_token_id = context_id
        self.config.image_start_token_id = start_id
        self.config.image_end_token_id = end_id
        # Image placeholders come only from the prompt; a generated one would have no pixels.
        ids = [i for i in (context_id, start_id, end_id) if i is not None]
        self.generation_config.suppress_tokens = ids or None

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def set_input_embeddings(self, value):
        self.model.embed_tokens = value

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, value):
        self.lm_head = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        sample_ids: torch.LongTensor | None = None,
        cache=None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int = 0,
        past_key_values=None,
        loss_weights: torch.Tensor | None = None,
        full_logits: bool = True,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """Logits (B, S, V), and the next-token loss when `labels` (-100 = ignored) are given.

        Args:
            loss_weights: (B, S) weight of each label (InternVL's square-root averaging).
            full_logits: False (training) returns only the loss, computed from the supervised
                positions' hidden states (`supervised_loss`): no (B, S, V) tensor is built.
        """
        out = self.model(
            input_ids=input_ids,
            pixel_values=pixel_values,
            attention_mask=attention_mask,
            position_ids=position_ids,
            sample_ids=sample_ids,
            cache=cache if cache is not None else past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
        )
        hidden_BSD = out.last_hidden_state
        if not full_logits:
            if labels is None:
                raise ValueError("full_logits=False returns only the loss: give labels")
            loss = supervised_loss(hidden_BSD, self.lm_head, labels, loss_weights)
            return CausalLMOutputWithPast(loss=loss, logits=None, cache=out.cache)
        if logits_to_keep:
            hidden_BSD = hidden_BSD[:, -logits_to_keep:]
        logits_BSV = self.lm_head(hidden_BSD)
        loss = None
        if labels is not None:
            loss = next_token_loss(logits_BSV, labels, loss_weights)
        return CausalLMOutputWithPast(loss=loss, logits=logits_BSV, cache=out.cache)


AutoConfig.register(MonoInternVLConfig.model_type, MonoInternVLConfig, exist_ok=True)
AutoModelForCausalLM.register(MonoInternVLConfig, MonoInternVLForCausalLM, exist_ok=True)
