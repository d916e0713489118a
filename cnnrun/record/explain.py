"""What a run's model looks at, and how it arranges the test set: the work of `cnnrun explain RUN_DIR [IMAGE|DIR ...]`
(cnnrun/commands/explain.py) and of `output.explain=true` at the end of a run (its hook: cnnrun/hooks/explain.py).

- **Grad-CAM** (Selvaraju et al., 2017): the feature maps of one convolutional layer, weighted by the gradient
  of log p(class) with respect to them, averaged over the map (backend.log_prob_gradients: the one
  backend-specific part). Drawn over the image for the predicted and the true class, for the misclassified
  test images (capped) and any images given: `explain/gradcam.png` (a grid) and `explain/gradcam/*.png`.
- **Embedding map**: the features the classifier's last layer reads (the penultimate layer) for every test
  image, projected to 2-D with t-SNE (after PCA to 50 dimensions) or PCA alone, coloured by true class with
  the misclassified marked: `explain/embedding.png` and `explain/embedding.csv`.

The target layer is the last convolutional feature map before the head (dropout and pooling skipped, so the
map keeps its resolution), or `--layer NAME`. Works on every model family (ResNet's last block output,
VGG16's block5 convolution) because the head is rebuilt from that layer's output by Keras' functional API.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from cnnrun import CnnrunError
from cnnrun.record import artifacts, layout
from cnnrun import backend

log = logging.getLogger("cnnrun")

SKIPPED = (keras.layers.Dropout, keras.layers.MaxPooling2D, keras.layers.AveragePooling2D, keras.layers.SpatialDropout2D)


@dataclass
class Parts:
    """A classifier (uint8 pixels -> softmax) cut at its target layer."""
    prep: list          # the layers before the network (scaling)
    features: keras.Model
    head: keras.Model
    embed: keras.Model
    layer: str


def _maps(network) -> list:
    return [m for m in network.layers if len(m.output.shape) == 4 and not isinstance(m, keras.layers.InputLayer)]


def _target(network, layer: str | None) -> str:
    """The feature map Grad-CAM reads: `layer`, or the last one, dropout and pooling after it skipped."""
    maps = _maps(network)
    if layer is not None:
        if layer not in {m.name for m in maps}:
            raise CnnrunError(f"--layer {layer} is not a feature map of {network.name}; expected one of "
                              f"{', '.join(m.name for m in maps[-6:])} (the last six)")
        return layer
    if not maps:
        raise CnnrunError(f"{network.name} has no convolutional feature map for Grad-CAM (a dense model); "
                          "explain it with --embedding only (--max 0)")
    last = network.layers.index(maps[-1])
    while last > 0 and isinstance(network.layers[last], SKIPPED):
        last -= 1
    return network.layers[last].name


def _split(network, layer: str | None) -> tuple[keras.Model, keras.Model, str]:
    """(features, head, name): `network` cut at a feature map. A map inside a nested model (VGG16's Keras
    application base) is reached by cutting that model and joining its two halves to the layers around it."""
    inner = [m for m in network.layers if isinstance(m, keras.Model)]
    nested = next((m for m in inner if layer is not None and layer in {x.name for x in _maps(m)}), None)
    name = layer if nested is not None else _target(network, layer)
    target = network.get_layer(name) if nested is None else nested
    if not isinstance(target, keras.Model):
        out = target.output
        return keras.Model(network.inputs, out), keras.Model(out, network.outputs), name
    i = network.layers.index(target)  # a nested model in a chain: the tensors around it are its input and output
    before, after = network.layers[i - 1].output, network.layers[i + 1].input
    inner_features, inner_head, inner_name = _split(target, layer if nested is not None else None)
    features = keras.Model(network.inputs, inner_features(before))
    maps = keras.Input(inner_features.output.shape[1:])
    head = keras.Model(maps, keras.Model(after, network.outputs)(inner_head(maps)))
    return features, head, f"{target.name}/{inner_name}"


def _network(model: keras.Model) -> tuple[list, keras.Model]:
    """(the layers before the network — scaling —, the network): a cnnrun classifier nests its network."""
    nested = [m for m in model.layers if isinstance(m, keras.Model)]
    if not nested:
        return [], model
    return [m for m in model.layers[1:] if m is not nested[-1]], nested[-1]


def _embedder(network: keras.Model) -> keras.Model:
    """The features the classifier's last Dense layer reads (the penultimate layer)."""
    last_dense = [m for m in network.layers if isinstance(m, keras.layers.Dense)][-1]
    return keras.Model(network.inputs, last_dense.input)


def cut(model: keras.Model, layer: str | None = None) -> Parts:
    prep, network = _network(model)
    features, head, name = _split(network, layer)
    return Parts(prep, features, head, _embedder(network), name)


def cut_embedding_only(model: keras.Model) -> Parts:
    prep, network = _network(model)
    return Parts(prep, None, None, _embedder(network), "")


def _prepare(parts: Parts, pixels: np.ndarray):
    x = keras.ops.convert_to_tensor(pixels)
    for layer in parts.prep:
        x = layer(x)
    return x


