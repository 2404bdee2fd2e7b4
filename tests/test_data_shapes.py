"""The shapes dataset: determinism, target invariants against numpy/loop references, hand cases."""

from __future__ import annotations

import hashlib
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from cs_dense.data.shapes import (
    CLASSES,
    COLOR_NAMES,
    DEFAULT_LENGTHS,
    IMAGE_ID_STRIDE,
    PALETTE,
    ShapeObject,
    ShapesConfig,
    ShapesDataset,
    collate_fn,
    load_split,
    make_sample,
    render_scene,
    scene_objects,
    stack_images,
)

DEFAULT = ShapesConfig()
# Flat background without noise: every object pixel is exactly its colour.
CLEAN = ShapesConfig(image_size=(32, 40), background="flat", noise_std=0.0, min_size=6, max_size=12)
N_SAMPLES = 40  # random samples per invariant test (about 1 ms each)


def sample_digest(image: torch.Tensor, target: dict) -> str:
    """SHA-256 over the bytes of the image and of every tensor of the target."""
    digest = hashlib.sha256(image.numpy().tobytes())
    for key in sorted(target):
        value = target[key]
        digest.update(key.encode())
        digest.update(value.numpy().tobytes() if isinstance(value, torch.Tensor) else repr(value).encode())
    return digest.hexdigest()


def assert_samples_equal(a: tuple, b: tuple) -> None:
    (image_a, target_a), (image_b, target_b) = a, b
    torch.testing.assert_close(image_a, image_b, rtol=0, atol=0)
    assert target_a.keys() == target_b.keys()
    for key in target_a:
        if isinstance(target_a[key], torch.Tensor):
            torch.testing.assert_close(target_a[key], target_b[key], rtol=0, atol=0, msg=key)
        else:
            assert target_a[key] == target_b[key], key


def numpy_tight_box(mask: np.ndarray) -> list[float]:
    """Reference: the +1-convention box of a non-empty mask, via np.nonzero."""
    rows, cols = np.nonzero(mask)
    return [float(cols.min()), float(rows.min()), float(cols.max() + 1), float(rows.max() + 1)]


def loop_tight_box(mask: np.ndarray) -> list[float]:
    """Slow reference: scan every pixel; pixel (i, j) covers [j, j+1) x [i, i+1)."""
    x1, y1, x2, y2 = math.inf, math.inf, -math.inf, -math.inf
    for i in range(mask.shape[0]):
        for j in range(mask.shape[1]):
            if mask[i, j]:
                x1, y1, x2, y2 = min(x1, j), min(y1, i), max(x2, j + 1), max(y2, i + 1)
    return [float(x1), float(y1), float(x2), float(y2)]


# ------------------------------------------------------------------ keys, shapes, dtypes


@pytest.mark.parametrize("background", ["flat", "noise", "texture"])
def test_sample_keys_shapes_and_dtypes(background):
    config = ShapesConfig(image_size=(96, 112), background=background)
    image, target = make_sample(3, "val", config)
    n = len(target["labels"])
    assert 1 <= n <= 4
    assert image.dtype == torch.float32 and image.shape == (3, 96, 112)
    assert 0 <= image.min() and image.max() <= 1
    expected = {
        "boxes": ((n, 4), torch.float32),
        "labels": ((n,), torch.int64),
        "masks": ((n, 96, 112), torch.uint8),
        "semantic": ((96, 112), torch.int64),
        "area": ((n,), torch.float32),
        "iscrowd": ((n,), torch.int64),
        "colors": ((n,), torch.int64),
    }
    assert set(target) == set(expected) | {"image_id"}
    for key, (shape, dtype) in expected.items():
        assert (tuple(target[key].shape), target[key].dtype) == (shape, dtype), key
    assert type(target["image_id"]) is int and target["image_id"] == 2 * IMAGE_ID_STRIDE + 3
    assert set(target["masks"].unique().tolist()) <= {0, 1}
    assert (target["iscrowd"] == 0).all()
    assert ((target["labels"] >= 1) & (target["labels"] < len(CLASSES))).all()
    assert ((target["colors"] >= 0) & (target["colors"] < len(COLOR_NAMES))).all()


