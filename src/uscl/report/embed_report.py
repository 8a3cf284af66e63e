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
        f"{counts['labelled_frames']} labelled "
        f"({', '.join(f'{c} {n}' for c, n in counts['frames_per_class'].items()) or 'no classes'}).",
    ]
    if b.get("kind") == "finetune-fold":
        lines.append("**Note:** a fine-tuned backbone was trained with labels; its class accuracy is not that of "
                     "a self-supervised backbone" + (" (its own training videos score optimistically)." if
                                                     summary.get("labelled_overlap") else "."))
    if summary.get("labelled_overlap"):
        lines.append(f"**Note:** {summary['labelled_overlap']} of these videos had their labels used in training "
                     "this backbone; the kNN accuracy on them is optimistic.")
    per_class = ", ".join(f"{c} {_f(r)}" for c, r in summary["knn"]["per_class"].items())
    lines += ["", *numbers_lines(summary), ""]
    lines += [f"Per-class recall: {per_class}.", ""] if per_class else ["No labelled frames: no class accuracy.", ""]
    lines += [reading(summary), ""]
    if "map_class.png" in summary.get("files", []):
        m = {"tsne": "t-SNE", "pca": "PCA", "umap": "UMAP"}.get(s["map"], s["map"])
        lines += [f"{m} map (seed {s['seed']}) coloured by class and by video; `embedding.csv` holds its "
                  "coordinates, each frame's own-video share and its kNN class.", "",
                  "![map by class](map_class.png) ![map by video](map_video.png)", "",
                  f"Query frames (red) and their {s['grid_neighbours']} nearest frames from other videos:", "",
                  "![nearest neighbours](neighbours.png)", ""]
    return "\n".join(lines)


# the numbers of a study's rows: one embedding per backbone (random: one per seed)
STUDY_KEYS = ("knn_accuracy", "balanced_accuracy", "video_purity", "purity_chance")


def study_record(summary: dict, seed: int | None) -> dict:
    """One backbone's numbers as a study keeps them (study.json ``embedding``)."""
    return {"seed": seed, "knn_accuracy": summary["knn"]["accuracy"],
            "balanced_accuracy": summary["knn"]["balanced_accuracy"],
            "video_purity": summary["video_purity"]["purity"], "purity_chance": summary["video_purity"]["chance"]}


def study_lines(rows: dict[str, list[dict]], frames_per_video: int, k: int, neighbours_from: str) -> list[str]:
    """The study's embedding table: per row, mean and 95% t-interval over its seeds of each number."""
    from uscl.report.stats import format_interval
    from uscl.utils.intervals import t_interval

    def cell(records, key):
        values = [r[key] for r in records if r[key] is not None]
        return format_interval(t_interval(values, unit="seed")) if values else "n/a"

    lines = ["# Embedding of each backbone", "",
             f"Frozen features of {frames_per_video} evenly spread frames per video of the evaluated store "
             f"(`uscl embed`, k={k}, cosine; mean and 95% CI over pretraining seeds). kNN class accuracy: each "
             f"labelled frame takes the majority class of its {k} nearest labelled frames from {neighbours_from}. "
             f"Video purity: the share of a frame's {k} nearest frames that come from its own video (chance "
             "level beside it). " + reading({}), "",
             "| init | kNN class accuracy across videos | balanced | video purity | purity by chance | seeds |",
             "|---|---|---|---|---|---:|"]
    for name, records in rows.items():
        lines.append(f"| {name} | {cell(records, 'knn_accuracy')} | {cell(records, 'balanced_accuracy')} | "
                     f"{cell(records, 'video_purity')} | {cell(records, 'purity_chance')} | {len(records)} |")
    return lines + [""]
