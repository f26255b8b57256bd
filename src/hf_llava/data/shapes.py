"""Synthetic shapes: the embedded default dataset the CPU demo trains and evaluates on (no downloads).

Design notes
- A scene is 1-4 objects on a white background; each object has a colour, a shape, a size (small/large) and
  sits inside its own cell of a 3x3 grid, so "where is X" has exactly one answer (the cell name). No two objects
  share both colour and shape, so "the red circle" always names one object; a question that names an object by
  shape (or colour) alone adds its position when the shape (colour) is not unique in the scene.
- Scene i of a split is drawn from `Random(f"{seed}:{split}:{i}")`: rebuilding gives identical images and
  text, scene i does not depend on how many scenes are built, and held-out scenes come from another stream.
- Shapes are drawn at 4x and box-downsampled (anti-aliased edges); a few thousand 64 px scenes take seconds.
- Text: 5 templated captions per scene (COCO-style, with pixel boxes, ready for the data engine), stage-1 caption
  rows, multi-turn instruction conversations (colour, shape, count, position, existence questions with sentence
  answers, sometimes a detailed description), and short-answer VQA (one question per row, LLaVA-1.5's prompt for
  academic VQA) on the training scenes and, with gold answers scored by exact match after `normalize_answer`, on
  held-out scenes.
- VQA rows hold one question each. Packing a scene's five questions into one conversation (as LLaVA-1.5 packs
  VQAv2) leaks answers through the text on scenes this small: "Where is the orange square?" tells a later "Is there
  an orange square?" its answer, and a model trained so learns the text cue instead of the picture (see
  docs/demo-log.md).
- The `text` config asks the same kinds of questions about scenes given in words ("The image shows a small red
  square in the top right corner and ..."), text-only rows like LLaVA-1.5's ShareGPT share. Matching question words
  against a scene is hard for a small model to learn from images alone and quick to learn from words; mixed into
  the image rows, what is learnt on words partly carries over to the image tokens (measured in docs/demo-log.md).
"""

from __future__ import annotations

import io
import json
import os
import random
import re
from dataclasses import dataclass

from PIL import Image, ImageDraw

from .coco import CocoImage, coco_row
from .instructions import BRIEF_DESCRIPTION, DETAILED_DESCRIPTION, pick
from .schema import assistant_message, user_message

COLORS = {"red": (220, 40, 40), "green": (30, 160, 60), "blue": (40, 80, 220),
          "yellow": (235, 200, 20), "purple": (140, 60, 180), "orange": (245, 130, 20)}
SHAPES = ("circle", "square", "triangle")
SIZES = {"small": 0.5, "large": 0.85}  # object side as a fraction of the grid cell
# grid cells in reading order; each name is also the gold short answer of a position question
POSITIONS = ("top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right")
_WHERE = {"top": "at the top", "bottom": "at the bottom", "left": "on the left", "right": "on the right",
          "center": "in the center"}
QUESTION_TYPES = ("color", "shape", "count", "position", "existence")
SHORT_ANSWER_SUFFIX = "Answer the question using a single word or phrase."
BACKGROUND = (255, 255, 255)
_SUPERSAMPLE = 4


def where(position: str) -> str:
    """'top left' -> 'in the top left corner', 'top' -> 'at the top', ..."""
    return _WHERE.get(position, f"in the {position} corner")


@dataclass(frozen=True)
class ShapeObject:
    color: str
    shape: str
    size: str
    position: str
    bbox: tuple[float, float, float, float]  # pixel [x, y, w, h]

    @property
    def name(self) -> str:
        return f"{self.color} {self.shape}"

    def phrase(self, with_size: bool = True, with_position: bool = False) -> str:
        words = f"a {self.size} {self.name}" if with_size else f"a {self.name}"
        return f"{words} {where(self.position)}" if with_position else words


@dataclass(frozen=True)
class Scene:
    image_id: int
    image_size: int
    objects: tuple[ShapeObject, ...]


