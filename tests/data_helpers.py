"""Fixture writers shared by the tests/test_data_*.py files (tiny files in each real format)."""

import io
import json
import os

from PIL import Image

from hf_llava.data.builder import load_builder_script

SCRIPTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "datasets_scripts")


def builder_module(name: str):
    return load_builder_script(os.path.join(SCRIPTS, f"{name}.py"))


def write_image(path, color=(200, 30, 30), size=(8, 6), fmt="PNG") -> bytes:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format=fmt)
    with open(path, "wb") as f:
        f.write(buf.getvalue())
    return buf.getvalue()


def write_json(path, obj, jsonl=False):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        if jsonl:
            f.write("\n".join(json.dumps(o) for o in obj) + "\n")
        else:
            json.dump(obj, f)
    return str(path)


def pixels(image) -> list:
    return list(image.convert("RGB").getdata())
