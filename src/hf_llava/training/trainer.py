"""`LlavaSFTTrainer`: TRL's SFTTrainer with a separate projector learning rate and modality-length grouping.

Design notes
- The main override is `create_optimizer`: with `projector_lr` set it hands the Trainer ready-made parameter groups
  through `optimizer_cls_and_kwargs` (`params` replaces the default groups, the same hook GaLore uses), then lets
  the stock method build the optimizer. So optimizer choice (`optim`), factories, DeepSpeed and the 8-bit
  bitsandbytes handling stay the Trainer's.
- Groups: the rest, then the projector, each split into weight-decay / no-decay by the Trainer's own rule (the
  logged learning rate is the first group's, i.e. `learning_rate`). The projector is found by name
  (`multi_modal_projector`), which also matches PEFT's `modules_to_save` copy of it.
- `group_by_modality_length`: `_get_train_sampler` returns `ModalityLengthGroupedSampler` (see sampler.py) over the
  train dataset's messages; evaluation keeps the Trainer's sampler.
- QLoRA: SFTTrainer casts every trainable parameter of a quantised model to bf16 (the QLoRA paper's choice for the
  adapter). The fully trained `modules_to_save` copies (projector, a tuned tower) are put back in fp32: at LLaVA's
  projector lr (2e-5) most bf16 updates would round away. Autocast (`bf16: true`) runs them in bf16 as usual.
"""

from trl import SFTTrainer

from .model import PROJECTOR
from .sampler import ModalityLengthGroupedSampler, modality_lengths


class LlavaSFTTrainer(SFTTrainer):
    def __init__(self, *args, projector_lr: float | None = None, group_by_modality_length: bool = False, **kwargs):
        self.projector_lr = projector_lr
        self.group_by_modality_length = group_by_modality_length
        super().__init__(*args, **kwargs)
        if getattr(self.model, "is_loaded_in_4bit", False):
            for name, param in self.model.named_parameters():
                if param.requires_grad and ".modules_to_save." in name:
                    param.data = param.data.float()

    def parameter_groups(self, model) -> list[dict]:
        decay = set(self.get_decay_parameter_names(model))
        groups = {}
        for name, param in model.named_parameters():
            if not param.requires_grad:
                continue
            is_projector = PROJECTOR in name
            key = (is_projector, name in decay)
            if key not in groups:
                groups[key] = {"params": [], "weight_decay": self.args.weight_decay if key[1] else 0.0}
                if is_projector:
                    groups[key]["lr"] = self.projector_lr
            groups[key]["params"].append(param)
        return [groups[key] for key in sorted(groups)]  # the LLM's groups first: logs report the first group's lr

    def _get_train_sampler(self, train_dataset=None):
        if not self.group_by_modality_length:
            return super()._get_train_sampler(train_dataset)
        dataset = self.train_dataset if train_dataset is None else train_dataset
        return ModalityLengthGroupedSampler(
            modality_lengths(dataset, self.processing_class.image_seq_length), batch_size=self.args.train_batch_size,
            world_size=max(1, self.args.world_size), rank=self.args.process_index,
            grad_accum=self.args.gradient_accumulation_steps, seed=self.args.seed,
        )

    def create_optimizer(self, model=None):
        if self.projector_lr is not None and self.optimizer is None:
            opt_model = self.model if model is None else model
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
            self.optimizer_cls_and_kwargs = (optimizer_cls,
                                             {**optimizer_kwargs, "params": self.parameter_groups(opt_model)})
        return super().create_optimizer(model)