def make_scene(image_id: int, rng: random.Random, image_size: int = 64) -> Scene:
    n = rng.randint(1, 4)
    cells = rng.sample(range(9), n)
    kinds = rng.sample([(c, s) for c in COLORS for s in SHAPES], n)  # distinct (colour, shape) pairs
    cell = image_size / 3
    objects = []
    for k, (color, shape) in zip(cells, kinds):
        size = rng.choice(list(SIZES))
        side = cell * SIZES[size]
        row, col = divmod(k, 3)
        margin = 1.0  # keep a pixel of background between the object and its cell border
        x = col * cell + rng.uniform(margin, cell - side - margin)
        y = row * cell + rng.uniform(margin, cell - side - margin)
        objects.append(ShapeObject(color, shape, size, POSITIONS[k], (round(x, 2), round(y, 2), round(side, 2),
                                                                      round(side, 2))))
    objects.sort(key=lambda o: POSITIONS.index(o.position))  # reading order: descriptions list top-left first
    return Scene(image_id, image_size, tuple(objects))


HELD_OUT_ID_OFFSET = 10_000_000  # image ids of held-out scenes, distinct from any train id


def generate_scenes(n: int, seed: int = 0, held_out: bool = False, image_size: int = 64):
    """Train scenes (ids 0..n-1) or held-out scenes (another random stream, ids from HELD_OUT_ID_OFFSET)."""
    stream, start = ("heldout", HELD_OUT_ID_OFFSET) if held_out else ("train", 0)
    for i in range(n):
        yield make_scene(start + i, random.Random(f"{seed}:{stream}:{i}"), image_size)


def render(scene: Scene) -> Image.Image:
    s = _SUPERSAMPLE
    im = Image.new("RGB", (scene.image_size * s, scene.image_size * s), BACKGROUND)
    draw = ImageDraw.Draw(im)
    for o in scene.objects:
        x, y, w, h = (v * s for v in o.bbox)
        fill = COLORS[o.color]
        if o.shape == "circle":
            draw.ellipse([x, y, x + w, y + h], fill=fill)
        elif o.shape == "square":
            draw.rectangle([x, y, x + w, y + h], fill=fill)
        else:
            draw.polygon([(x + w / 2, y), (x + w, y + h), (x, y + h)], fill=fill)
    return im.reduce(s)  # box-filter downsampling: anti-aliased edges, fast


def png_bytes(scene: Scene) -> dict:
    buf = io.BytesIO()
    render(scene).save(buf, format="PNG")
    return {"path": f"{scene.image_id:08d}.png", "bytes": buf.getvalue()}


# ---------------------------------------------------------------- text about a scene

def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _count_words(n: int, noun: str) -> str:
    words = ["no", "one", "two", "three", "four"]
    return f"{words[n]} {noun}{'' if n == 1 else 's'}"


def layout(scene: Scene) -> str:
    """'a small red square in the top right corner and a large blue circle in the center'."""
    return _join([o.phrase(with_position=True) for o in scene.objects])


def captions(scene: Scene) -> list[str]:
    objs = scene.objects
    n = len(objs)
    plain = _join([o.phrase(with_size=False) for o in objs])
    sized = _join([o.phrase() for o in objs])
    placed = layout(scene)
    return [
        f"{plain[0].upper()}{plain[1:]} on a white background.",
        f"{_count_words(n, 'shape').capitalize()} on a white background: {sized}.",
        f"{placed[0].upper()}{placed[1:]}.",
        f"A simple drawing of {sized}.",
        f"There {'is' if n == 1 else 'are'} {_count_words(n, 'object')} in the picture: {placed}.",
    ]


def detailed_description(scene: Scene) -> str:
    n = len(scene.objects)
    lines = [f"The image shows {_count_words(n, 'shape')} on a plain white background."]
    for o in scene.objects:
        where_ = where(o.position)
        lines.append(f"{where_[0].upper()}{where_[1:]} there is {o.phrase()}.")
    by_shape = [_count_words(sum(o.shape == s for o in scene.objects), s) for s in SHAPES
                if any(o.shape == s for o in scene.objects)]
    lines.append(f"In total there {'is' if n == 1 else 'are'} {_join(by_shape)}.")
    return " ".join(lines)


def to_coco_image(scene: Scene) -> CocoImage:
    return CocoImage(scene.image_id, f"{scene.image_id:08d}.png", scene.image_size, scene.image_size,
                     captions(scene), [(o.shape, list(o.bbox)) for o in scene.objects])


@dataclass(frozen=True)
class Question:
    qtype: str
    question: str
    answer: str  # gold short answer
    long_answer: str  # full sentence for instruction conversations


def _the(scene: Scene, o: ShapeObject, by: str) -> str:
    """'the circle' / 'the red object', adding the position when the attribute alone is ambiguous."""
    unique = sum(getattr(x, by) == getattr(o, by) for x in scene.objects) == 1
    noun = f"the {o.shape}" if by == "shape" else f"the {o.color} object"
    return noun if unique else f"{noun} {where(o.position)}"


