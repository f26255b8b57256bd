"""Write a complete checkpoint folder: weights (safetensors), processor, chat template, remote code, model card.

Every command that produces a model (build, convert, train) saves through `save_checkpoint`, so every folder that
reaches the Hub loads with `trust_remote_code=True` and explains itself in its README.md (rendered from
MODEL_CARD.md with huggingface_hub's ModelCard).
"""

from importlib import resources
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData


def render_model_card(
    model,
    processor,
    *,
    model_name: str | None = None,
    repo_id: str | None = None,
    vision_tower: str | None = None,
    llm: str | None = None,
    chat_template: str = "see chat_template.jinja",
    description: str = "",
    training: str = "Not trained by hf-llava yet (composed or converted checkpoint).",
    evaluation: str = "Not evaluated yet.",
    datasets: list[str] | None = None,
    license: str | None = None,
) -> ModelCard:
    config = model.config
    base_models = [name for name in (vision_tower, llm) if name and not Path(name).exists()]
    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag="image-text-to-text",
        tags=["hf-llava", "llava", "vision-language", "custom_code"],
        base_model=base_models or None,
        datasets=datasets,
        license=license,
    )
    template = (resources.files("hf_llava") / "MODEL_CARD.md").read_text()
    return ModelCard.from_template(
        card_data,
        template_str=template,
        model_name=model_name or repo_id or "hf-llava model",
        repo_id=repo_id or "path/to/this/folder",
        vision_tower=vision_tower or config.vision_config.model_type,
        llm=llm or config.text_config.model_type,
        projector_type=config.projector_type,
        image_size=config.vision_config.image_size,
        patch_size=config.vision_config.patch_size,
        vision_feature_layer=config.vision_feature_layer,
        vision_feature_select_strategy=config.vision_feature_select_strategy,
        image_seq_length=config.image_seq_length,
        text_model_type=config.text_config.model_type,
        chat_template=chat_template,
        num_parameters=f"{model.num_parameters() / 1e6:,.1f} M",
        description=description,
        training=training,
        evaluation=evaluation,
    )


def clear_call_state(tokenizer) -> None:
    """Forget the truncation/padding of the last tokenizer call before saving.

    A fast tokenizer keeps the last call's `truncation=True, max_length=N` in its backend and writes it into
    tokenizer.json; the reloaded tokenizer then carries `max_length=N` (transformers warns "max_length is ignored"
    on every generate). Training calls it with the run's `max_length`, so the saved checkpoint must not keep it.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        backend.no_truncation()
        backend.no_padding()
    for key in ("max_length", "stride", "truncation_strategy"):
        tokenizer.init_kwargs.pop(key, None)


def save_checkpoint(model, processor, output_dir: str | Path, state_dict: dict | None = None, **card_info) -> Path:
    """Save model + processor + remote code + README.md model card into `output_dir`.

    `state_dict` (optional) replaces the model's own tensors, e.g. the full weights gathered from ZeRO-3/FSDP shards.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir, state_dict=state_dict)
    clear_call_state(processor.tokenizer)
    processor.save_pretrained(output_dir)
    render_model_card(model, processor, **card_info).save(output_dir / "README.md")
    return output_dir
