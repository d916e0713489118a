"""What a run leaves behind: reports, tables and plots, each written atomically.

Every file goes to a temporary name in the same folder and is renamed into place, so a crash or a
full disk mid-write leaves the previous good file (or none), never half of one.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.font_manager import FontProperties  # noqa: E402
import numpy as np  # noqa: E402

from cnnrun.record import layout  # noqa: E402


def _cjk_fonts() -> None:
    """Class names in any script get real glyphs: Noto Sans CJK (shipped by the noto-cjk-sans-otc package,
    a dependency) is the fallback after matplotlib's own DejaVu Sans, which has no CJK glyphs."""
    from matplotlib import font_manager

    try:
        import noto_cjk_sans_otc

        font_manager.fontManager.addfont(str(noto_cjk_sans_otc.FONT_PATH))
    except (ImportError, OSError, RuntimeError):
        return  # without it, CJK names still work everywhere but in plots
    plt.rcParams["font.family"] = ["DejaVu Sans", "Noto Sans CJK JP"]  # per-glyph fallback (matplotlib >= 3.6)


_cjk_fonts()

from cnnrun.record.files import atomic_write, write_csv, write_json, write_text  # noqa: E402,F401 - also theirs here


def save_figure(fig, path: Path) -> Path:
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    finally:
        plt.close(fig)


def safe_name(label: str) -> str:
    """A class name usable in a file name, in any script ('T-shirt/top' -> 'T-shirt-top', '桜' -> '桜')."""
    return re.sub(r"[^\w.-]+", "-", str(label)).strip("-.") or "class"


# ---------------------------------------------------------------------------------------------


def write_history(path: Path, history: list[dict]) -> Path:
    keys = ["epoch"] + sorted({k for row in history for k in row} - {"epoch"})
    return write_csv(path, keys, ([row.get(k, "") for k in keys] for row in history))


def plot_curves(path: Path, history: list[dict], title: str) -> Path:
    """Accuracy and loss per epoch, train vs validation."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")  # room for long tick labels between
    epochs = [row["epoch"] for row in history]
    for ax, metric in zip(axes, ("accuracy", "loss")):
        ax.plot(epochs, [row.get(metric) for row in history], "o-", label="train")
        if any(row.get(f"val_{metric}") is not None for row in history):
            ax.plot(epochs, [row.get(f"val_{metric}") for row in history], "s-", label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend()
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle(title)
    return save_figure(fig, path)


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """Counts, true classes as rows and predicted classes as columns."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return cm


def write_confusion(out: Path, cm: np.ndarray, class_names: list[str], plot: bool = True) -> None:
    write_csv(out / layout.CONFUSION_CSV, ["true\\predicted"] + class_names,
              ([name] + row.tolist() for name, row in zip(class_names, cm)))
    if not plot:
        return
    n = len(class_names)
    size = max(5.0, 0.55 * n + 2)
    fig, axes = plt.subplots(1, 2, figsize=(2 * size + 1, size))
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm, dtype=float), where=rows > 0)
    for ax, data, title, fmt in ((axes[0], cm, "counts", "d"), (axes[1], norm, "row-normalised (recall)", ".2f")):
        im = ax.imshow(data, cmap="Blues")
        ax.set_title(title)
        ax.set_xticks(range(n), class_names, rotation=45, ha="right")
        ax.set_yticks(range(n), class_names if ax is axes[0] else [])  # the same rows: named once, on the left
        ax.set_xlabel("predicted")
        if ax is axes[0]:
            ax.set_ylabel("true")
        if n <= 20:
            hi = data.max() if data.size else 0
            small = FontProperties(size=7)  # one font for all n*n numbers: matplotlib looks it up once, not per number
            for i in range(n):
                for j in range(n):
                    ax.text(j, i, format(data[i, j], fmt), ha="center", va="center", fontproperties=small,
                            color="white" if data[i, j] > hi / 2 else "black")
        fig.colorbar(im, ax=ax, fraction=0.046)
    if max(map(len, class_names)) > 12:  # long names: spaced by their measured size (a layout pass, ~0.1 s)
        fig.tight_layout()
    save_figure(fig, out / layout.CONFUSION_PNG)


def write_classification_report(out: Path, y_true, y_pred, class_names: list[str]) -> dict:
    from sklearn.metrics import classification_report

    labels = list(range(len(class_names)))
    kwargs = dict(labels=labels, target_names=class_names, digits=4, zero_division=0)
    write_text(out / layout.REPORT_TXT, classification_report(y_true, y_pred, **kwargs))
    report = classification_report(y_true, y_pred, output_dict=True, **kwargs)
    write_json(out / layout.REPORT_JSON, report)
    return report