def ask(scene: Scene, qtype: str, rng: random.Random) -> Question:
    """One question of `qtype` about the scene, answerable from the scene alone and unambiguous."""
    o = rng.choice(scene.objects)
    if qtype == "color":
        ref = _the(scene, o, "shape")
        return Question(qtype, f"What color is {ref}?", o.color, f"{ref[0].upper()}{ref[1:]} is {o.color}.")
    if qtype == "shape":
        ref = _the(scene, o, "color")
        return Question(qtype, f"What shape is {ref}?", o.shape, f"{ref[0].upper()}{ref[1:]} is a {o.shape}.")
    if qtype == "position":
        pos = where(o.position)
        return Question(qtype, f"Where is the {o.name}?", o.position, f"The {o.name} is {pos}.")
    if qtype == "count":
        kind = rng.choice(["all", "shape", "color"])
        if kind == "all":
            n, noun, question = len(scene.objects), "shape", "How many shapes are there in the image?"
        elif kind == "shape":
            s = rng.choice(SHAPES)
            n, noun, question = sum(x.shape == s for x in scene.objects), s, f"How many {s}s are there?"
        else:
            c = rng.choice(list(COLORS))
            n, noun = sum(x.color == c for x in scene.objects), f"{c} shape"
            question = f"How many {c} shapes are there?"
        return Question(qtype, question, str(n), f"There {'is' if n == 1 else 'are'} {_count_words(n, noun)}.")
    if qtype == "existence":
        if rng.random() < 0.5:
            return Question(qtype, f"Is there a {o.name} in the image?", "yes",
                            f"Yes, there is {o.phrase(with_position=True)}.")
        present = {x.name for x in scene.objects}
        absent = [f"{c} {s}" for c in COLORS for s in SHAPES if f"{c} {s}" not in present]
        name = rng.choice(absent)
        return Question(qtype, f"Is there a {name} in the image?", "no", f"No, there is no {name} in the image.")
    raise ValueError(f"unknown question type {qtype!r}; expected one of {QUESTION_TYPES}")


# ---------------------------------------------------------------- rows

def caption_row(scene: Scene, img: dict, seed: int = 0) -> dict:
    rng = random.Random(f"{seed}:caption:{scene.image_id}")
    return {"id": f"caption-{scene.image_id}", "images": [img],
            "messages": [user_message(pick(BRIEF_DESCRIPTION, scene.image_id, seed), with_image=True),
                         assistant_message(rng.choice(captions(scene)))]}


def instruct_row(scene: Scene, img: dict, seed: int = 0) -> dict:
    """2-4 questions of different types with sentence answers, half the time plus a detailed description; the
    image goes before or after the first question at random (as in the paper)."""
    rng = random.Random(f"{seed}:instruct:{scene.image_id}")
    turns = [(q.question, q.long_answer) for q in
             (ask(scene, t, rng) for t in rng.sample(QUESTION_TYPES, rng.randint(2, 4)))]
    if rng.random() < 0.5:
        turns.insert(rng.randint(0, len(turns)), (rng.choice(DETAILED_DESCRIPTION), detailed_description(scene)))
    messages = []
    for k, (question, answer) in enumerate(turns):
        messages += [user_message(question, with_image=k == 0, image_first=rng.random() < 0.5),
                     assistant_message(answer)]
    return {"id": f"instruct-{scene.image_id}", "images": [img], "messages": messages}


def short_answer_prompt(question: str) -> str:
    return f"{question}\n{SHORT_ANSWER_SUFFIX}"


def vqa_rows(scene: Scene, img: dict | None, seed: int = 0):
    """One short-answer question per question type, one row each (see the notes on packing). Without `img` the
    rows are text-only: the scene is given in words, its objects and where they are (the `text` config)."""
    described = img is None
    kind = "text" if described else "vqa"
    rng = random.Random(f"{seed}:{kind}:{scene.image_id}")
    preamble = f"The image shows {layout(scene)}.\n" if described else ""
    for qtype in QUESTION_TYPES:
        q = ask(scene, qtype, rng)
        user = user_message(preamble + short_answer_prompt(q.question), with_image=not described)
        yield {"id": f"{kind}-{scene.image_id}-{qtype}", "images": [] if described else [img],
               "messages": [user, assistant_message(q.answer)],
               "question": q.question, "answer": q.answer, "question_type": qtype,
               "num_objects": len(scene.objects)}


