#!/usr/bin/env python
"""Publish a hf_llava checkpoint to a Hub model repo: weights, processor, chat template, remote code and a model
card with base_model, datasets, license and the `hf-llava eval` results as model-index; optionally the native-llava
export to a sibling repo. `python hub/push_model.py --help` for the flags; hub/README.md for naming.

Example:
  python hub/push_model.py outputs/demo/stage2-finetune me/shapes-smollm2-llava --eval-results outputs/demo/eval \\
      --license apache-2.0 [--also-llava-hf me/shapes-smollm2-llava-hf] [--private] [--revision BRANCH] [--dry-run DIR]
"""

from hf_llava.errors import script_main
from hf_llava.hub_scripts import push_model_main

if __name__ == "__main__":
    script_main("hub/push_model.py", push_model_main)