def test_empty_scenes_have_empty_targets_of_the_right_shape():
    config = ShapesConfig(image_size=(20, 24), min_objects=0, max_objects=0, min_size=6, max_size=10)
    for image, target in [make_sample(0, "train", config), render_scene([], config)]:
        assert image.shape == (3, 20, 24)
        assert target["boxes"].shape == (0, 4) and target["boxes"].dtype == torch.float32
        assert target["masks"].shape == (0, 20, 24) and target["masks"].dtype == torch.uint8
        for key in ("labels", "area", "iscrowd", "colors"):
            assert target[key].shape == (0,), key
        torch.testing.assert_close(target["semantic"], torch.zeros(20, 24, dtype=torch.int64))


# ---------------------------------------------------------------------------- determinism


def test_same_sample_twice_and_across_datasets():
    assert_samples_equal(make_sample(7, "train", DEFAULT), make_sample(7, "train", DEFAULT))
    first, second = ShapesDataset("train", length=10), ShapesDataset("train", length=10)
    cached = ShapesDataset("train", length=10, cache=True)
    for index in (9, 0, 4):  # any order
        assert_samples_equal(first[index], second[index])
        assert_samples_equal(first[index], cached[index])
        assert_samples_equal(first[index], make_sample(index, "train", DEFAULT))


def test_global_random_state_is_neither_used_nor_changed():
    np.random.seed(1)
    torch.manual_seed(1)
    reference = make_sample(5, "test", DEFAULT)
    np.random.seed(2)
    torch.manual_seed(2)
    numpy_state, torch_state = np.random.get_state()[1].copy(), torch.get_rng_state().clone()
    assert_samples_equal(make_sample(5, "test", DEFAULT), reference)
    np.testing.assert_array_equal(np.random.get_state()[1], numpy_state)
    torch.testing.assert_close(torch.get_rng_state(), torch_state, rtol=0, atol=0)


def test_another_process_produces_identical_bytes():
    indices = [0, 1, 57]
    # The child computes the digest with the same recipe as sample_digest.
    script = (
        "import hashlib, torch\n"
        "from cs_dense.data.shapes import ShapesConfig, make_sample\n"
        "for i in %r:\n"
        "    image, target = make_sample(i, 'train', ShapesConfig(seed=3))\n"
        "    d = hashlib.sha256(image.numpy().tobytes())\n"
        "    for k in sorted(target):\n"
        "        v = target[k]\n"
        "        d.update(k.encode())\n"
        "        d.update(v.numpy().tobytes() if isinstance(v, torch.Tensor) else repr(v).encode())\n"
        "    print(d.hexdigest())\n"
    ) % (indices,)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120)
    here = [sample_digest(*make_sample(i, "train", ShapesConfig(seed=3))) for i in indices]
    assert result.stdout.split() == here


def test_splits_and_seeds_give_different_samples():
    digests, image_ids = set(), set()
    for split in ("train", "val", "test"):
        for index in range(30):
            image, target = make_sample(index, split, DEFAULT)
            digests.add(hashlib.sha256(image.numpy().tobytes()).hexdigest())
            image_ids.add(target["image_id"])
    assert len(digests) == len(image_ids) == 90
    other_seed = make_sample(0, "train", ShapesConfig(seed=1))[0]
    assert not torch.equal(other_seed, make_sample(0, "train", DEFAULT)[0])


# ------------------------------------------------------------------------ target invariants


@pytest.mark.parametrize("config", [DEFAULT, ShapesConfig(image_size=(64, 80), max_objects=8, min_size=8, max_size=30)])
def test_targets_agree_with_masks(config):
    height, width = config.image_size
    for index in range(N_SAMPLES):
        _, target = make_sample(index, "train", config)
        masks = target["masks"].numpy()
        assert config.min_objects <= len(masks) <= config.max_objects
        assert masks.sum(axis=0).max(initial=0) <= 1, "masks overlap"
        assert (masks.sum(axis=(1, 2)) > 0).all(), "empty mask"
        labels = target["labels"].numpy()
        semantic = (masks * labels[:, None, None]).sum(axis=0)
        np.testing.assert_array_equal(target["semantic"].numpy(), semantic)
        np.testing.assert_array_equal(target["area"].numpy(), masks.sum(axis=(1, 2)).astype(np.float32))
        expected_boxes = [numpy_tight_box(mask) for mask in masks]
        np.testing.assert_array_equal(target["boxes"].numpy(), np.array(expected_boxes, dtype=np.float32).reshape(-1, 4))
        boxes = target["boxes"]
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all()


def test_boxes_match_a_pixel_loop_reference():
    _, target = make_sample(11, "val", DEFAULT)
    for mask, box in zip(target["masks"].numpy(), target["boxes"].tolist()):
        assert box == loop_tight_box(mask)