def _show(ax, image):
    if image.shape[-1] == 1:
        ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=255 if image.dtype == np.uint8 else 1)
    else:
        ax.imshow(image)
    ax.set_xticks([])
    ax.set_yticks([])


def _short(name: str, width: int) -> str:
    """A class name cut to `width` characters (…), so that a label stays under its own image (1.9 inches, 8 pt)."""
    return name if len(name) <= width else name[:width - 1] + "…"


def plot_predictions(path: Path, images, y_true, y_pred, class_names, count: int = 30) -> Path:
    """A grid of test images with the predicted label under each: blue when right, red when wrong. Drawn as one
    picture with 30 labels, not 30 plots: half the time, the same look."""
    count = min(count, len(images))
    cols = min(6, count) or 1
    rows = max(1, -(-count // cols))
    tiles = np.asarray(images[:count])
    tiles = tiles.astype(np.float32) / (255.0 if tiles.dtype == np.uint8 else 1.0)
    if tiles.ndim == 4 and tiles.shape[-1] == 1:
        tiles = np.repeat(tiles, 3, axis=-1)  # gray as gray, beside nothing else
    h, w = tiles.shape[1:3]
    gap_x, gap_y = max(2, w // 6), max(2, h // 2)  # room between images, and for the label under each
    canvas = np.ones((rows * (h + gap_y), cols * (w + gap_x), 3), np.float32)
    fig, ax = plt.subplots(figsize=(1.9 * cols, 2.1 * rows))
    for i in range(count):
        r, c = divmod(i, cols)
        top, left = r * (h + gap_y), c * (w + gap_x) + gap_x // 2
        canvas[top:top + h, left:left + w] = np.clip(tiles[i], 0, 1)
        right = y_pred[i] == y_true[i]
        said, true = _short(class_names[y_pred[i]], 20), _short(class_names[y_true[i]], 14)
        label = said if right else f"{said}\n(true: {true})"
        ax.text(left + w / 2, top + h + h / 28, label, ha="center", va="top", fontsize=8,
                color="tab:blue" if right else "tab:red")
    ax.imshow(canvas, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title("predictions on the test set (blue = right, red = wrong)")  # no layout pass: the picture is one axes
    return save_figure(fig, path)


def write_misclassified(out: Path, images, y_true, y_pred, probs, class_names, limit: int, files=None) -> list[dict]:
    """Up to `limit` wrongly classified test images as `{true}_to_{pred}_{index}.png` (or `_{index}_{file}`
    for folder data sets, copied as they were) plus misclassified.csv listing all of them."""
    from PIL import Image

    folder = out / layout.MISCLASSIFIED
    wrong = np.flatnonzero(np.asarray(y_pred) != np.asarray(y_true))
    rows = []
    for rank, i in enumerate(wrong):
        t, p = class_names[y_true[i]], class_names[y_pred[i]]
        row = {"index": int(i), "true": t, "predicted": p, "confidence": round(float(probs[i, y_pred[i]]), 4),
               "source": files[i] if files else ""}
        if rank < limit:
            folder.mkdir(exist_ok=True)
            if files:  # the test index keeps two files of one name (in different folders) apart
                name = f"{safe_name(t)}_to_{safe_name(p)}_{i}_{Path(files[i]).name}"
                data = Path(files[i]).read_bytes()
                write_bytes(folder / name, data)
            else:
                name = f"{safe_name(t)}_to_{safe_name(p)}_{i}.png"
                image = images[i][..., 0] if images[i].shape[-1] == 1 else images[i]
                atomic_write(folder / name, lambda tmp, im=image: Image.fromarray(im).save(tmp, format="PNG"))
            row["file"] = f"misclassified/{name}"
        else:
            row["file"] = ""
        rows.append(row)
    header = ["index", "true", "predicted", "confidence", "file", "source"]
    write_csv(out / layout.MISCLASSIFIED_CSV, header, ([r[k] for k in header] for r in rows))
    return rows


def write_bytes(path: Path, data: bytes) -> Path:
    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(data)

    return atomic_write(path, write)


def plot_augment_preview(path: Path, originals, augmented) -> Path:
    """Originals in the first row, augmented versions below."""
    copies, n = augmented.shape[0], len(originals)
    fig, axes = plt.subplots(copies + 1, n, figsize=(1.6 * n, 1.7 * (copies + 1)), squeeze=False)
    for j in range(n):
        _show(axes[0, j], originals[j])
        for c in range(copies):
            _show(axes[c + 1, j], np.clip(augmented[c, j], 0, 1))
    axes[0, 0].set_ylabel("original")
    for c in range(copies):
        axes[c + 1, 0].set_ylabel(f"augmented {c + 1}")
    fig.suptitle("training augmentation (applied on the device, training only)")
    fig.tight_layout()
    return save_figure(fig, path)


def write_summary(path: Path, model) -> Path:
    lines = []
    model.summary(print_fn=lambda line, *a, **k: lines.append(line), expand_nested=True)
    return write_text(path, "\n".join(lines) + "\n")


def write_evaluation(out: Path, data, probs: np.ndarray, cfg_output, classifier) -> dict:
    """Everything the test-set evaluation leaves behind (reports, confusion matrix, misclassified images,
    predictions grid, the model); returns the metrics.json fields it adds."""
    y_true, y_pred, names = data.y_test, probs.argmax(axis=1), data.class_names
    p_true = np.clip(probs[np.arange(len(y_true)), y_true], 1e-7, 1.0)
    report = write_classification_report(out, y_true, y_pred, names)
    write_confusion(out, confusion_matrix(y_true, y_pred, len(names)), names, plot=cfg_output.plots)
    wrong = write_misclassified(out, data.x_test, y_true, y_pred, probs, names, cfg_output.misclassified_max,
                                data.test_files)
    if cfg_output.plots and cfg_output.predictions_grid:
        plot_predictions(out / layout.PREDICTIONS_PNG, data.x_test, y_true, y_pred, names, cfg_output.predictions_grid)
    if cfg_output.save_model:
        from cnnrun.models import portable  # Keras: only here

        atomic_write(out / layout.MODEL, portable(classifier).save)  # Keras' own layers: loads without cnnrun
    return dict(test_accuracy=float(np.mean(y_pred == y_true)), test_loss=float(-np.mean(np.log(p_true))),
                misclassified=len(wrong), weakest_class=min(names, key=lambda n: report[n]["f1-score"]),
                class_names=names)


def near_chance(test_accuracy: float, train_accuracy: float | None, y_test: np.ndarray) -> str | None:
    """A warning when the test accuracy is near what always naming the largest test class scores while the
    training accuracy is high: the evaluated model does not carry what training learned (None otherwise)."""
    if train_accuracy is None or not len(y_test):
        return None
    chance = float(np.bincount(y_test).max() / len(y_test))
    if test_accuracy > chance + 0.1 * (1 - chance) or train_accuracy < chance + 0.5 * (1 - chance):
        return None
    return (f"test accuracy {100 * test_accuracy:.1f} % is near chance ({100 * chance:.1f} %, always the largest "
            f"class) though training accuracy is {100 * train_accuracy:.1f} %: the evaluated model does not carry "
            "what training learned; with batch norm set trainer.precise_bn=true, else check that the test images "
            "are prepared as the training images are")


def verify(out: Path, metrics: dict, cfg_output, augmented: bool) -> list[str]:
    """Checks every file a finished run leaves, by content (debug=smoke): the problems found, [] when none."""
    from PIL import Image

    problems = []

    def check(name, test):
        try:
            if not test(out / name):
                problems.append(f"{name} is wrong")
        except Exception as e:  # noqa: BLE001 - a file that cannot be read is the finding
            problems.append(f"{name}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")

    def png(path):
        with Image.open(path) as im:
            return im.format == "PNG" and min(im.size) >= 100

    def rows(path):
        with open(path, encoding="utf-8") as f:
            return list(csv.DictReader(f))

    names = metrics["class_names"]
    check(layout.HISTORY, lambda p: len(rows(p)) == metrics["epochs"])
    check(layout.SUMMARY, lambda p: str(metrics["params"]) in p.read_text(encoding="utf-8").replace(",", ""))
    check(layout.REPORT_JSON, lambda p: set(names) <= set(json.loads(p.read_text(encoding="utf-8"))))
    check(layout.CONFUSION_CSV,
          lambda p: sum(int(v) for r in rows(p) for k, v in r.items() if k != "true\\predicted") == metrics["test_images"])
    check(layout.MISCLASSIFIED_CSV, lambda p: len(rows(p)) == metrics["misclassified"]
          and all((out / r["file"]).is_file() for r in rows(p) if r["file"]))
    plots = [layout.CURVES, layout.CONFUSION_PNG] + ([layout.PREDICTIONS_PNG] if cfg_output.predictions_grid else []) \
        + ([layout.AUGMENT_PREVIEW] if augmented else [])
    for name in plots if cfg_output.plots else []:
        check(name, png)
    if cfg_output.save_model:
        import keras  # noqa: PLC0415

        check(layout.MODEL, lambda p: keras.models.load_model(p).output_shape[-1] == len(names))
    return problems
