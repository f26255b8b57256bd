"""HfLlava configuration (remote-code file: imports only transformers and its siblings).

A LLaVA model is a vision tower + a projector + a causal LLM. Both towers are ordinary transformers configs resolved
through AutoConfig, so any CLIP/SigLIP vision encoder and any decoder LLM plug in. `model_type` is "hf_llava"
because transformers owns "llava".
"""

import re
from typing import Literal

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

# Written into every saved config so the checkpoint loads with trust_remote_code=True where hf_llava is not installed.
AUTO_MAP = {
    "AutoConfig": "configuration_hf_llava.HfLlavaConfig",
    "AutoModel": "modeling_hf_llava.HfLlavaModel",
    "AutoModelForCausalLM": "modeling_hf_llava.HfLlavaForConditionalGeneration",
    "AutoModelForImageTextToText": "modeling_hf_llava.HfLlavaForConditionalGeneration",
    "AutoProcessor": "processing_hf_llava.HfLlavaProcessor",
}
PROJECTOR_PATTERN = re.compile(r"^(?:linear|identity|mlp(\d+)x_gelu)$")


def projector_depth(projector_type: str) -> int:
    """Number of Linear layers of a projector type: identity 0, linear 1, mlpNx_gelu N."""
    match = PROJECTOR_PATTERN.match(projector_type)
    if match is None:
        raise ValueError(
            f"Unknown projector_type {projector_type!r}: expected 'linear', 'identity' or 'mlpNx_gelu' "
            "(e.g. 'mlp2x_gelu', LLaVA-1.5's projector)."
        )
    if projector_type == "identity":
        return 0
    if projector_type == "linear":
        return 1
    depth = int(match.group(1))
    if depth < 1:
        raise ValueError(f"projector_type {projector_type!r} needs at least one layer")
    return depth


def vision_tower_has_cls(vision_config: PreTrainedConfig) -> bool:
    """CLIP-style towers prepend a CLS token; SigLIP-style towers do not."""
    return "siglip" not in vision_config.model_type


class HfLlavaConfig(PreTrainedConfig):
    r"""
    Configuration of an [`HfLlavaForConditionalGeneration`].

    Args:
        vision_config: config (or dict with `model_type`) of the vision tower; a full CLIP/SigLIP config is reduced to
            its vision part.
        text_config: config (or dict with `model_type`) of the language model.
        image_token_id: vocabulary id of the `<image>` placeholder; each image occupies `image_seq_length` of them.
        image_seq_length: features per image. Derived from the vision tower when left `None`.
        vision_feature_layer: hidden-state index (or list of indices, concatenated) taken from the vision tower.
        vision_feature_select_strategy: "default" drops the CLS token (CLIP), "full" keeps every position.
        projector_type: "linear" (LLaVA-1), "mlpNx_gelu" (LLaVA-1.5 uses "mlp2x_gelu") or "identity".
        projector_bias: whether the projector's Linear layers have a bias.
        projector_hidden_act: activation between projector layers.
        image_position_embedding_std: when > 0, the projector also holds a learned vector per image-feature position
            (`image_seq_length` x the LLM's width, initialised N(0, std)) added to its output, so each image token
            says where in the image it sits; 0 (LLaVA, native llava): none. For towers whose patch features keep
            little of their position (the shapes demo's 3 x 3-token tower).
        tie_word_embeddings: tie `lm_head` to the LLM's input embeddings (inherits the text config's choice).
    """

    model_type = "hf_llava"
    _auto_class = "AutoConfig"  # save_pretrained copies this file next to config.json
    attribute_map = {"image_token_index": "image_token_id"}
    sub_configs_defaults = {
        "vision_config": SubConfigSpec(config_class=AutoConfig, model_type="clip_vision_model"),
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama"),
    }

    vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    image_token_id: int = 32000
    image_seq_length: int | None = None
    vision_feature_layer: int | list[int] = -2
    vision_feature_select_strategy: Literal["default", "full"] = "default"
    projector_type: str = "mlp2x_gelu"
    projector_bias: bool = True
    projector_hidden_act: str = "gelu"
    image_position_embedding_std: float = 0.0
    tie_word_embeddings: bool = False
    auto_map: dict | None = None

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.auto_map is None:
            self.auto_map = dict(AUTO_MAP)
        # A full CLIPConfig/SiglipConfig (text + vision) was given: keep the vision half.
        if hasattr(self.vision_config, "vision_config"):
            self.vision_config = self.vision_config.vision_config
        if not self.tie_word_embeddings and getattr(self.text_config, "tie_word_embeddings", False):
            self.tie_word_embeddings = True
        if isinstance(self.vision_feature_layer, (list, tuple)):
            self.vision_feature_layer = [int(layer) for layer in self.vision_feature_layer]
            if not self.vision_feature_layer:
                raise ValueError("vision_feature_layer must not be an empty list")
        self._check_vision_feature_layer()

        if self.image_position_embedding_std < 0:
            raise ValueError(f"image_position_embedding_std must be >= 0, got {self.image_position_embedding_std}")
        depth = projector_depth(self.projector_type)
        if depth == 0 and self.projector_input_size != self.text_config.hidden_size:
            raise ValueError(
                f"projector_type 'identity' needs vision features of the LLM's width: vision gives "
                f"{self.projector_input_size}, the LLM expects {self.text_config.hidden_size}"
            )
        if self.vision_feature_select_strategy == "default" and not vision_tower_has_cls(self.vision_config):
            raise ValueError(
                f"vision_feature_select_strategy='default' drops the CLS token, but a {self.vision_config.model_type} "
                "tower has none: use vision_feature_select_strategy='full'"
            )
        expected = self.num_image_features
        if self.image_seq_length is None:
            self.image_seq_length = expected
        elif self.image_seq_length != expected:
            raise ValueError(
                f"image_seq_length={self.image_seq_length} but the vision tower gives {expected} features per image "
                f"({self.vision_config.image_size}px / patch {self.vision_config.patch_size}, "
                f"strategy {self.vision_feature_select_strategy!r})"
            )

    def _check_vision_feature_layer(self) -> None:
        """Refuse now what would otherwise be a bare IndexError in the first forward pass."""
        num_layers = getattr(self.vision_config, "num_hidden_layers", None)
        if num_layers is None:
            return
        num_states = num_layers + 1  # the embeddings' output, then one per layer
        layers = self.vision_feature_layer if isinstance(self.vision_feature_layer, list) else [self.vision_feature_layer]
        out_of_range = [layer for layer in layers if not -num_states <= layer < num_states]
        if out_of_range:
            raise ValueError(
                f"vision_feature_layer {self.vision_feature_layer} is out of range: the {self.vision_config.model_type} "
                f"tower has {num_layers} layers, so hidden-state indices run from {-num_states} to {num_states - 1} "
                "(-2, the second-to-last layer, is LLaVA's choice)"
            )

    @property
    def projector_input_size(self) -> int:
        layers = 1 if isinstance(self.vision_feature_layer, int) else len(self.vision_feature_layer)
        return self.vision_config.hidden_size * layers

    @property
    def num_image_features(self) -> int:
        """Feature vectors one image contributes to the LLM sequence."""
        patches = (self.vision_config.image_size // self.vision_config.patch_size) ** 2
        has_cls = vision_tower_has_cls(self.vision_config)
        return patches + int(has_cls and self.vision_feature_select_strategy == "full")


__all__ = ["HfLlavaConfig"]
