"""retrieval.png: test images and their nearest training images, framed by whether the labels agree."""

from __future__ import annotations

from pathlib import Path

import torch

from isl_cli.engine.figures import pyplot, save


def retrieval_figure(loaded, train, test, path: Path, device: torch.device, num_queries: int,
                     seed: int) -> Path | None:
    """A grid of test images, each with its 10 nearest training images by the bank (green: same label)."""
    from isl_cli.engine.embedding import embed
    from isl_cli.knn import topk_similar

    queries_split = test if len(test) else train
    if len(queries_split) == 0:
        return None
    count = min(num_queries, len(queries_split))
    chosen = torch.randperm(len(queries_split), generator=torch.Generator().manual_seed(seed))[:count].sort().values
    queries = embed(loaded.model, queries_split, loaded.spec, device=device, subset=chosen)  # (q, D)
    _, neighbours = topk_similar(queries, loaded.memory, min(10, len(train)))  # (q, 10)
    neighbours = neighbours.cpu()
    plt = pyplot()
    cols = neighbours.shape[1] + 1
    fig, axes = plt.subplots(count, cols, figsize=(cols * 0.9, count * 0.95))
    axes = axes.reshape(count, cols)
    for row, qi in enumerate(chosen.tolist()):
        q_label = int(queries_split.labels[qi])
        _show(axes[row, 0], _image(queries_split, qi), "black")
        axes[row, 0].set_ylabel(_class_name(queries_split, q_label), fontsize=7, rotation=0, ha="right", va="center")
        for col, ti in enumerate(neighbours[row].tolist(), start=1):
            t_label = int(train.labels[ti])
            colour = "grey" if q_label < 0 or t_label < 0 else ("tab:green" if t_label == q_label else "tab:red")
            _show(axes[row, col], _image(train, ti), colour)
    axes[0, 0].set_title("query", fontsize=8)
    for col in range(1, cols):
        axes[0, col].set_title(str(col), fontsize=8)
    fig.suptitle("test images and their 10 nearest training images (green: same label, red: different)", fontsize=9)
    return save(fig, path)


def _show(ax, image, colour: str) -> None:
    ax.imshow(image)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor(colour)
        spine.set_linewidth(3)


def _image(split, index: int):
    if split.images is not None:
        return split.images[index].permute(1, 2, 0).numpy()
    from PIL import Image

    with Image.open(Path(split.image_root or "") / split.paths[index]) as img:
        img = img.convert("RGB")
        img.thumbnail((96, 96))
        import numpy as np

        return np.asarray(img)


def _class_name(split, label: int) -> str:
    if 0 <= label < len(split.classes):
        return split.classes[label][:10]
    return "?"

