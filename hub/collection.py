#!/usr/bin/env python
"""Gather a published model, its datasets and its evaluation results into a Hub collection.
`python hub/collection.py --help` for the flags; hub/README.md for naming.

Example:
  python hub/collection.py me/shapes-smollm2-llava --item model:me/shapes-smollm2-llava-hf
"""

from hf_llava.errors import script_main
from hf_llava.hub_scripts import collection_main

if __name__ == "__main__":
    script_main("hub/collection.py", collection_main)
