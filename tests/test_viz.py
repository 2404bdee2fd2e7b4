"""The plotting helpers draw what they promise, on the headless Agg backend."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from cs_dense import viz  # noqa: E402


@pytest.fixture
def ax():
    fig, axes = plt.subplots()
    yield axes
    plt.close(fig)


def rectangles(axes) -> list[Rectangle]:
    return [p for p in axes.patches if isinstance(p, Rectangle)]


def test_show_image_puts_pixel_centres_on_integers(ax, device):
    image = torch.rand(3, 6, 10, device=device)
    shown = viz.show_image(ax, image)
    assert list(ax.images) == [shown]
    np.testing.assert_allclose(ax.images[0].get_array(), image.permute(1, 2, 0).cpu().numpy(), rtol=0, atol=0)
    # imshow's default extent: pixel j spans [j - 0.5, j + 0.5]
    assert ax.get_xlim() == (-0.5, 9.5)
    assert ax.get_ylim() == (5.5, -0.5)


def test_show_image_rejects_wrong_shape(ax):
    with pytest.raises(ValueError, match=r"\[3, H, W\]"):
        viz.show_image(ax, torch.rand(6, 10))


def test_boxes_drawn_later_do_not_move_the_view(ax):
    viz.show_image(ax, torch.rand(3, 8, 8))
    viz.draw_boxes(ax, torch.tensor([[-20.0, -20, 50, 50]]))
    assert ax.get_xlim() == (-0.5, 7.5)


def test_box_edges_follow_pixel_coverage(ax, device):
    # (3, 3, 8, 8) covers pixels 3..7; imshow centres them at 3..7, edges at 2.5 and 7.5
    viz.show_image(ax, torch.zeros(3, 12, 12, device=device))
    drawn = viz.draw_boxes(ax, torch.tensor([[3.0, 3, 8, 8], [0, 1, 2, 5]], device=device))
    assert rectangles(ax) == drawn and len(drawn) == 2
    assert drawn[0].get_xy() == (2.5, 2.5)
    assert (drawn[0].get_width(), drawn[0].get_height()) == (5, 5)
    assert drawn[1].get_xy() == (-0.5, 0.5)
    assert (drawn[1].get_width(), drawn[1].get_height()) == (2, 4)


def test_box_captions_colours_and_styles(ax):
    boxes = torch.tensor([[0.0, 0, 4, 4], [2, 2, 6, 6], [1, 1, 3, 3]])
    viz.draw_boxes(ax, boxes, labels=torch.tensor([1, 2, 1]), scores=torch.tensor([0.9, 0.456, 0.1]),
                   class_names=("background", "circle", "square"), linestyle="--")
    assert [t.get_text() for t in ax.texts] == ["circle 0.90", "square 0.46", "circle 0.10"]
    edge = [r.get_edgecolor() for r in rectangles(ax)]
    assert edge[0] == edge[2] == to_rgba(viz.class_color(1)) != edge[1]
    assert all(r.get_linestyle() == "--" and not r.get_fill() for r in rectangles(ax))


def test_box_colours_given_explicitly(ax):
    viz.draw_boxes(ax, torch.tensor([[0.0, 0, 1, 1], [1, 1, 2, 2]]), colors="red")
    viz.draw_boxes(ax, torch.tensor([[0.0, 0, 1, 1], [1, 1, 2, 2]]), colors=["blue", "green"])
    assert [r.get_edgecolor() for r in rectangles(ax)] == [to_rgba(c) for c in ("red", "red", "blue", "green")]
    assert not ax.texts  # no labels, no scores: no captions


def test_no_boxes_draw_nothing(ax):
    assert viz.draw_boxes(ax, torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.long)) == []
    assert not ax.patches and not ax.texts


def test_draw_boxes_rejects_mismatched_arguments(ax):
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        viz.draw_boxes(ax, torch.zeros(2, 5))
    with pytest.raises(ValueError, match="scores"):
        viz.draw_boxes(ax, torch.zeros(2, 4), scores=torch.zeros(3))


def test_overlay_masks_tints_mask_pixels_only(ax):
    masks = torch.zeros(2, 4, 5, dtype=torch.uint8)
    masks[0, 1, 1] = 1
    masks[1, 2:, 3:] = 1
    overlay = viz.overlay_masks(ax, masks, colors=["red", "blue"], alpha=0.5)
    assert len(ax.images) == 1
    rgba = overlay.get_array()
    assert rgba.shape == (4, 5, 4)
    np.testing.assert_allclose(rgba[1, 1], (1, 0, 0, 0.5))
    np.testing.assert_allclose(rgba[3, 4], (*to_rgba("blue")[:3], 0.5))
    assert (rgba[..., 3] > 0).sum() == 1 + 4  # every other pixel stays transparent


def test_overlay_masks_default_colours_skip_background(ax):
    rgba = viz.overlay_masks(ax, torch.ones(2, 2, 2, dtype=torch.bool)).get_array()
    np.testing.assert_allclose(rgba[0, 0], (*to_rgba(viz.PALETTE[2])[:3], 0.4))  # the later mask wins


def test_overlay_masks_checks_colours(ax):
    with pytest.raises(ValueError, match="colors"):
        viz.overlay_masks(ax, torch.zeros(2, 3, 3, dtype=torch.bool), colors=["red"])


def test_pr_curve_draws_raw_points_and_envelope(ax):
    # the notebook's worked example: TP, TP, FP, TP, FP with 3 objects
    precision = torch.tensor([1, 1, 2 / 3, 3 / 4, 3 / 5], dtype=torch.float64)
    recall = torch.tensor([1 / 3, 2 / 3, 2 / 3, 1, 1], dtype=torch.float64)
    lines = viz.plot_pr_curve(ax, precision, recall, label="model")
    assert len(ax.lines) == len(lines) == 2
    raw, envelope = lines
    np.testing.assert_allclose(raw.get_xdata(), recall)
    np.testing.assert_allclose(raw.get_ydata(), precision)
    np.testing.assert_allclose(envelope.get_xdata(), [0, 1 / 3, 2 / 3, 2 / 3, 1, 1])
    np.testing.assert_allclose(envelope.get_ydata(), [1, 1, 1, 3 / 4, 3 / 4, 3 / 5])
    assert envelope.get_drawstyle() == "steps-pre"
    assert [line.get_label() for line in lines] == ["model", "model (interpolated)"]
    # the area under the envelope's steps is the all-point AP, 11/12
    x, y = envelope.get_xdata(), envelope.get_ydata()
    assert np.sum(np.diff(x) * y[1:]) == pytest.approx(11 / 12)


def test_pr_curve_without_envelope(ax):
    viz.plot_pr_curve(ax, torch.tensor([1.0, 0.5]), torch.tensor([0.5, 0.5]), interpolated=False)
    assert len(ax.lines) == 1
    assert ax.get_xlabel() == "recall" and ax.get_ylabel() == "precision"


def test_pr_curve_rejects_unequal_lengths(ax):
    with pytest.raises(ValueError, match="same length"):
        viz.plot_pr_curve(ax, torch.ones(3), torch.ones(2))


def test_label_image_colours_each_class_with_the_palette():
    from matplotlib.colors import to_rgb

    labels = torch.tensor([[0, 1], [3, 9]])
    rgb = viz.label_image(labels)
    assert rgb.shape == (3, 2, 2) and rgb.dtype == torch.float32
    for (i, j), color in {(0, 0): "black", (0, 1): viz.PALETTE[1], (1, 0): viz.PALETTE[3], (1, 1): viz.PALETTE[1]}.items():
        assert rgb[:, i, j].tolist() == pytest.approx(list(to_rgb(color)))
    with pytest.raises(ValueError, match="integer tensor"):
        viz.label_image(torch.zeros(2, 2))
    with pytest.raises(ValueError, match="non-negative"):
        viz.label_image(torch.tensor([[-1]]))
