#!/usr/bin/env python
"""Rewrite the top-level MODEL_CARD.md, the card of the reference model (the demo's stage-2 checkpoint with its
measured results), from hub/reference/; with a demo folder, first take that run's card inputs and results.

  python hub/reference_card.py outputs/demo     # after `hf-llava demo --output-dir outputs/demo`
  python hub/reference_card.py --check          # what tests/test_hub_reference.py checks
"""

from hf_llava.errors import script_main
from hf_llava.hub_scripts import reference_card_main

if __name__ == "__main__":
    script_main("hub/reference_card.py", reference_card_main)
