"""HfLlava model (remote-code file: imports only torch, transformers and its siblings).

Design notes
- Module names match transformers' `LlavaForConditionalGeneration` (`model.vision_tower`,
  `model.multi_modal_projector.linear_1/linear_2`, `model.language_model`, `lm_head`), so weights move between the two
  by renaming nothing; other projector depths just add `linear_3`, ...
- One `<image>` placeholder token per image feature: the processor expands them, the model overwrites their embeddings
  with projected vision features in order (images flattened across the batch), so text-only rows, several images per
  row and left padding need no special case.
- `pixel_values` are dropped by `generate` after prefill (transformers' MULTIMODAL_INPUTS_TO_DROP_OUTSIDE_PREFILL), so
  the vision tower runs once per generation.
- Training with a frozen tower may pass `vision_features` (the tower's selected, pre-projector features, as
  `get_vision_features` returns them, e.g. from a cache) instead of `pixel_values`: the tower is then not run.
"""

from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModel, GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache
from transformers.modeling_outputs import BaseModelOutputWithPast, ModelOutput

from .configuration_hf_llava import HfLlavaConfig, projector_depth


@dataclass
class HfLlavaModelOutputWithPast(BaseModelOutputWithPast):
    """Base-model output plus the projected image features (num_images, image_seq_length, hidden)."""

    image_hidden_states: torch.FloatTensor | None = None


@dataclass
class HfLlavaCausalLMOutputWithPast(ModelOutput):
    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    past_key_values: Cache | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    image_hidden_states: torch.FloatTensor | None = None


class HfLlavaMultiModalProjector(nn.Module):
    """`linear` (LLaVA-1), `mlpNx_gelu` (LLaVA-1.5: N=2) or `identity`; layers are named linear_1..linear_N, plus an
    optional learned `position_embedding` per image-feature position (config.image_position_embedding_std > 0)."""

    def __init__(self, config: HfLlavaConfig):
        super().__init__()
        self.depth = projector_depth(config.projector_type)
        width = config.text_config.hidden_size
        in_features = config.projector_input_size
        for index in range(1, self.depth + 1):
            layer = nn.Linear(in_features if index == 1 else width, width, bias=config.projector_bias)
            self.add_module(f"linear_{index}", layer)
        if self.depth > 1:
            self.act = ACT2FN[config.projector_hidden_act]
        # The LLM's 1-D positions give an image token's place in the sequence, not its column in the image grid; where
        # the tower's features keep little of it, a learned vector per position carries it.
        if config.image_position_embedding_std > 0:
            self.position_embedding = nn.Parameter(torch.empty(config.image_seq_length, width))
        else:
            self.register_parameter("position_embedding", None)

    def forward(self, image_features: torch.Tensor) -> torch.Tensor:
        hidden_states = image_features
        for index in range(1, self.depth + 1):
            if index > 1:
                hidden_states = self.act(hidden_states)
            hidden_states = getattr(self, f"linear_{index}")(hidden_states)
        if self.position_embedding is not None:
            hidden_states = hidden_states + self.position_embedding
        return hidden_states


class HfLlavaPreTrainedModel(PreTrainedModel):
    config_class = HfLlavaConfig
    config: HfLlavaConfig
    base_model_prefix = "model"
    _auto_class = "AutoModelForImageTextToText"  # save_pretrained copies the remote-code files (auto_map: config)
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _skip_keys_device_placement = ["past_key_values"]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, HfLlavaMultiModalProjector) and module.position_embedding is not None:
            init.normal_(module.position_embedding, mean=0.0, std=self.config.image_position_embedding_std)


