"""The synthetic shapes dataset: the default data of every notebook in the course.

Each image shows a few filled shapes (circles, squares, triangles) in saturated colours
on a muted background. The shape *kind* is the class to predict; the *colour* is a
nuisance variable, drawn independently of the kind from a fixed palette, so a model
cannot shortcut the task by looking at colour alone.

Scenes and conventions:

* **Z-order occlusion.** Objects are drawn one after another; a later object covers
  the pixels of earlier ones. Each instance mask holds exactly that object's *visible*
  pixels, so the masks of one image are disjoint, their union times the labels is the
  ``semantic`` map, and each box is the tight box of the visible mask.
* **Boxes** are float xyxy in pixels, with pixel ``(i, j)`` covering
  ``[j, j+1) x [i, i+1)``: a mask occupying columns 3..7 has ``x1 = 3`` and ``x2 = 8``
  (the COCO convention; torchvision's ``masks_to_boxes`` would return ``x2 = 7``).
* **Rasterisation is binary.** A pixel belongs to a shape when its centre
  ``(j + 0.5, i + 0.5)`` lies inside the shape, so masks are exact and a shape's visible
  pixels carry its colour (scaled by a per-object brightness) before pixel noise.
* **Geometry.** An object of ``size`` s fits in the s x s square around its ``center``:
  a circle has diameter s, a square (axis-aligned) has side s, and a triangle is
  equilateral with side s, rotated by a random angle, with its bounding box centred on
  ``center``. Objects always lie entirely inside the image.
* **Visibility.** A newcomer that would leave any earlier object with less than
  ``min_visible`` of its full area visible is resampled (kind, colour, size, position),
  up to :data:`PLACEMENT_TRIES` times, and then dropped; so a crowded configuration may
  yield fewer objects than drawn. With the default configuration this does not happen.
* **Determinism.** A sample is a pure function of ``(config, split, index)``: it uses its
  own ``numpy.random.Generator`` seeded with
  ``SeedSequence([config.seed, split code, index])`` and never the global RNG, so the
  same sample comes out in any process, any worker and any order. The splits use
  different seed streams and never share a sample. The layout (objects, masks, boxes)
  and the appearance (background, noise) draw from separate streams, so changing
  ``background`` or ``noise_std`` repaints the same scenes.

Targets follow torchvision's detection convention (see :func:`make_sample`), and
:func:`collate_fn` batches them as a list of images and a list of target dicts.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from numbers import Real
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.ops import masks_to_boxes as inclusive_boxes

from cs_dense.validation import check_int, check_real, describe

#: Class names; the label of an instance is its index here (0 is never an instance).
CLASSES: tuple[str, ...] = ("background", "circle", "square", "triangle")
#: The shape kinds an object can have, labels 1..3.
KINDS: tuple[str, ...] = CLASSES[1:]
#: Colour names; ``target["colors"]`` indexes this tuple and :data:`PALETTE`.
COLOR_NAMES: tuple[str, ...] = ("red", "green", "blue", "yellow", "magenta", "cyan")
#: RGB in [0, 1] of each colour in :data:`COLOR_NAMES`: saturated, so that shapes stand
#: out from the muted backgrounds whatever their brightness.
PALETTE: tuple[tuple[float, float, float], ...] = (
    (0.90, 0.15, 0.15),
    (0.15, 0.75, 0.20),
    (0.20, 0.35, 0.95),
    (0.95, 0.85, 0.10),
    (0.85, 0.20, 0.85),
    (0.10, 0.80, 0.85),
)
SPLITS: tuple[str, ...] = ("train", "val", "test")
DEFAULT_LENGTHS: dict[str, int] = {"train": 2000, "val": 200, "test": 200}
BACKGROUNDS: tuple[str, ...] = ("flat", "noise", "texture")

#: ``image_id = (split code + 1) * IMAGE_ID_STRIDE + index``: unique across splits, never 0
#: (some COCO tools treat id 0 as missing). Indices must stay below the stride.
IMAGE_ID_STRIDE = 1_000_000
#: Below about 6 pixels a circle, a square and a triangle rasterise to similar blobs.
MIN_OBJECT_SIZE = 6
#: Attempts to place a newcomer without hiding too much of an earlier object.
PLACEMENT_TRIES = 50
#: Per-object brightness factor applied to the palette colour (a little shading).
BRIGHTNESS_RANGE = (0.75, 1.0)
#: Background grey level and per-channel tint: muted, far from the saturated palette.
BACKGROUND_LEVEL = (0.3, 0.6)
BACKGROUND_TINT = 0.08
#: Extra per-pixel noise of the ``"noise"`` background (on top of ``noise_std``).
BACKGROUND_NOISE_STD = 0.08
#: Texture octaves as (grid cells across the image, amplitude): a smooth random pattern
#: made by bilinear upsampling of small random grids, which costs two small matmuls.
TEXTURE_OCTAVES = ((3, 0.12), (8, 0.06), (24, 0.03))


@dataclass(frozen=True)
class ShapesConfig:
    """Settings of the shapes dataset; every sample is deterministic given these.

    Attributes:
        image_size: ``(H, W)`` in pixels.
        min_objects: fewest objects drawn per image (0 allows empty images).
        max_objects: most objects per image.
        min_size: smallest object extent in pixels (diameter, side), at least
            :data:`MIN_OBJECT_SIZE`.
        max_size: largest object extent; must fit in the image.
        background: ``"flat"`` (one muted colour), ``"noise"`` (flat plus strong pixel
            noise) or ``"texture"`` (a smooth random pattern over a muted colour).
        noise_std: standard deviation of the zero-mean pixel noise added to the whole
            image (objects and background) before clipping to [0, 1]; 0 disables it.
            The noise is uniform, not Gaussian: it looks the same at these levels and
            is four times cheaper to draw.
        min_visible: fraction of its full area an object must keep visible after later
            objects are drawn over it, in (0, 1]; 1 forbids any occlusion.
        seed: non-negative integer; changes every sample of every split.

    Raises:
        ValueError: naming the field and its value, on any invalid setting.
    """

    image_size: tuple[int, int] = (128, 128)
    min_objects: int = 1
    max_objects: int = 4
    min_size: float = 12
    max_size: float = 40
    background: str = "texture"
    noise_std: float = 0.03
    min_visible: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        size = self.image_size
        if not isinstance(size, tuple | list) or len(size) != 2:
            raise ValueError(f"image_size must be a pair (H, W), got {size!r}")
        for name, value in zip(("image_size[0]", "image_size[1]"), size):
            check_int(name, value, 1)
        object.__setattr__(self, "image_size", (int(size[0]), int(size[1])))
        check_int("min_objects", self.min_objects, 0)
        check_int("max_objects", self.max_objects, 0)
        if self.max_objects < self.min_objects:
            raise ValueError(
                f"max_objects must be >= min_objects={self.min_objects}, got {self.max_objects}"
            )
        check_real("min_size", self.min_size, MIN_OBJECT_SIZE)
        check_real("max_size", self.max_size, self.min_size, min(self.image_size))
        if self.background not in BACKGROUNDS:
            raise ValueError(f"background must be one of {BACKGROUNDS}, got {self.background!r}")
        check_real("noise_std", self.noise_std, 0.0)
        if isinstance(self.min_visible, bool) or not isinstance(self.min_visible, Real) or not (
            0 < self.min_visible <= 1
        ):
            raise ValueError(f"min_visible must be a number in (0, 1], got {self.min_visible!r}")
        check_int("seed", self.seed, 0)


@dataclass(frozen=True)
class ShapeObject:
    """One shape of a scene, before occlusion.

    Attributes:
        kind: ``"circle"``, ``"square"`` or ``"triangle"`` (see :data:`KINDS`).
        color: a name from :data:`COLOR_NAMES`.
        center: ``(cx, cy)`` in continuous pixel coordinates (x to the right, y down);
            the centre of the object's ``size x size`` extent square.
        size: extent in pixels: a circle's diameter, a square's side, a triangle's side.
        angle: rotation of a triangle in degrees, apex up at 0 and turning clockwise as
            displayed; circles and squares ignore it (squares stay axis-aligned).
        brightness: factor in [0, 1] applied to the palette colour.

    Raises:
        ValueError: naming the field, on an unknown kind or colour or a bad number.
    """

    kind: str
    color: str
    center: tuple[float, float]
    size: float
    angle: float = 0.0
    brightness: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.color not in COLOR_NAMES:
            raise ValueError(f"color must be one of {COLOR_NAMES}, got {self.color!r}")
        if not isinstance(self.center, tuple | list) or len(self.center) != 2:
            raise ValueError(f"center must be a pair (cx, cy), got {self.center!r}")
        for name, value in zip(("center[0]", "center[1]", "angle"), (*self.center, self.angle)):
            check_real(name, value)
        check_real("size", self.size, 1.0)
        check_real("brightness", self.brightness, 0.0, 1.0)
        object.__setattr__(self, "center", (float(self.center[0]), float(self.center[1])))

    @property
    def label(self) -> int:
        """The class label, an index into :data:`CLASSES`."""
        return CLASSES.index(self.kind)

    @property
    def color_index(self) -> int:
        """The colour, an index into :data:`COLOR_NAMES` and :data:`PALETTE`."""
        return COLOR_NAMES.index(self.color)


# ----------------------------------------------------------------------- rasterisation


def _triangle_vertices(size: float, angle: float) -> np.ndarray:
    """Vertices ``[3, 2]`` (x, y) of an equilateral triangle, relative to its box centre."""
    theta = np.deg2rad(angle + np.array([0.0, 120.0, 240.0]))
    radius = size / math.sqrt(3)  # circumradius of an equilateral triangle of side `size`
    # y grows downwards, so (sin, -cos) puts vertex 0 on top at angle 0 and positive
    # angles turn clockwise on screen.
    xy = radius * np.stack([np.sin(theta), -np.cos(theta)], axis=1)  # [3, 2]
    # Centre the bounding box rather than the centroid: a triangle's width in any
    # direction is at most its side, so the shape then fits in centre +- size / 2.
    return xy - (xy.min(axis=0) + xy.max(axis=0)) / 2


def _rasterize(obj: ShapeObject, height: int, width: int) -> tuple[tuple[slice, slice], np.ndarray]:
    """The pixels whose centres lie inside ``obj``, within its extent square.

    Returns:
        (rows, cols): the window of the image covered by the extent square.
        np.ndarray[h, w] bool: which pixels of that window lie inside the shape.
    """
    half = obj.size / 2
    cx, cy = obj.center
    r0, r1 = max(math.floor(cy - half), 0), min(math.ceil(cy + half), height)
    c0, c1 = max(math.floor(cx - half), 0), min(math.ceil(cx + half), width)
    ys = np.arange(r0, r1)[:, None] + 0.5 - cy  # [h, 1] pixel centres relative to the centre
    xs = np.arange(c0, c1)[None, :] + 0.5 - cx  # [1, w]
    if obj.kind == "circle":
        inside = xs**2 + ys**2 <= half**2  # [h, w]
    elif obj.kind == "square":
        # Half-open, so a square with integer corners covers exactly size x size pixels.
        inside = (-half <= xs) & (xs < half) & (-half <= ys) & (ys < half)  # [h, w]
    else:
        inside = np.ones((r1 - r0, c1 - c0), dtype=bool)
        vertices = _triangle_vertices(obj.size, obj.angle)
        # The vertices run clockwise on screen, which in y-down coordinates makes every
        # edge function positive on the interior.
        for (ax, ay), (bx, by) in zip(vertices, np.roll(vertices, -1, axis=0)):
            inside &= (bx - ax) * (ys - ay) - (by - ay) * (xs - ax) >= 0  # [h, w]
    return (slice(r0, r1), slice(c0, c1)), inside


def _check_inside_image(obj: ShapeObject, height: int, width: int, name: str) -> None:
    half = obj.size / 2
    cx, cy = obj.center
    if not (half <= cx <= width - half and half <= cy <= height - half):
        raise ValueError(
            f"{name} must lie inside the {height}x{width} image, i.e. center +- size/2 within "
            f"[0, W] x [0, H]; got center={obj.center}, size={obj.size}"
        )


# ---------------------------------------------------------------------------- layout


def _sample_object(rng: np.random.Generator, config: ShapesConfig) -> ShapeObject:
    """Draw one object uniformly: kind, colour, size, position inside the image, angle."""
    height, width = config.image_size
    kind = KINDS[rng.integers(len(KINDS))]
    color = COLOR_NAMES[rng.integers(len(COLOR_NAMES))]
    size = float(rng.uniform(config.min_size, config.max_size))
    half = size / 2
    center = (float(rng.uniform(half, width - half)), float(rng.uniform(half, height - half)))
    angle = float(rng.uniform(0.0, 360.0))
    brightness = float(rng.uniform(*BRIGHTNESS_RANGE))
    return ShapeObject(kind, color, center, size, angle if kind == "triangle" else 0.0, brightness)


def _place_objects(
    rng: np.random.Generator, config: ShapesConfig
) -> tuple[list[ShapeObject], np.ndarray]:
    """Draw a scene in z-order, keeping every object at least ``min_visible`` visible.

    Returns:
        objects: the kept objects, bottom first.
        np.ndarray[H, W] int64: index of the object on top at each pixel, -1 for background.
    """
    height, width = config.image_size
    owner = np.full((height, width), -1, dtype=np.int64)
    objects: list[ShapeObject] = []
    full_area = np.zeros(0, dtype=np.int64)  # [K] pixels of each kept object drawn alone
    visible = np.zeros(0, dtype=np.int64)  # [K] pixels still on top
    for _ in range(rng.integers(config.min_objects, config.max_objects + 1)):
        for _ in range(PLACEMENT_TRIES):
            obj = _sample_object(rng, config)
            window, inside = _rasterize(obj, height, width)
            covered = owner[window][inside]  # owners of the pixels the newcomer would cover
            lost = np.bincount(covered[covered >= 0], minlength=len(objects))  # [K]
            if np.all(visible - lost >= config.min_visible * full_area):
                owner[window][inside] = len(objects)  # owner[window] is a view
                objects.append(obj)
                count = np.count_nonzero(inside)
                full_area = np.append(full_area, count)
                visible = np.append(visible - lost, count)
                break
    return objects, owner


def _draw(objects: Sequence[ShapeObject], height: int, width: int) -> np.ndarray:
    """The owner map ``[H, W]`` int64 of ``objects`` drawn in order (-1 = background)."""
    owner = np.full((height, width), -1, dtype=np.int64)
    for k, obj in enumerate(objects):
        window, inside = _rasterize(obj, height, width)
        owner[window][inside] = k
    return owner


# ---------------------------------------------------------------------------- pixels


@lru_cache(maxsize=32)
def _upsample_matrix(pixels: int, points: int) -> np.ndarray:
    """Linear interpolation weights ``[pixels, points]`` from evenly spread control points."""
    position = (np.arange(pixels) + 0.5) / pixels * (points - 1)  # pixel centres, in points
    left = np.minimum(np.floor(position).astype(np.int64), points - 2)
    frac = (position - left).astype(np.float32)
    weights = np.zeros((pixels, points), dtype=np.float32)
    weights[np.arange(pixels), left] = 1 - frac
    weights[np.arange(pixels), left + 1] = frac
    weights.setflags(write=False)
    return weights


def _pixel_noise(rng: np.random.Generator, shape: tuple[int, ...], std: float) -> np.ndarray:
    """Zero-mean uniform noise of standard deviation ``std``, float32."""
    half_width = np.float32(std * math.sqrt(3))  # U(-a, a) has standard deviation a / sqrt(3)
    return (rng.random(shape, dtype=np.float32) * 2 - 1) * half_width


def _background(rng: np.random.Generator, config: ShapesConfig) -> np.ndarray:
    """A muted background ``[3, H, W]`` float32 of the configured kind."""
    height, width = config.image_size
    base = rng.uniform(*BACKGROUND_LEVEL) + rng.uniform(-BACKGROUND_TINT, BACKGROUND_TINT, size=3)
    image = np.empty((3, height, width), dtype=np.float32)
    image[:] = base.astype(np.float32)[:, None, None]
    if config.background == "noise":
        image += _pixel_noise(rng, image.shape, BACKGROUND_NOISE_STD)
    elif config.background == "texture":
        for cells, amplitude in TEXTURE_OCTAVES:
            grid = rng.uniform(-amplitude, amplitude, size=(3, cells + 1, cells + 1)).astype(np.float32)
            rows = _upsample_matrix(height, cells + 1)  # [H, g]
            cols = _upsample_matrix(width, cells + 1)  # [W, g]
            image += rows @ grid @ cols.T  # [H, g] @ [3, g, g] @ [g, W] -> [3, H, W]
    return image


def _pixel_edge_boxes(masks: Tensor) -> Tensor:
    """[N, 4] tight xyxy boxes of the masks, under the pixel-edge convention (``x2`` one past the last column).

    torchvision's boxes, moved by 1 in ``x2`` and ``y2``; an empty mask keeps ``(0, 0, 0, 0)``.
    Not :func:`cs_dense.ops.masks_to_boxes`: that is an exercise of notebook 00, and the student
    bundle must make data before it is revealed.
    """
    boxes = inclusive_boxes(masks)
    boxes[:, 2:] += masks.flatten(1).any(dim=1, keepdim=True)
    return boxes


def _compose(
    objects: Sequence[ShapeObject],
    owner: np.ndarray,
    config: ShapesConfig,
    rng: np.random.Generator,
    image_id: int,
) -> tuple[Tensor, dict[str, Any]]:
    """Paint the image and build the target of a drawn scene (see :func:`make_sample`)."""
    height, width = config.image_size
    n = len(objects)
    image = _background(rng, config)  # [3, H, W]
    rgb = np.array([PALETTE[obj.color_index] for obj in objects], dtype=np.float32).reshape(n, 3)
    rgb *= np.array([obj.brightness for obj in objects], dtype=np.float32)[:, None]  # [N, 3]
    covered = owner >= 0  # [H, W]
    image[:, covered] = rgb[owner[covered]].T  # [3, P] colours of the P covered pixels
    if config.noise_std > 0:
        image += _pixel_noise(rng, image.shape, config.noise_std)
    np.clip(image, 0.0, 1.0, out=image)

    masks = owner[None] == np.arange(n)[:, None, None]  # [N, H, W] bool
    labels = np.array([obj.label for obj in objects], dtype=np.int64)
    semantic = np.concatenate([np.zeros(1, dtype=np.int64), labels])[owner + 1]  # [H, W]
    mask_tensor = torch.from_numpy(masks.view(np.uint8)).reshape(n, height, width)
    target = {
        "boxes": _pixel_edge_boxes(mask_tensor),
        "labels": torch.from_numpy(labels),
        "masks": mask_tensor,
        "semantic": torch.from_numpy(semantic),
        "area": torch.from_numpy(masks.sum(axis=(1, 2)).astype(np.float32)),
        "iscrowd": torch.zeros(n, dtype=torch.int64),
        "colors": torch.tensor([obj.color_index for obj in objects], dtype=torch.int64),
        "image_id": image_id,
    }
    return torch.from_numpy(image), target


# ------------------------------------------------------------------------ public API


def _sample_rngs(
    index: int, split: str, config: ShapesConfig
) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent layout and appearance generators of one sample."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    check_int("index", index, 0)
    if index >= IMAGE_ID_STRIDE:
        raise ValueError(f"index must be < {IMAGE_ID_STRIDE}, got {index}")
    seeds = np.random.SeedSequence([config.seed, SPLITS.index(split), int(index)]).spawn(2)
    layout, appearance = (np.random.default_rng(s) for s in seeds)
    return layout, appearance


def scene_objects(index: int, split: str, config: ShapesConfig = ShapesConfig()) -> list[ShapeObject]:
    """The objects of sample ``index`` of ``split``, bottom first, as :func:`make_sample` draws them.

    ``render_scene(scene_objects(i, s, c), c)`` has the same masks, boxes and labels as
    ``make_sample(i, s, c)`` (its background and noise differ); rendering one object
    alone gives its full area before occlusion.

    Raises:
        ValueError: on an unknown split or an index outside ``[0, IMAGE_ID_STRIDE)``.
    """
    layout, _ = _sample_rngs(index, split, config)
    return _place_objects(layout, config)[0]


def make_sample(
    index: int, split: str, config: ShapesConfig = ShapesConfig()
) -> tuple[Tensor, dict[str, Any]]:
    """Generate sample ``index`` of ``split``: a pure function of its arguments.

    Args:
        index: position in the split, ``0 <= index < IMAGE_ID_STRIDE``.
        split: ``"train"``, ``"val"`` or ``"test"``; splits never share a sample.
        config: dataset settings.

    Returns:
        image (Tensor[3, H, W] float32): RGB in [0, 1].
        target (dict): the N visible instances, bottom of the z-order first:

            - ``boxes`` (Tensor[N, 4] float32): xyxy pixels, tight around each mask
              (a mask on columns 3..7 has ``x1 = 3``, ``x2 = 8``).
            - ``labels`` (Tensor[N] int64): 1..3, indices into :data:`CLASSES`.
            - ``masks`` (Tensor[N, H, W] uint8): 0/1 visible pixels; disjoint.
            - ``semantic`` (Tensor[H, W] int64): label of the visible object, 0 elsewhere.
            - ``area`` (Tensor[N] float32): visible pixel count of each mask.
            - ``iscrowd`` (Tensor[N] int64): zeros.
            - ``colors`` (Tensor[N] int64): indices into :data:`COLOR_NAMES` / :data:`PALETTE`.
            - ``image_id`` (int): ``(split code + 1) * IMAGE_ID_STRIDE + index``.

    Raises:
        ValueError: on an unknown split or an index outside ``[0, IMAGE_ID_STRIDE)``.
    """
    layout, appearance = _sample_rngs(index, split, config)
    objects, owner = _place_objects(layout, config)
    image_id = (SPLITS.index(split) + 1) * IMAGE_ID_STRIDE + int(index)
    return _compose(objects, owner, config, appearance, image_id)


def load_split(split: str, count: int, config: ShapesConfig = ShapesConfig()) -> tuple[Tensor, list[dict[str, Any]]]:
    """Samples ``0 .. count - 1`` of ``split`` in memory, as the notebooks train on them.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``.
        count: how many samples, ``>= 1``.
        config: dataset settings.

    Returns:
        images (Tensor[count, 3, H, W] float32), and the ``count`` targets of
        :func:`make_sample` in a list.
    """
    check_int("count", count, 1)
    samples = [make_sample(i, split, config) for i in range(count)]
    return torch.stack([image for image, _ in samples]), [target for _, target in samples]


def render_scene(
    objects: Sequence[ShapeObject],
    config: ShapesConfig = ShapesConfig(),
    rng: np.random.Generator | None = None,
    image_id: int = 0,
) -> tuple[Tensor, dict[str, Any]]:
    """Render an explicit list of objects, bottom first, exactly as given.

    ``min_visible`` and the object-count settings of ``config`` do not apply: the scene is
    drawn as listed. ``config`` supplies the image size, background and pixel noise.

    Args:
        objects: the shapes in z-order (later ones cover earlier ones).
        config: image size, background and noise; ``ShapesConfig(background="flat",
            noise_std=0)`` makes every object pixel exactly ``PALETTE[color] * brightness``.
        rng: randomness of the background and noise; by default a generator seeded with
            ``config.seed``, so the call is deterministic.
        image_id: stored as ``target["image_id"]``.

    Returns:
        ``(image, target)`` as in :func:`make_sample`, one instance per object, in order.

    Raises:
        ValueError: if an object sticks out of the image or is completely hidden by
            later objects (its mask would be empty).
    """
    height, width = config.image_size
    for k, obj in enumerate(objects):
        _check_inside_image(obj, height, width, f"objects[{k}]")
    owner = _draw(objects, height, width)
    shown = np.bincount(owner[owner >= 0], minlength=len(objects))  # [N] visible pixels
    if len(objects) and shown.min() == 0:
        hidden = int(shown.argmin())
        raise ValueError(f"objects[{hidden}] is completely hidden or covers no pixel centre")
    rng = np.random.default_rng(config.seed) if rng is None else rng
    return _compose(objects, owner, config, rng, image_id)


def _copy_sample(image: Tensor, target: dict[str, Any]) -> tuple[Tensor, dict[str, Any]]:
    return image.clone(), {k: v.clone() if isinstance(v, Tensor) else v for k, v in target.items()}


class ShapesDataset(Dataset):
    """A split of the shapes dataset, generated on the fly.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``.
        length: number of samples; default :data:`DEFAULT_LENGTHS` (2000 / 200 / 200).
        config: dataset settings.
        transforms: optional ``transforms(image, target) -> (image, target)``.
        cache: keep generated samples in memory (per process: each DataLoader worker
            has its own cache). Callers get copies, so they may modify what they receive.

    Attributes:
        classes: :data:`CLASSES`.
        config, split: as given.

    Raises:
        ValueError: on an unknown split or a length outside ``[0, IMAGE_ID_STRIDE]``.
    """

    def __init__(
        self,
        split: str = "train",
        length: int | None = None,
        config: ShapesConfig = ShapesConfig(),
        transforms: Callable[[Tensor, dict[str, Any]], tuple[Any, Any]] | None = None,
        cache: bool = False,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        length = DEFAULT_LENGTHS[split] if length is None else length
        check_int("length", length, 0)
        if length > IMAGE_ID_STRIDE:
            raise ValueError(f"length must be <= {IMAGE_ID_STRIDE}, got {length}")
        if not isinstance(config, ShapesConfig):
            raise ValueError(f"config must be a ShapesConfig, got {describe(config)}")
        self.split = split
        self.config = config
        self.transforms = transforms
        self.classes = CLASSES
        self._length = int(length)
        self._cache: dict[int, tuple[Tensor, dict[str, Any]]] | None = {} if cache else None

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        index = operator.index(index)
        if index < 0:
            index += self._length
        if not 0 <= index < self._length:
            raise IndexError(f"index out of range for a dataset of length {self._length}")
        if self._cache is None:
            image, target = make_sample(index, self.split, self.config)
        else:
            if index not in self._cache:
                self._cache[index] = make_sample(index, self.split, self.config)
            image, target = _copy_sample(*self._cache[index])
        if self.transforms is not None:
            return self.transforms(image, target)
        return image, target

    def __repr__(self) -> str:
        return f"ShapesDataset(split={self.split!r}, length={self._length}, config={self.config})"


def collate_fn(
    batch: Sequence[tuple[Tensor, dict[str, Any]]],
) -> tuple[list[Tensor], list[dict[str, Any]]]:
    """Batch detection samples as lists (images may differ in size, targets in length).

    Args:
        batch: ``(image, target)`` pairs.

    Returns:
        ``(images, targets)``: two lists of length B, the torchvision detection input.
    """
    return [image for image, _ in batch], [target for _, target in batch]


def stack_images(images: Sequence[Tensor]) -> Tensor:
    """Stack same-sized images into one batch tensor.

    Args:
        images: B tensors ``[C, H, W]`` of one shape.

    Returns:
        Tensor[B, C, H, W].

    Raises:
        ValueError: if ``images`` is empty (the shape would be unknown), an item is not a
            ``[C, H, W]`` tensor, or the shapes differ.
    """
    if len(images) == 0:
        raise ValueError("images must hold at least one image: an empty batch has no shape")
    for k, image in enumerate(images):
        if not isinstance(image, Tensor) or image.dim() != 3:
            got = describe(image)
            raise ValueError(f"images[{k}] must be a Tensor[C, H, W], got {got}")
        if image.shape != images[0].shape:
            raise ValueError(
                f"images must all have one shape; images[0] is {list(images[0].shape)}, "
                f"images[{k}] is {list(image.shape)}"
            )
    return torch.stack(list(images))