def test_objects_stay_inside_the_image_and_keep_min_visible():
    for min_visible in (0.5, 0.9, 1.0):
        config = ShapesConfig(min_visible=min_visible, max_objects=6)
        height, width = config.image_size
        for index in range(15):
            objects = scene_objects(index, "train", config)
            _, target = make_sample(index, "train", config)
            for k, obj in enumerate(objects):
                half = obj.size / 2
                assert half <= obj.center[0] <= width - half and half <= obj.center[1] <= height - half
                full_area = render_scene([obj], config)[1]["area"][0]  # the object drawn alone
                assert target["area"][k] >= min_visible * full_area, (index, k)
            if min_visible == 1.0:
                drawn_alone = sum(render_scene([obj], config)[1]["masks"][0] for obj in objects)
                assert drawn_alone.max() <= 1, "min_visible=1 must forbid occlusion"


def test_sample_renders_like_its_object_list():
    for index in range(10):
        objects = scene_objects(index, "test", DEFAULT)
        _, sample = make_sample(index, "test", DEFAULT)
        _, scene = render_scene(objects, DEFAULT)
        for key in ("boxes", "labels", "masks", "semantic", "area", "colors"):
            torch.testing.assert_close(scene[key], sample[key], rtol=0, atol=0, msg=key)
        assert [obj.label for obj in objects] == sample["labels"].tolist()


def test_appearance_settings_repaint_the_same_scenes():
    for index in range(5):
        _, textured = make_sample(index, "train", DEFAULT)
        _, flat = make_sample(index, "train", ShapesConfig(background="flat", noise_std=0.0))
        for key in ("boxes", "labels", "masks", "colors"):
            torch.testing.assert_close(flat[key], textured[key], rtol=0, atol=0, msg=key)


def test_object_pixels_have_their_colour_on_a_clean_image():
    for index in range(10):
        image, target = make_sample(index, "train", CLEAN)
        background = image[:, target["semantic"] == 0]  # [3, P]
        assert (background == background[:, :1]).all(), "a flat background is one colour"
        for obj, mask in zip(scene_objects(index, "train", CLEAN), target["masks"].bool()):
            expected = torch.tensor(PALETTE[obj.color_index]) * torch.tensor(obj.brightness, dtype=torch.float32)
            pixels = image[:, mask]  # [3, P]
            torch.testing.assert_close(pixels, expected[:, None].expand_as(pixels), rtol=0, atol=1e-6)


def test_kinds_and_colours_are_all_drawn_and_independent():
    labels, colours = [], []
    for index in range(150):
        _, target = make_sample(index, "train", DEFAULT)
        labels += target["labels"].tolist()
        colours += target["colors"].tolist()
    counts = np.zeros((len(CLASSES), len(COLOR_NAMES)), dtype=int)
    np.add.at(counts, (labels, colours), 1)
    # About 375 objects over 3 kinds x 6 colours: every pair appears (expected ~20 each).
    assert (counts[1:] > 0).all()
    assert counts[0].sum() == 0


# ----------------------------------------------------------------------- hand-drawn scenes


def test_square_by_hand():
    # Centre (10, 20), side 6: x in [7, 13) -> columns 7..12, y in [17, 23) -> rows 17..22.
    image, target = render_scene([ShapeObject("square", "red", center=(10, 20), size=6)], CLEAN, image_id=42)
    expected_mask = torch.zeros(32, 40, dtype=torch.uint8)
    expected_mask[17:23, 7:13] = 1
    torch.testing.assert_close(target["masks"][0], expected_mask, rtol=0, atol=0)
    torch.testing.assert_close(target["boxes"], torch.tensor([[7.0, 17.0, 13.0, 23.0]]))
    torch.testing.assert_close(target["area"], torch.tensor([36.0]))
    torch.testing.assert_close(target["labels"], torch.tensor([2]))
    torch.testing.assert_close(target["colors"], torch.tensor([COLOR_NAMES.index("red")]))
    torch.testing.assert_close(target["semantic"], expected_mask.long() * 2)
    torch.testing.assert_close(image[:, 20, 10], torch.tensor(PALETTE[0]), rtol=0, atol=1e-7)
    assert target["image_id"] == 42