class HfLlavaModel(HfLlavaPreTrainedModel):
    """Vision tower + projector + the LLM's base model; returns hidden states (no LM head)."""

    def __init__(self, config: HfLlavaConfig):
        super().__init__(config)
        self.vision_tower = AutoModel.from_config(config.vision_config)
        self.multi_modal_projector = HfLlavaMultiModalProjector(config)
        self.language_model = AutoModel.from_config(config.text_config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_vision_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The tower's selected features of each image, before the projector: (num_images, image_seq_length, width)."""
        if pixel_values.ndim == 5:  # (batch, images per row, C, H, W) -> one flat list of images
            pixel_values = pixel_values.flatten(0, 1)
        pixel_values = pixel_values.to(dtype=self.vision_tower.dtype)
        layers = self.config.vision_feature_layer
        outputs = self.vision_tower(pixel_values, output_hidden_states=True, return_dict=True)
        if isinstance(layers, int):
            features = outputs.hidden_states[layers]
        else:
            features = torch.cat([outputs.hidden_states[layer] for layer in layers], dim=-1)
        if self.config.vision_feature_select_strategy == "default":
            features = features[:, 1:]  # drop CLS
        return features

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Projected features of each image: (num_images, image_seq_length, text hidden size)."""
        return self.multi_modal_projector(self.get_vision_features(pixel_values))

    def merge_image_features(
        self, input_ids: torch.LongTensor | None, inputs_embeds: torch.Tensor, image_features: torch.Tensor
    ) -> torch.Tensor:
        """Write image features into the `<image>` placeholder positions (in order), checking the counts."""
        if input_ids is not None:
            image_mask = input_ids == self.config.image_token_id
        else:  # embeddings given directly: placeholders are the rows equal to the <image> embedding
            image_embedding = self.get_input_embeddings()(
                torch.tensor(self.config.image_token_id, device=inputs_embeds.device)
            )
            image_mask = (inputs_embeds == image_embedding).all(-1)
        num_tokens = int(image_mask.sum())
        num_images, per_image = image_features.shape[:2]
        if num_tokens != num_images * per_image:
            raise ValueError(
                f"Image features and image tokens do not match: the text has {num_tokens} image tokens but "
                f"{num_images} image(s) x {per_image} features = {num_images * per_image} features "
                "(was an <image> marker lost, duplicated, or truncated away?)"
            )
        image_features = image_features.to(inputs_embeds.device, inputs_embeds.dtype)
        return inputs_embeds.masked_scatter(image_mask.unsqueeze(-1), image_features)

    @staticmethod
    def _is_prefill(past_key_values: Cache | None) -> bool:
        return past_key_values is None or past_key_values.get_seq_length() == 0

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        vision_features: torch.FloatTensor | None = None,
        **kwargs,
    ) -> HfLlavaModelOutputWithPast:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds")
        if pixel_values is not None and vision_features is not None:
            raise ValueError("Pass pixel_values or (precomputed) vision_features, not both")
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)
        image_features = None
        if pixel_values is not None or vision_features is not None:
            if vision_features is None:
                vision_features = self.get_vision_features(pixel_values)
            image_features = self.multi_modal_projector(vision_features)
            inputs_embeds = self.merge_image_features(input_ids, inputs_embeds, image_features)
        elif self._is_prefill(past_key_values) and input_ids is not None and (
            input_ids == self.config.image_token_id
        ).any():
            # Placeholders without pixels would silently feed the <image> embedding to the LLM. (Checked on the prompt
            # only: a decode step may legitimately sample the placeholder id.)
            raise ValueError(
                "Image features and image tokens do not match: the text has "
                f"{int((input_ids == self.config.image_token_id).sum())} image tokens but no pixel_values were given"
            )

        outputs = self.language_model(
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            **{**kwargs, "return_dict": True},
        )
        return HfLlavaModelOutputWithPast(
            last_hidden_state=outputs.last_hidden_state,
            past_key_values=outputs.past_key_values,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_hidden_states=image_features,
        )


class HfLlavaForConditionalGeneration(HfLlavaPreTrainedModel, GenerationMixin):
    """LLaVA for image-text-to-text generation and training (loss on `labels`, -100 ignored)."""

    _tied_weights_keys = {"lm_head.weight": "model.language_model.embed_tokens.weight"}

    def __init__(self, config: HfLlavaConfig):
        super().__init__(config)
        self.model = HfLlavaModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def set_output_embeddings(self, new_embeddings: nn.Module) -> None:
        self.lm_head = new_embeddings

    # Short names used by recipes and PEFT target patterns.
    @property
    def vision_tower(self) -> nn.Module:
        return self.model.vision_tower

    @property
    def multi_modal_projector(self) -> nn.Module:
        return self.model.multi_modal_projector

    @property
    def language_model(self) -> nn.Module:
        return self.model.language_model

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.get_image_features(pixel_values)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        vision_features: torch.FloatTensor | None = None,
        **kwargs,
    ) -> HfLlavaCausalLMOutputWithPast:
        outputs = self.model(
            input_ids=input_ids,
            pixel_values=pixel_values,
            vision_features=vision_features,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state
        # logits_to_keep=0 keeps all positions; an int keeps the last n; a tensor selects positions.
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden_states[:, keep, :])
        loss = None
        if labels is not None:
            loss = self.loss_function(
                logits=logits, labels=labels, vocab_size=self.config.text_config.vocab_size, **kwargs
            )
        return HfLlavaCausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            past_key_values=outputs.past_key_values,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_hidden_states=outputs.image_hidden_states,
        )


__all__ = ["HfLlavaForConditionalGeneration", "HfLlavaModel", "HfLlavaPreTrainedModel"]
