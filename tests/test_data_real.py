"""Real-dataset adapters on tiny fake COCO and VOC folders, and finding the data folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cs_dense.data import paths
from cs_dense.data.paths import find_data_dir
from cs_dense.data.real import VOC_CLASSES, CocoDetectionAdapter, VOCDetectionAdapter

H, W = 12, 14  # size of the fake COCO images


def column_major_rle(mask: np.ndarray) -> list[int]:
    """Reference encoder of COCO's uncompressed RLE: run lengths in column-major order,
    starting with a (possibly empty) run of zeros."""
    counts, current, run = [], 0, 0
    for value in mask.flatten(order="F"):
        if value != current:
            counts.append(run)
            current, run = value, 0
        run += 1
    counts.append(run)
    return counts


@pytest.fixture
def coco_folder(tmp_path: Path) -> tuple[Path, Path, np.ndarray]:
    """Three images: a polygon square plus a crowd RLE; nothing; a grayscale box."""
    images = tmp_path / "images"
    images.mkdir()
    pixels = np.zeros((H, W, 3), dtype=np.uint8)
    pixels[5, 4] = (10, 200, 255)
    Image.fromarray(pixels).save(images / "a.png")
    Image.fromarray(np.full((H, W, 3), 128, dtype=np.uint8)).save(images / "b.png")
    Image.fromarray(np.full((8, 9), 51, dtype=np.uint8)).save(images / "c.png")  # grayscale
    crowd = np.zeros((H, W), dtype=np.uint8)
    crowd[10:12, 0:3] = 1  # rows 10..11, columns 0..2
    annotations = {
        "images": [
            {"id": 5, "file_name": "a.png", "height": H, "width": W},
            {"id": 9, "file_name": "b.png", "height": H, "width": W},
            {"id": 11, "file_name": "c.png", "height": 8, "width": 9},
        ],
        # Category ids 3 and 7 -> labels 1 and 2, listed out of order on purpose.
        "categories": [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}],
        "annotations": [
            # Polygon with corners (2, 3) and (8, 9): columns 2..7, rows 3..8, 36 pixels.
            {"id": 1, "image_id": 5, "category_id": 7, "bbox": [2, 3, 6, 6], "area": 36,
             "iscrowd": 0, "segmentation": [[2, 3, 8, 3, 8, 9, 2, 9]]},
            {"id": 2, "image_id": 5, "category_id": 3, "bbox": [0, 10, 3, 2], "area": 6,
             "iscrowd": 1, "segmentation": {"counts": column_major_rle(crowd), "size": [H, W]}},
            {"id": 3, "image_id": 11, "category_id": 3, "bbox": [1, 1, 2, 3], "area": 6,
             "iscrowd": 0, "segmentation": [[1, 1, 3, 1, 3, 4, 1, 4]]},
        ],
    }
    ann_file = tmp_path / "instances.json"
    ann_file.write_text(json.dumps(annotations))
    return images, ann_file, crowd


def test_coco_polygon_crowd_and_category_mapping(coco_folder):
    root, ann_file, crowd = coco_folder
    dataset = CocoDetectionAdapter(root, ann_file)
    assert len(dataset) == 3
    assert dataset.classes == ("background", "cat", "dog")
    assert dataset.category_ids == (3, 7)
    assert dataset.has_masks
    image, target = dataset[0]
    assert image.dtype == torch.float32 and image.shape == (3, H, W)
    torch.testing.assert_close(image[:, 5, 4], torch.tensor([10, 200, 255]) / 255.0)
    assert target["image_id"] == 5
    torch.testing.assert_close(target["boxes"], torch.tensor([[2.0, 3.0, 8.0, 9.0], [0.0, 10.0, 3.0, 12.0]]))
    torch.testing.assert_close(target["labels"], torch.tensor([2, 1]))
    torch.testing.assert_close(target["iscrowd"], torch.tensor([0, 1]))
    torch.testing.assert_close(target["area"], torch.tensor([36.0, 6.0]))
    square = torch.zeros(H, W, dtype=torch.uint8)
    square[3:9, 2:8] = 1
    assert target["masks"].dtype == torch.uint8 and target["masks"].shape == (2, H, W)
    torch.testing.assert_close(target["masks"][0], square, rtol=0, atol=0)
    torch.testing.assert_close(target["masks"][1], torch.from_numpy(crowd), rtol=0, atol=0)
    torch.testing.assert_close(target["semantic"], square.long() * 2 + torch.from_numpy(crowd).long())


def test_coco_image_without_annotations_and_grayscale_image(coco_folder):
    root, ann_file, _ = coco_folder
    dataset = CocoDetectionAdapter(root, ann_file)
    image, target = dataset[1]
    assert target["image_id"] == 9
    assert target["boxes"].shape == (0, 4) and target["boxes"].dtype == torch.float32
    assert target["masks"].shape == (0, H, W) and target["masks"].dtype == torch.uint8
    for key, dtype in (("labels", torch.int64), ("area", torch.float32), ("iscrowd", torch.int64)):
        assert target[key].shape == (0,) and target[key].dtype == dtype, key
    torch.testing.assert_close(target["semantic"], torch.zeros(H, W, dtype=torch.int64))
    torch.testing.assert_close(image, torch.full((3, H, W), 128 / 255))
    gray, target = dataset[2]
    torch.testing.assert_close(gray, torch.full((3, 8, 9), 0.2))
    torch.testing.assert_close(target["boxes"], torch.tensor([[1.0, 1.0, 3.0, 4.0]]))
    assert target["masks"][0].sum() == 6


def test_coco_detection_only_file_has_no_masks_and_transforms_apply(coco_folder, tmp_path):
    root, ann_file, _ = coco_folder
    content = json.loads(ann_file.read_text())
    for ann in content["annotations"]:
        del ann["segmentation"]
    boxes_only = tmp_path / "boxes_only.json"
    boxes_only.write_text(json.dumps(content))
    dataset = CocoDetectionAdapter(root, boxes_only, transforms=lambda image, target: (image * 0, target))
    image, target = dataset[0]
    assert not dataset.has_masks and "masks" not in target and "semantic" not in target
    assert image.abs().sum() == 0
    torch.testing.assert_close(target["boxes"][0], torch.tensor([2.0, 3.0, 8.0, 9.0]))


def test_coco_missing_paths_raise_and_never_download(coco_folder, tmp_path):
    root, ann_file, _ = coco_folder
    with pytest.raises(FileNotFoundError, match="(?s)nowhere.*never downloads"):
        CocoDetectionAdapter(tmp_path / "nowhere", ann_file)
    with pytest.raises(FileNotFoundError, match="(?s)missing.json.*never downloads"):
        CocoDetectionAdapter(root, tmp_path / "missing.json")


# --------------------------------------------------------------------------------- VOC

VOC_XML = """<annotation>
  <filename>{name}.jpg</filename>
  <size><width>20</width><height>16</height><depth>3</depth></size>
  {objects}