def gradcam(parts: Parts, pixels: np.ndarray, classes, method: str = "hirescam", batch: int = 64) -> np.ndarray:
    """Heat maps in [0, 1], one per image, at the image's size, for the given class of each.

    `gradcam` weighs each channel by its gradient averaged over the map; `hirescam` (Draelos & Carin, 2020)
    multiplies gradient and activation place by place before summing the channels. Behind a global-average
    pooling head (ResNet) the two are the same; behind Flatten -> Dense (the articles' CNNs) the gradient
    differs from place to place, averaging it blurs where the evidence is, and only HiResCAM shows it.
    """
    out = []
    for i in range(0, len(pixels), batch):
        maps = keras.ops.convert_to_numpy(parts.features(_prepare(parts, pixels[i:i + batch]), training=False))
        grads = backend.log_prob_gradients(parts.head, maps, classes[i:i + batch]).astype("float64")
        if method == "gradcam":
            cam = np.einsum("nhwk,nk->nhw", maps.astype("float64"), grads.mean(axis=(1, 2)))  # a weight per channel
        else:
            cam = (grads * maps).sum(axis=-1)
        cam = np.maximum(cam, 0)
        cam /= np.maximum(cam.max(axis=(1, 2), keepdims=True), 1e-12)
        out.append(keras.ops.convert_to_numpy(
            keras.ops.image.resize(cam[..., None].astype("float32"), pixels.shape[1:3], interpolation="bilinear"))[..., 0])
    return np.clip(np.concatenate(out), 0, 1) if out else np.zeros((0, *pixels.shape[1:3]))


def embedding(parts: Parts, pixels: np.ndarray, method: str = "tsne", seed: int = 0, batch: int = 512) -> np.ndarray:
    """2-D coordinates of the penultimate-layer features of `pixels`."""
    from sklearn.decomposition import PCA

    feats = np.concatenate([keras.ops.convert_to_numpy(parts.embed(_prepare(parts, pixels[i:i + batch]), training=False))
                            for i in range(0, len(pixels), batch)]).reshape(len(pixels), -1).astype("float64")
    if method == "pca" or len(feats) < 5:
        return PCA(n_components=2, random_state=seed).fit_transform(feats)
    from sklearn.manifold import TSNE

    reduced = PCA(n_components=min(50, *feats.shape), random_state=seed).fit_transform(feats)
    perplexity = float(min(30, max(2, (len(feats) - 1) // 3)))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(reduced)


def _overlay(ax, image, heat, title):
    artifacts._show(ax, image)
    ax.imshow(heat, cmap="jet", alpha=0.45, vmin=0, vmax=1, extent=(-0.5, image.shape[1] - 0.5, image.shape[0] - 0.5, -0.5))
    ax.set_title(title, fontsize=8)


def plot_gradcam(path: Path, images, rows: list[dict], heat_pred, heat_true) -> Path:
    """Image | Grad-CAM for the predicted class | for the true class, a row per image."""
    import matplotlib.pyplot as plt

    cols = 3 if heat_true is not None else 2
    fig, axes = plt.subplots(len(rows), cols, figsize=(2.3 * cols, 2.4 * len(rows)), squeeze=False)
    for i, row in enumerate(rows):
        artifacts._show(axes[i, 0], images[i])
        axes[i, 0].set_title(row["name"], fontsize=8)
        _overlay(axes[i, 1], images[i], heat_pred[i], f"pred: {row['pred']} ({100 * row['p']:.0f} %)")
        if heat_true is not None:
            _overlay(axes[i, 2], images[i], heat_true[i], f"true: {row['true']}")
    name = {"gradcam": "Grad-CAM", "hirescam": "HiResCAM"}.get(rows[0]["cam"], rows[0]["cam"]) if rows else ""
    fig.suptitle(f"{name} at layer {rows[0]['layer']}" if rows else "", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / fig.get_figheight()))  # room for the title above the first row
    return artifacts.save_figure(fig, path)


def plot_embedding(path: Path, xy, y_true, y_pred, class_names, method: str) -> Path:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 7))
    cmap = plt.get_cmap("tab10" if len(class_names) <= 10 else "tab20")
    for k, name in enumerate(class_names):
        mine = y_true == k
        ax.scatter(xy[mine, 0], xy[mine, 1], s=4, color=cmap(k % cmap.N), label=name, alpha=0.7, linewidths=0)
    wrong = y_true != y_pred
    ax.scatter(xy[wrong, 0], xy[wrong, 1], s=7, marker="x", color="black", linewidths=0.4, alpha=0.5,
               label=f"misclassified ({int(wrong.sum())})")  # light: the colours beneath still show
    ax.legend(markerscale=3, fontsize=8, loc="best", framealpha=0.8)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"test set, penultimate-layer features ({'t-SNE' if method == 'tsne' else 'PCA'}), coloured by true class")
    fig.tight_layout()
    return artifacts.save_figure(fig, path)


