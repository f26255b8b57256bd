"""HfLlava processor (remote-code file: imports only transformers, PIL and its siblings).

Design notes
- Text and images go through transformers' ProcessorMixin machinery: it checks that the number of `<image>` markers
  equals the number of images (per text when images come as one list per text, a check added here), expands each marker to `image_seq_length` placeholder tokens (one per image feature),
  and maps `{% generation %}` spans of the chat template to `assistant_masks`.
- `pad_to_square` reproduces LLaVA-1.5's `image_aspect_ratio=pad`: the image is centred on a square canvas filled with
  the image processor's mean colour before the usual resize/crop, so nothing is cropped away.
- Truncation that cuts into image placeholders is an error naming the sample, never a silently corrupted sample.
"""

from PIL import Image
from transformers import ProcessorMixin
from transformers.image_utils import make_flat_list_of_images


def expand_to_square(image: Image.Image, fill: tuple[int, ...]) -> Image.Image:
    """Centre `image` on a square canvas of `fill` colour (LLaVA-1.5 `pad`)."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    canvas = Image.new(image.mode, (side, side), fill if image.mode != "L" else fill[0])
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


class HfLlavaProcessor(ProcessorMixin):
    r"""
    Image processor (CLIP/SigLIP) + tokenizer + chat template for HfLlava.

    Args:
        image_processor: turns images into `pixel_values`.
        tokenizer: must know `image_token` as a (special) token.
        chat_template: Jinja template with `{% generation %}` around assistant answers (see `hf_llava.chat_templates`).
        image_token: the placeholder string, `<image>` by default.
        image_seq_length: placeholder tokens per image; must equal the model's `config.image_seq_length`.
        pad_to_square: pad images to a square with the mean colour before resizing (LLaVA-1.5).
    """

    _auto_class = "AutoProcessor"  # save_pretrained copies this file and writes its auto_map

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        chat_template=None,
        image_token: str = "<image>",
        image_seq_length: int = 576,
        pad_to_square: bool = False,
        **kwargs,
    ):
        self.image_token = getattr(tokenizer, "image_token", None) or image_token
        self.image_seq_length = image_seq_length
        self.pad_to_square = pad_to_square
        image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        if image_token_id is None or image_token_id == tokenizer.unk_token_id:
            raise ValueError(
                f"The tokenizer has no {self.image_token!r} token: add it first, e.g. "
                f"tokenizer.add_special_tokens({{'additional_special_tokens': [{self.image_token!r}]}}) "
                "and resize the model's embeddings"
            )
        self.image_token_id = image_token_id
        super().__init__(image_processor, tokenizer, chat_template=chat_template)

    def validate_inputs(self, images=None, text=None, **kwargs):
        super().validate_inputs(images=images, text=text, **kwargs)
        # The base class compares totals only: with one image list per text, row 1's image would silently fill
        # row 0's second marker. A list of lists is read as one list per text, and checked row by row.
        per_row = isinstance(images, (list, tuple)) and images and all(isinstance(row, (list, tuple)) for row in images)
        if text is None or not per_row:
            return
        texts = [text] if isinstance(text, str) else text
        if len(images) != len(texts):
            raise ValueError(
                f"{len(images)} image lists for {len(texts)} texts: give one list per text (an empty list for a text "
                "without images)"
            )
        for row, (sample, row_images) in enumerate(zip(texts, images)):
            markers = sample.count(self.image_token)
            if markers != len(row_images):
                raise ValueError(
                    f"Sample {row}: {markers} {self.image_token} marker(s) in its text but {len(row_images)} image(s) "
                    "in its list"
                )

    def _process_images(self, images, **kwargs):
        if self.pad_to_square:
            fill = tuple(int(255 * mean) for mean in self.image_processor.image_mean)  # CLIP: (122, 116, 104)
            images = [expand_to_square(image, fill) for image in make_flat_list_of_images(images)]
        return super()._process_images(images, **kwargs)

    def replace_image_token(self, image_inputs: dict, image_idx: int, **kwargs) -> str:
        return self.image_token * self.image_seq_length

    def _check_special_mm_tokens(self, text, text_inputs, modalities):
        expected = [sample.count(self.image_token) for sample in text]
        for row, (ids, want) in enumerate(zip(text_inputs["input_ids"], expected)):
            got = sum(1 for token in ids if token == self.image_token_id)
            if got != want:
                raise ValueError(
                    f"Sample {row}: truncation cut image tokens ({got} of {want} placeholder tokens kept, "
                    f"{self.image_seq_length} per image). Raise max_length, shorten the text, or drop the sample; "
                    "a cut image would not match its features (Image features and image tokens do not match)."
                )

    @property
    def model_input_names(self):
        return ["input_ids", "attention_mask", "pixel_values"]

    def decode_generated(self, sequences, prompt_length: int) -> list[str]:
        """Decode only the newly generated part of `generate` outputs (prompt stripped, special tokens skipped)."""
        return self.tokenizer.batch_decode(sequences[:, prompt_length:], skip_special_tokens=True)


__all__ = ["HfLlavaProcessor"]