</annotation>"""
VOC_OBJECT = """<object><name>{name}</name><difficult>{difficult}</difficult>
  <bndbox><xmin>{box[0]}</xmin><ymin>{box[1]}</ymin><xmax>{box[2]}</xmax><ymax>{box[3]}</ymax></bndbox>
</object>"""


def make_voc(root: Path, objects_by_image: dict[str, list[tuple[str, int, tuple[int, ...]]]]) -> Path:
    """Write ``root/VOCdevkit/VOC2012`` with one 20 x 16 JPEG and one XML per image."""
    voc = root / "VOCdevkit" / "VOC2012"
    for folder in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (voc / folder).mkdir(parents=True)
    for name, objects in objects_by_image.items():
        Image.fromarray(np.full((16, 20, 3), 90, dtype=np.uint8)).save(voc / "JPEGImages" / f"{name}.jpg")
        xml_objects = "".join(VOC_OBJECT.format(name=c, difficult=d, box=b) for c, d, b in objects)
        (voc / "Annotations" / f"{name}.xml").write_text(VOC_XML.format(name=name, objects=xml_objects))
    (voc / "ImageSets" / "Main" / "train.txt").write_text("\n".join(objects_by_image) + "\n")
    return voc


def test_voc_boxes_labels_and_difficult(tmp_path):
    make_voc(
        tmp_path,
        {
            "2008_000001": [("dog", 0, (1, 2, 10, 12)), ("person", 1, (5, 5, 20, 16))],
            "2008_000002": [],
        },
    )
    dataset = VOCDetectionAdapter(tmp_path, year="2012", image_set="train")
    assert len(dataset) == 2 and dataset.classes == VOC_CLASSES
    assert len(VOC_CLASSES) == 21 and VOC_CLASSES[12] == "dog" and VOC_CLASSES[15] == "person"
    image, target = dataset[0]
    assert image.dtype == torch.float32 and image.shape == (3, 16, 20)
    assert 0 <= image.min() and image.max() <= 1
    # VOC (1, 2, 10, 12) is 1-based inclusive: columns 0..9 and rows 1..11 from 0 -> [0, 1, 10, 12].
    torch.testing.assert_close(target["boxes"], torch.tensor([[0.0, 1.0, 10.0, 12.0], [4.0, 4.0, 20.0, 16.0]]))
    torch.testing.assert_close(target["labels"], torch.tensor([12, 15]))
    torch.testing.assert_close(target["difficult"], torch.tensor([False, True]))
    torch.testing.assert_close(target["area"], torch.tensor([110.0, 192.0]))
    torch.testing.assert_close(target["iscrowd"], torch.tensor([0, 0]))
    assert target["image_id"] == 0 and "masks" not in target and "semantic" not in target
    _, empty = dataset[-1]
    assert empty["image_id"] == 1
    assert empty["boxes"].shape == (0, 4) and empty["boxes"].dtype == torch.float32
    assert empty["labels"].shape == (0,) and empty["difficult"].dtype == torch.bool


def test_voc_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="(?s)nowhere.*never downloads"):
        VOCDetectionAdapter(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="VOC2012"):
        VOCDetectionAdapter(tmp_path)
    make_voc(tmp_path, {"a": [("unicorn", 0, (1, 1, 4, 4))]})
    with pytest.raises(FileNotFoundError, match="val.txt"):
        VOCDetectionAdapter(tmp_path, image_set="val")
    with pytest.raises(ValueError, match="year"):
        VOCDetectionAdapter(tmp_path, year="2013")
    with pytest.raises(ValueError, match="image_set"):
        VOCDetectionAdapter(tmp_path, year="2012", image_set="test")
    with pytest.raises(ValueError, match="unicorn"):
        VOCDetectionAdapter(tmp_path)[0]


# -------------------------------------------------------------------------- data folder


def make_course(root: Path, name: str = "cs_dense") -> Path:
    (root / "data").mkdir(parents=True)
    (root / "pyproject.toml").write_text(f'[project]\nname = "{name}"\nversion = "0.1"\n')
    return root / "data"


def test_find_data_dir_walks_up_to_the_course_root(tmp_path, monkeypatch):
    monkeypatch.delenv(paths.DATA_ENV_VAR, raising=False)
    data = make_course(tmp_path / "course")
    notebook_dir = tmp_path / "course" / "solutions" / "00_tasks"
    notebook_dir.mkdir(parents=True)
    assert find_data_dir(notebook_dir) == data.resolve()
    assert find_data_dir(str(tmp_path / "course")) == data.resolve()
    monkeypatch.chdir(notebook_dir)
    assert find_data_dir() == data.resolve()
    # The PEP 503 spelling of the name counts too.
    other = make_course(tmp_path / "dashed", name="cs-dense")
    assert find_data_dir(other.parent) == other.resolve()


def test_find_data_dir_ignores_other_projects_and_falls_back(tmp_path, monkeypatch):
    monkeypatch.delenv(paths.DATA_ENV_VAR, raising=False)
    make_course(tmp_path / "other", name="not_the_course")
    fallback = tmp_path / "package_data"
    monkeypatch.setattr(paths, "_package_data_dir", lambda: fallback)
    with pytest.raises(FileNotFoundError, match=paths.DATA_ENV_VAR):
        find_data_dir(tmp_path / "other")
    fallback.mkdir()
    assert find_data_dir(tmp_path / "other") == fallback


def test_find_data_dir_prefers_the_environment_variable(tmp_path, monkeypatch):
    make_course(tmp_path / "course")
    chosen = tmp_path / "elsewhere"
    chosen.mkdir()
    monkeypatch.setenv(paths.DATA_ENV_VAR, str(chosen))
    assert find_data_dir(tmp_path / "course") == chosen.resolve()
    monkeypatch.setenv(paths.DATA_ENV_VAR, str(tmp_path / "missing"))
    with pytest.raises(ValueError, match=paths.DATA_ENV_VAR):
        find_data_dir(tmp_path / "course")
