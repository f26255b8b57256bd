"""Linear probes at the answer position: does a checkpoint know answers it does not give?

Design notes
- Each question's prompt is built as `generate_answers` builds it (left padding, generation prompt) and run once
  with `output_hidden_states`; the state at the last prompt position, where the first answer token is predicted,
  is kept for each chosen layer (0 = the embeddings).
- One probe per question type and layer: a multinomial logistic regression (features standardised on the training
  rows, L2 penalty, L-BFGS in torch, so no scikit-learn) fit on training-scene questions and scored on held-out
  ones; a held-out answer never seen in training counts as wrong.
- Next to the generated answers' accuracy (`hf-llava eval shapes`) this separates perception from readout: what a
  probe reads but the answers miss is there in the model but not yet mapped to the output (findings in
  docs/demo-log.md).
- `blank_image` repeats the probes with mean-grey images: a probe that still beats chance reads the question text.
"""

from __future__ import annotations

from collections import Counter

DEFAULT_L2 = 1e-2


def answer_states(model, processor, rows, layers: list[int], batch_size: int = 16, blank_images: bool = False,
                  desc: str = "hidden states"):
    """Tensor [rows, len(layers), hidden]: each row's hidden state at its last prompt position, per layer."""
    import torch

    from .generate import map_prompt_batches

    def last_position(inputs):
        hidden = model(**inputs, use_cache=False, output_hidden_states=True).hidden_states
        return list(torch.stack([hidden[layer][:, -1] for layer in layers], 1).float())

    return torch.stack(map_prompt_batches(model, processor, rows, last_position, batch_size, blank_images, desc))


def probe_accuracy(train_x, train_labels: list[str], test_x, test_labels: list[str], l2: float = DEFAULT_L2) -> float:
    """Held-out accuracy of a logistic-regression probe fit on (train_x [n, d], train_labels)."""
    import torch

    classes = sorted(set(train_labels))
    index = {label: k for k, label in enumerate(classes)}
    target = torch.tensor([index[label] for label in train_labels])
    mean, std = train_x.mean(0), train_x.std(0) + 1e-5
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    weight = torch.zeros(train_x.shape[1], len(classes), requires_grad=True)
    bias = torch.zeros(len(classes), requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=300, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(train_x @ weight + bias, target) + l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    predicted = (test_x @ weight + bias).argmax(-1).tolist()
    return sum(classes[k] == label for k, label in zip(predicted, test_labels)) / len(test_labels)


def probe(model, processor, train_rows, test_rows, layers: list[int] | None = None, batch_size: int = 16,
          blank_image: bool = False) -> dict:
    """{question type: {"layers": {layer: accuracy}, "blank": {layer: accuracy} (with `blank_image`),
    "chance": majority-answer accuracy, "train": rows, "test": rows}} for every type in `test_rows`."""
    from .shapes import question_types

    num_layers = model.config.text_config.num_hidden_layers
    layers = sorted(set(layers)) if layers else default_layers(num_layers)
    if not all(0 <= layer <= num_layers for layer in layers):
        raise ValueError(f"layers must lie in 0..{num_layers} (0 = embeddings), got {layers}")
    result = {}
    for qtype in question_types(test_rows):
        train = [row for row in train_rows if row["question_type"] == qtype]
        test = [row for row in test_rows if row["question_type"] == qtype]
        if not train:
            raise ValueError(f"no training questions of type {qtype!r} to fit a probe on")
        passes = {"layers": False, **({"blank": True} if blank_image else {})}
        entry = {}
        for key, blank in passes.items():
            suffix = ", blank image" if blank else ""
            train_x = answer_states(model, processor, train, layers, batch_size, blank, f"{qtype}: train{suffix}")
            test_x = answer_states(model, processor, test, layers, batch_size, blank, f"{qtype}: held-out{suffix}")
            entry[key] = {layer: probe_accuracy(train_x[:, k], [r["answer"] for r in train], test_x[:, k],
                                                [r["answer"] for r in test]) for k, layer in enumerate(layers)}
        majority = Counter(row["answer"] for row in test).most_common(1)[0][1]
        result[qtype] = {**entry, "chance": majority / len(test), "train": len(train), "test": len(test)}
    return result


def default_layers(num_layers: int) -> list[int]:
    """Every 4th layer from the embeddings, and the last."""
    return sorted({*range(0, num_layers + 1, 4), num_layers})


def markdown_table(result: dict) -> str:
    """Per question type: the best layer's probe accuracy (and its blank-image probe), next to chance."""
    blank = all("blank" in entry for entry in result.values())
    header = ["question type", "train / held-out", "best layer", "probe accuracy",
              *(["blank-image probe"] if blank else []), "chance (majority answer)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for qtype, entry in result.items():
        layer = max(entry["layers"], key=entry["layers"].get)
        cells = [qtype, f"{entry['train']} / {entry['test']}", str(layer), f"{100 * entry['layers'][layer]:.1f}%",
                 *([f"{100 * entry['blank'][layer]:.1f}%"] if blank else []), f"{100 * entry['chance']:.1f}%"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
