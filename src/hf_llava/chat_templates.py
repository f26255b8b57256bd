"""Chat templates shipped by name (`vicuna_v1`, `plain`, `chatml`, `llama2`).

Each template marks assistant answers (and their end token) with `{% generation %}`, so
`apply_chat_template(..., return_assistant_tokens_mask=True)` yields the loss mask: no index arithmetic, no silent
"tokenization mismatch". The files in `chat_templates/` share one content macro (`_content.jinja`), inlined here so the
saved template is self-contained.
"""

from functools import cache
from importlib import resources

_DIR = resources.files("hf_llava") / "chat_templates"


def available_templates() -> list[str]:
    return sorted(p.name.removesuffix(".jinja") for p in _DIR.iterdir() if p.name.endswith(".jinja") and p.name[0] != "_")


@cache
def get_chat_template(name: str) -> str:
    """The full Jinja source of a named template."""
    if name not in available_templates():
        raise ValueError(f"Unknown chat template {name!r}; choose one of {', '.join(available_templates())}")
    macro = (_DIR / "_content.jinja").read_text()
    return macro + (_DIR / f"{name}.jinja").read_text()
