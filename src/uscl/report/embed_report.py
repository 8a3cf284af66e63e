"""embed.md of ``uscl embed``, and the lines that the pretraining report and ``uscl study`` reuse."""

from __future__ import annotations


def _f(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def numbers_lines(summary: dict) -> list[str]:
    """The two numbers as a small markdown table, with how to read them."""
    knn, pur, counts = summary["knn"], summary["video_purity"], summary["counts"]
    n_cls = len(counts["classes"])
    ratio = (pur["purity"] / pur["chance"]) if pur.get("purity") is not None and pur.get("chance") else None
    return [
        "| number | value | chance level | what it says |",
        "|---|---:|---:|---|",
        f"| kNN class accuracy across videos (k={knn['k']}) | {_f(knn['accuracy'])} | "
        f"{_f(knn.get('majority_share'))} (majority class) | each labelled frame takes the majority class of its "
        f"{knn['k']} most similar labelled frames from {knn['neighbours_from']} |",
        f"| balanced (mean per-class recall) | {_f(knn['balanced_accuracy'])} | "
        f"{_f(1 / n_cls) if n_cls else 'n/a'} | the same, each class weighted equally |",
        f"| video purity (k={pur['k']}) | {_f(pur['purity'])} | {_f(pur['chance'])} | share of a frame's "
        f"{pur['k']} most similar frames (any video) that come from its own video"
        + (f"; {ratio:.1f}x chance" if ratio is not None else "") + " |",
    ]


def reading(summary: dict) -> str:
    """One sentence on what the pair of numbers means."""
    return ("High video purity with low class accuracy means the features tell videos apart rather than what "
            "they show (memorisation of a video's look: what USCL's pair generation across a video's frames "
            "exists to prevent); high class accuracy means frames of the same class sit together across videos.")


def embed_markdown(summary: dict) -> str:
    b, counts, s = summary["backbone"], summary["counts"], summary["settings"]
    fpv = s.get("frames_per_video")
    lines = [
        f"# Embedding of `{b.get('source')}`",
        "",
        f"Backbone: {b.get('arch')} ({b.get('kind')}"
        + (f", method {b['method']}" if b.get("method") else "")
        + (f", fold {b['fold']}" if b.get("fold") is not None else "") + "); frozen features at "
        f"{s['image_size']} px (mean {s['mean']:g}, std {s['std']:g}), cosine similarity.",
        f"Store `{summary['store']}` (id {summary['store_id']}): {counts['frames']} frames "
        f"({'all' if fpv is None else f'up to {fpv} evenly spread'} per video) of {counts['videos']} videos, "
        f"{counts['labelled_frames']} labelled ({', '.join(f'{c} {n}' for c, n in counts['frames_per_class'].items())}).",
    ]
    if b.get("kind") == "finetune-fold":
        lines.append("**Note:** a fine-tuned backbone was trained with labels; its class accuracy is not that of "
                     "a self-supervised backbone" + (" (its own training videos score optimistically)." if
                                                     summary.get("labelled_overlap") else "."))
    if summary.get("labelled_overlap"):
        lines.append(f"**Note:** {summary['labelled_overlap']} of these videos had their labels used in training "
                     "this backbone; the kNN accuracy on them is optimistic.")
    per_class = ", ".join(f"{c} {_f(r)}" for c, r in summary["knn"]["per_class"].items())
    lines += ["", *numbers_lines(summary), "", f"Per-class recall: {per_class}.", "", reading(summary), ""]
    if "map_class.png" in summary.get("files", []):
        m = {"tsne": "t-SNE", "pca": "PCA", "umap": "UMAP"}.get(s["map"], s["map"])
        lines += [f"{m} map (seed {s['seed']}) coloured by class and by video; `embedding.csv` holds its "
                  "coordinates, each frame's own-video share and its kNN class.", "",
                  "![map by class](map_class.png) ![map by video](map_video.png)", "",
                  f"Query frames (red) and their {s['grid_neighbours']} nearest frames from other videos:", "",
                  "![nearest neighbours](neighbours.png)", ""]
    return "\n".join(lines)
