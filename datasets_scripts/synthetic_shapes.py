#!/usr/bin/env python
"""Synthetic shapes, the embedded default (no downloads), as a script: `--help` lists the configs and options. The
builder lives in the package (hf_llava.data.synthetic_shapes) so that `hf-llava demo` has it without a
checkout.
"""

from hf_llava.data.builder import main
from hf_llava.data.synthetic_shapes import SyntheticShapes

__all__ = ["SyntheticShapes"]

if __name__ == "__main__":
    main(SyntheticShapes)