def test_circle_by_hand():
    # Centre (10, 10), diameter 4: pixel centres 8.5..11.5 are 0.5 or 1.5 from the centre;
    # 0.5^2 + 1.5^2 = 2.5 <= 4 is in, 1.5^2 + 1.5^2 = 4.5 is out: a 4 x 4 block minus corners.
    _, target = render_scene([ShapeObject("circle", "blue", center=(10, 10), size=4)], CLEAN)
    expected = torch.zeros(32, 40, dtype=torch.uint8)
    expected[8:12, 8:12] = 1
    expected[[8, 8, 11, 11], [8, 11, 8, 11]] = 0
    torch.testing.assert_close(target["masks"][0], expected, rtol=0, atol=0)
    torch.testing.assert_close(target["boxes"], torch.tensor([[8.0, 8.0, 12.0, 12.0]]))
    torch.testing.assert_close(target["area"], torch.tensor([12.0]))


def test_triangle_orientation_and_area():
    side = 20
    upright = render_scene([ShapeObject("triangle", "green", (20, 16), side, angle=0)], CLEAN)[1]["masks"][0]
    # Apex up, centred on x = 20: mirror-symmetric about it, and rows widen downwards.
    torch.testing.assert_close(upright, upright.flip(1), rtol=0, atol=0)
    row_widths = upright.sum(1)[upright.sum(1) > 0]
    assert (row_widths[1:] >= row_widths[:-1]).all()
    assert abs(upright.sum().item() - math.sqrt(3) / 4 * side**2) < 0.06 * side**2
    # 90 degrees clockwise as displayed: the apex points right, the base is on the left.
    right = render_scene([ShapeObject("triangle", "green", (20, 16), side, angle=90)], CLEAN)[1]["masks"][0]
    column_heights = right.sum(0)[right.sum(0) > 0]
    assert (column_heights[1:] <= column_heights[:-1]).all()
    # Any rotation stays inside the object's extent square.
    for angle in range(0, 360, 15):
        box = render_scene([ShapeObject("triangle", "green", (20, 16), side, angle=angle)], CLEAN)[1]["boxes"][0]
        assert box[0] >= 10 and box[1] >= 6 and box[2] <= 30 and box[3] <= 26, angle


def test_occlusion_by_hand():
    # A: side 8 at (10, 10) -> columns 6..13, rows 6..13. B on top: (16, 10) -> columns 12..19.
    # B hides A's columns 12..13, so A's visible part is columns 6..11.
    under = ShapeObject("square", "red", center=(10, 10), size=8)
    over = ShapeObject("square", "blue", center=(16, 10), size=8)
    image, target = render_scene([under, over], CLEAN)
    torch.testing.assert_close(target["boxes"], torch.tensor([[6.0, 6.0, 12.0, 14.0], [12.0, 6.0, 20.0, 14.0]]))
    torch.testing.assert_close(target["area"], torch.tensor([48.0, 64.0]))
    assert target["masks"][0, 6:14, 12:14].sum() == 0 and target["masks"][1, 6:14, 12:14].all()
    torch.testing.assert_close(image[:, 10, 12], torch.tensor(PALETTE[COLOR_NAMES.index("blue")]), rtol=0, atol=1e-7)
    # Swapping the order swaps who is hidden.
    _, swapped = render_scene([over, under], CLEAN)
    torch.testing.assert_close(swapped["boxes"], torch.tensor([[14.0, 6.0, 20.0, 14.0], [6.0, 6.0, 14.0, 14.0]]))


def test_render_scene_rejects_bad_scenes():
    with pytest.raises(ValueError, match=r"objects\[1\]"):
        render_scene([ShapeObject("circle", "red", (10, 10), 6), ShapeObject("circle", "red", (38, 10), 6)], CLEAN)
    with pytest.raises(ValueError, match=r"objects\[0\].*hidden"):
        render_scene([ShapeObject("circle", "red", (10, 10), 6), ShapeObject("square", "red", (10, 10), 10)], CLEAN)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(kind="hexagon"), "kind"),
        (dict(color="purple"), "color"),
        (dict(center=(1.0,)), "center"),
        (dict(center=(1.0, float("nan"))), r"center\[1\]"),
        (dict(size=0), "size"),
        (dict(brightness=1.5), "brightness"),
    ],
)
def test_shape_object_validation(kwargs, field):
    arguments = dict(kind="circle", color="red", center=(10.0, 10.0), size=6) | kwargs
    with pytest.raises(ValueError, match=field):
        ShapeObject(**arguments)


