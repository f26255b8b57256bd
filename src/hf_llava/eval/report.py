"""Human-readable evaluation output: report.md and a PNG grid of images with questions and answers.

Design notes
- The grid is drawn with PIL only (no plotting dependency): each cell is the image scaled up with nearest-neighbour
  (pixels stay crisp), then the question, the model's answer (green when right, red when wrong), the gold answer
  and, when evaluated, the blank-image answer. Cells follow the row order, so with the shapes VQA (5 questions per
  scene) a grid row of 5 is one scene asked every question type.
- The report is plain markdown: the accuracy table, the chance levels, a few sample questions, the grid, then any
  extra sections the caller adds (the demo adds timings and its sample chat).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from .shapes import OVERALL, markdown_table, objects_table

GREEN, RED, GREY, BLACK = (20, 130, 40), (200, 30, 30), (110, 110, 110), (0, 0, 0)


def image_grid(rows, records: list[dict], path: str | Path, columns: int = 5, image_px: int = 160,
               font_size: int = 13) -> Path:
    """Save a grid of `rows[i]["images"][0]` with `records[i]`'s question and answers under each image."""
    from PIL import Image, ImageDraw, ImageFont

    if not records:
        raise ValueError("no records to draw")
    font = ImageFont.load_default(size=font_size)
    chars = max(12, int(image_px / (0.55 * font_size)))
    cells = []
    for row, record in zip(rows, records):
        lines = [(line, BLACK) for line in textwrap.wrap(f"Q: {record['question']}", chars)]
        lines.append((f"model: {record['prediction'] or '(empty)'}"[:chars], GREEN if record["correct"] else RED))
        lines.append((f"gold: {record['answer']}"[:chars], BLACK))
        if "blank_prediction" in record:
            lines.append((f"blank image: {record['blank_prediction'] or '(empty)'}"[:chars], GREY))
        cells.append((row["images"][0], lines))
    line_px = font_size + 4
    text_px = line_px * max(len(lines) for _, lines in cells) + 6
    pad = 8
    cell_w, cell_h = image_px + 2 * pad, image_px + text_px + 2 * pad
    n_rows = -(-len(cells) // columns)
    grid = Image.new("RGB", (columns * cell_w, n_rows * cell_h), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for k, (image, lines) in enumerate(cells):
        x, y = (k % columns) * cell_w + pad, (k // columns) * cell_h + pad
        grid.paste(image.convert("RGB").resize((image_px, image_px), Image.Resampling.NEAREST), (x, y))
        draw.rectangle([x - 1, y - 1, x + image_px, y + image_px], outline=(200, 200, 200))
        for j, (text, colour) in enumerate(lines):
            draw.text((x, y + image_px + 4 + j * line_px), text, fill=colour, font=font)
    path = Path(path)
    grid.save(path)
    return path


def _samples(records: list[dict], per_type: int = 1) -> list[dict]:
    """The first `per_type` records of every question type, in type order."""
    picked: dict[str, list[dict]] = {}
    for record in records:
        bucket = picked.setdefault(record["question_type"], [])
        if len(bucket) < per_type:
            bucket.append(record)
    return [record for bucket in picked.values() for record in bucket]


def _sample_table(records: list[dict]) -> str:
    blank = any("blank_prediction" in r for r in records)
    header = ["type", "question", "gold", "model", *(["model, blank image"] if blank else [])]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in records:
        mark = "✓" if r["correct"] else "✗"
        cells = [r["question_type"], r["question"], r["answer"], f"{r['prediction']} {mark}",
                 *([r.get("blank_prediction", "")] if blank else [])]
        lines.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
    return "\n".join(lines)


def write_report(result: dict, rows, output_dir: str | Path, title: str = "Synthetic-shapes VQA",
                 model: str | None = None, sections: list[tuple[str, str]] = (), grid_cells: int = 20,
                 columns: int = 5) -> dict[str, Path]:
    """report.md + grid.png in `output_dir` (the first `grid_cells` questions); returns both paths."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    grid = image_grid(rows[:grid_cells], result["records"][:grid_cells], output_dir / "grid.png", columns=columns)
    overall, chance = result["accuracy"][OVERALL], result["chance"][OVERALL]
    blank = result.get("blank_accuracy")
    summary = [f"{result['num_questions']} held-out questions: {100 * overall['accuracy']:.1f}% exact match "
               f"overall, against {100 * chance['accuracy']:.1f}% for the majority-answer baseline"]
    if blank:
        summary[0] += f" and {100 * blank[OVERALL]['accuracy']:.1f}% with every image blanked (mean grey)"
    parts = [f"# {title}", ""]
    if model:
        parts += [f"Model: `{model}`", ""]
    parts += [
        summary[0] + ".", "",
        "## Accuracy per question type", "",
        markdown_table(result), "",
        "Exact match after `hf_llava.data.shapes.normalize_answer`. *Chance* is the majority-answer baseline: "
        "always giving the question type's most frequent gold answer in these rows (shown in quotes). "
        "*Blank image* asks the same questions with a mean-grey image, so it shows how much the answers depend on "
        "the picture.", "",
    ]
    by_objects = objects_table(result)
    if by_objects:
        parts += [
            "## Accuracy by objects in the scene", "",
            by_objects, "",
            "With one object a question needs no choice among objects; the fall from one object to four shows how "
            "well the model finds the object the question names, apart from reading colours and shapes.", "",
        ]
    parts += [
        "## Sample questions", "",
        _sample_table(_samples(result["records"])), "",
        "## Grid", "",
        f"![images, questions and answers]({grid.name})", "",
        "Green: the model's answer matches the gold answer; red: it does not.", "",
    ]
    for heading, body in sections:
        parts += [f"## {heading}", "", body.rstrip(), ""]
    report = output_dir / "report.md"
    report.write_text("\n".join(parts), encoding="utf-8")
    return {"report": report, "grid": grid}