def scene_row(scene: Scene, img: dict, seed: int = 0) -> dict:
    return coco_row(to_coco_image(scene), img, pick(BRIEF_DESCRIPTION, scene.image_id, seed))


CONFIGS = {  # config -> its splits; held-out scenes feed the "test" splits
    "caption": ("train",), "instruct": ("train",), "vqa": ("train", "test"), "text": ("train",),
    "scenes": ("train", "test")}


def rows(config: str, split: str, num_images: int = 2000, num_eval_images: int = 200, image_size: int = 64,
         seed: int = 0):
    """The rows of one config/split of the synthetic-shapes dataset (see CONFIGS)."""
    if split not in CONFIGS.get(config, ()):
        raise ValueError(f"no split {split!r} in config {config!r}; configs and splits: {CONFIGS}")
    held_out = split == "test"
    for scene in generate_scenes(num_eval_images if held_out else num_images, seed, held_out, image_size):
        if config == "text":  # described in words, nothing to render
            yield from vqa_rows(scene, None, seed)
            continue
        img = png_bytes(scene)
        if config == "caption":
            yield caption_row(scene, img, seed)
        elif config == "instruct":
            yield instruct_row(scene, img, seed)
        elif config == "vqa":
            yield from vqa_rows(scene, img, seed)
        else:
            yield scene_row(scene, img, seed)


def write_coco(scenes, out_dir: str | os.PathLike, split: str = "train") -> tuple[str, str]:
    """Write PNGs to out_dir/images/ and COCO captions_<split>.json / instances_<split>.json (what the data
    engine reads with `load_coco`). Returns the two annotation paths."""
    os.makedirs(os.path.join(out_dir, "images"), exist_ok=True)
    images, caps, insts = [], [], []
    categories = {s: k + 1 for k, s in enumerate(SHAPES)}
    for scene in scenes:
        img = png_bytes(scene)
        with open(os.path.join(out_dir, "images", img["path"]), "wb") as f:
            f.write(img["bytes"])
        images.append({"id": scene.image_id, "file_name": img["path"], "width": scene.image_size,
                       "height": scene.image_size})
        caps += [{"id": len(caps) + k + 1, "image_id": scene.image_id, "caption": c}
                 for k, c in enumerate(captions(scene))]
        insts += [{"id": len(insts) + k + 1, "image_id": scene.image_id, "category_id": categories[o.shape],
                   "bbox": list(o.bbox), "area": o.bbox[2] * o.bbox[3], "iscrowd": 0,
                   "attributes": {"color": o.color, "size": o.size}}
                  for k, o in enumerate(scene.objects)]
    paths = tuple(os.path.join(out_dir, f"{kind}_{split}.json") for kind in ("captions", "instances"))
    cats = [{"id": i, "name": s, "supercategory": "shape"} for s, i in categories.items()]
    for path, anns, extra in zip(paths, (caps, insts), ({}, {"categories": cats})):
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"images": images, "annotations": anns, **extra}, f)
    return paths


# ---------------------------------------------------------------- scoring

_NUMBERS = {w: str(i) for i, w in enumerate("zero one two three four five six seven eight nine ten".split())}
_SYNONYMS = {"centre": "center", "middle": "center", "central": "center", "upper": "top", "lower": "bottom",
             "grey": "gray", "none": "0"}
_SIDES = {"top", "bottom", "left", "right", "center"}
_POSITION_FILLER = {"on", "at", "in", "corner", "side"}


def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation and articles, map synonyms and number words, and put positions in the
    canonical form used by the gold answers ('in the upper-left corner' -> 'top left', 'middle' -> 'center',
    'center top' -> 'top')."""
    words = re.sub(r"[^\w\s]", " ", text.lower().replace("-", " ")).split()
    words = [_NUMBERS.get(w, _SYNONYMS.get(w, w)) for w in words if w not in ("a", "an", "the")]
    position = [w for w in words if w not in _POSITION_FILLER]
    if position and set(position) <= _SIDES:
        vertical = next((w for w in position if w in ("top", "bottom")), "")
        horizontal = next((w for w in position if w in ("left", "right")), "")
        return f"{vertical} {horizontal}".strip() or "center"
    return " ".join(words)


def exact_match(prediction: str, answer: str) -> bool:
    return normalize_answer(prediction) == normalize_answer(answer)