def explain(out: Path, model: keras.Model, class_names: list[str], x_test=None, y_test=None, probs=None,
            files: list[Path] | None = None, max_images: int = 16, layer: str | None = None,
            method: str = "tsne", seed: int = 0, cam: str = "hirescam", say=log.info) -> dict:
    """Writes Grad-CAM pictures and the embedding map into `out`, in place of what an earlier explain left
    there; returns what was written. `say` hears each stage (a line in a log, not only a spinner)."""
    out = Path(out)
    check_out(out)
    _forget_earlier(out)
    (out / "gradcam").mkdir(parents=True, exist_ok=True)
    needs_maps = bool(max_images > 0 or files)
    if needs_maps and layer is None and not _has_maps(model):
        log.info("explain: %s has no convolutional feature map: no Grad-CAM, the embedding map only", model.name)
        needs_maps = max_images = 0
        files = None
    parts = cut(model, layer) if needs_maps else cut_embedding_only(model)
    done: dict = {"layer": parts.layer}
    images, rows, true = [], [], []
    if x_test is not None and probs is None:
        probs = model.predict(x_test, batch_size=256, verbose=0)  # once, for the pictures and the map
    if x_test is not None and max_images > 0:
        pred = probs.argmax(axis=1)
        wrong = np.flatnonzero(pred != y_test)[:max_images]
        for i in wrong:
            images.append(x_test[i])
            true.append(int(y_test[i]))
            rows.append({"name": f"test {i}", "index": int(i), "pred_k": int(pred[i]), "p": float(probs[i, pred[i]]),
                         "pred": class_names[pred[i]], "true": class_names[y_test[i]], "layer": parts.layer,
                         "cam": cam})
    if files:
        from cnnrun.data.folder import decode

        height, width, channels = model.input_shape[1:]
        for f in files:
            image = decode(str(f), (height, width), channels)
            p = model.predict(image[None], verbose=0)[0]
            images.append(image)
            true.append(None)
            rows.append({"name": Path(f).name, "file": str(f), "pred_k": int(p.argmax()), "p": float(p.max()),
                         "pred": class_names[int(p.argmax())], "true": "", "layer": parts.layer, "cam": cam})
    if images:
        say(f"explain: {'HiResCAM' if cam == 'hirescam' else 'Grad-CAM'} of {len(images)} images at layer {parts.layer}")
        pixels = np.stack(images)
        heat_pred = gradcam(parts, pixels, np.array([r["pred_k"] for r in rows]), cam)
        known = all(t is not None for t in true)
        heat_true = gradcam(parts, pixels, np.array(true), cam) if known else None
        plot_gradcam(out / "gradcam.png", pixels, rows, heat_pred, heat_true)
        names = [artifacts.safe_name(f"{row.get('index', i)}_{row['true']}_to_{row['pred']}" if known
                                     else f"{Path(row['name']).stem}_{row['pred']}") + ".png" for i, row in enumerate(rows)]
        artifacts.write_json(out / layout.EXPLAIN_MANIFEST, {"gradcam": names})  # first: what it is about to write is its own
        for i, (row, name) in enumerate(zip(rows, names)):
            plot_gradcam(out / "gradcam" / name, pixels[i:i + 1], [row], heat_pred[i:i + 1],
                         None if heat_true is None else heat_true[i:i + 1])
        done["gradcam"] = len(rows)
    if x_test is not None and method != "none":
        say(f"explain: {'t-SNE' if method == 'tsne' else 'PCA'} map of {len(x_test)} test images"
            + (" (minutes on a CPU for 10 000; --embedding pca takes seconds)" if method == "tsne" else ""))
        xy = embedding(parts, x_test, method, seed)
        pred = probs.argmax(axis=1)
        artifacts.write_csv(out / "embedding.csv", ["index", "x", "y", "true", "pred", "correct"],
                            [[i, f"{a:.5f}", f"{b:.5f}", class_names[t], class_names[q], int(t == q)]
                             for i, ((a, b), t, q) in enumerate(zip(xy, y_test, pred))])
        plot_embedding(out / "embedding.png", xy, np.asarray(y_test), pred, class_names, method)
        done["embedding"] = len(xy)
    return done


def check_out(out: Path, inside: Path | None = None) -> None:
    """Refuses, before any work, an --out folder holding anything an earlier explain did not write there (a file
    of the user's, a symbolic link): explain replaces only its own pictures."""
    from cnnrun.record import own_folder

    listed = set(layout.explain_written(Path(out)))
    own_folder(out, {**dict.fromkeys(layout.EXPLAIN_FILES), "gradcam": lambda name: name in listed}, "--out", inside)


def _forget_earlier(out: Path) -> None:
    """Removes what an earlier explain wrote into `out` (the names it listed only), so a second run with other
    settings never leaves the first one's pictures beside its own."""
    for name in layout.EXPLAIN_FILES:
        (out / name).unlink(missing_ok=True)
    for name in layout.explain_written(out):
        (out / "gradcam" / name).unlink(missing_ok=True)
    (out / layout.EXPLAIN_MANIFEST).unlink(missing_ok=True)


def _has_maps(model: keras.Model) -> bool:
    return bool(_maps(_network(model)[1]))