# ------------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(image_size=(128,)), "image_size"),
        (dict(image_size=(0, 128)), r"image_size\[0\]"),
        (dict(image_size=(128, 12.5)), r"image_size\[1\]"),
        (dict(min_objects=-1), "min_objects"),
        (dict(min_objects=5, max_objects=4), "max_objects"),
        (dict(max_objects=True), "max_objects"),
        (dict(min_size=3), "min_size"),
        (dict(min_size=30, max_size=20), "max_size"),
        (dict(image_size=(32, 32), max_size=40), "max_size"),
        (dict(background="plaid"), "background"),
        (dict(noise_std=-0.1), "noise_std"),
        (dict(min_visible=0.0), "min_visible"),
        (dict(min_visible=1.5), "min_visible"),
        (dict(seed=-1), "seed"),
        (dict(seed=1.0), "seed"),
    ],
)
def test_config_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        ShapesConfig(**kwargs)


def test_config_accepts_a_list_image_size_and_edge_values():
    config = ShapesConfig(image_size=[24, 30], min_size=6, max_size=24, min_visible=1.0, noise_std=0.0)
    assert config.image_size == (24, 30)
    assert make_sample(0, "train", config)[0].shape == (3, 24, 30)


def test_make_sample_validates_split_and_index():
    with pytest.raises(ValueError, match="split"):
        make_sample(0, "training", DEFAULT)
    with pytest.raises(ValueError, match="index"):
        make_sample(-1, "train", DEFAULT)
    with pytest.raises(ValueError, match="index"):
        make_sample(IMAGE_ID_STRIDE, "train", DEFAULT)


# ------------------------------------------------------------------------------ dataset


def test_dataset_lengths_indexing_and_attributes():
    for split, length in DEFAULT_LENGTHS.items():
        assert len(ShapesDataset(split)) == length
    dataset = ShapesDataset("val", length=5)
    assert (dataset.split, dataset.config, dataset.classes) == ("val", DEFAULT, CLASSES)
    assert_samples_equal(dataset[-1], dataset[4])
    assert_samples_equal(dataset[np.int64(2)], make_sample(2, "val", DEFAULT))
    for index in (5, -6):
        with pytest.raises(IndexError):
            dataset[index]
    assert len(ShapesDataset("test", length=0)) == 0
    with pytest.raises(ValueError, match="split"):
        ShapesDataset("validation")
    with pytest.raises(ValueError, match="length"):
        ShapesDataset("train", length=-1)


def test_dataset_applies_transforms_and_cache_hands_out_copies():
    def flip(image, target):
        return image.flip(-1), {**target, "flipped": True}

    image, target = ShapesDataset("train", length=3, transforms=flip)[1]
    torch.testing.assert_close(image, make_sample(1, "train", DEFAULT)[0].flip(-1))
    assert target["flipped"]
    cached = ShapesDataset("train", length=3, cache=True)
    image, target = cached[0]
    image.zero_()
    target["boxes"].zero_()
    assert_samples_equal(cached[0], make_sample(0, "train", DEFAULT))


def test_collate_fn_and_data_loader():
    dataset = ShapesDataset("val", length=6)
    loader = DataLoader(dataset, batch_size=4, collate_fn=collate_fn, num_workers=0)
    batches = list(loader)
    assert [len(images) for images, _ in batches] == [4, 2]
    images, targets = batches[0]
    assert isinstance(images, list) and isinstance(targets, list)
    assert_samples_equal((images[3], targets[3]), dataset[3])
    torch.testing.assert_close(stack_images(images), torch.stack([dataset[i][0] for i in range(4)]))
    assert collate_fn([]) == ([], [])


def test_stack_images_validates():
    image = torch.zeros(3, 8, 8)
    assert stack_images([image, image]).shape == (2, 3, 8, 8)
    with pytest.raises(ValueError, match=r"images\[1\]"):
        stack_images([image, torch.zeros(3, 8, 9)])
    with pytest.raises(ValueError, match=r"images\[0\]"):
        stack_images([torch.zeros(8, 8)])
    with pytest.raises(ValueError, match="images"):
        stack_images([])


def test_load_split_stacks_the_first_samples():
    images, targets = load_split("val", 3)
    assert images.shape == (3, 3, 128, 128) and len(targets) == 3
    for i in range(3):
        image, target = make_sample(i, "val")
        assert torch.equal(images[i], image) and torch.equal(targets[i]["boxes"], target["boxes"])
    with pytest.raises(ValueError, match="count must be an int >= 1, got 0"):
        load_split("val", 0)
