"""Is a figure legible on an 800-pixel-wide page? Measured on matplotlib's own text boxes.

The report shows every figure at the width of its column; on an 800 px window that is about
DISPLAY_PX CSS pixels (the page's padding and the figure's frame taken off). A text of `size`
points in a figure `width` inches wide is then `size / 72 * DISPLAY_PX / width` pixels high;
MIN_TEXT_PT (9 pt = 12 CSS px) is the smallest a person reads without zooming. Every text box
must also lie inside the canvas (nothing clipped) and no two may overlap.
"""

from __future__ import annotations

from typing import Any

DISPLAY_PX = 720.0  # an 800 px window less the page padding and the figure frame
MIN_TEXT_PT = 9.0
CSS_PX_PER_PT = 96.0 / 72.0
FIG_WIDTH = 7.0  # inches: at DISPLAY_PX, 9 pt in the figure reads as 9.6 pt on the page
SLACK_PX = 1.0  # rounding of the renderer's boxes


def shown_points(size_pt: float, fig_width_in: float, display_px: float = DISPLAY_PX) -> float:
    """The size in CSS points at which a `size_pt` text shows when the figure is scaled to
    `display_px` CSS pixels wide."""
    px = size_pt / 72.0 * display_px / fig_width_in
    return px / CSS_PX_PER_PT


def _texts(fig: Any) -> list[Any]:
    """The texts a renderer draws: visible, non-empty, and for tick labels only the ticks
    inside the view (matplotlib keeps labels of ticks beyond the limits, undrawn)."""
    from matplotlib.text import Text

    tick_labels: set[int] = set()
    drawn: set[int] = set()
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                tick_labels.update((id(tick.label1), id(tick.label2)))
            for tick in axis._update_ticks():  # the ticks the axis draws
                drawn.update((id(tick.label1), id(tick.label2)))
    return [
        t
        for t in fig.findobj(Text)
        if t.get_visible() and t.get_text().strip() and (id(t) not in tick_labels or id(t) in drawn)
    ]


def text_problems(
    fig: Any,
    display_px: float = DISPLAY_PX,
    min_pt: float = MIN_TEXT_PT,
    saved_dpi: float | None = None,
) -> list[str]:
    """What keeps a drawn figure from being legible at `display_px`, one line per problem.

    A figure saved at `saved_dpi` narrower than `display_px` shows at its own width (the page
    shrinks images to fit, never enlarges them)."""
    width_in = fig.get_figwidth()
    if saved_dpi is not None:
        # Measured as saved: a layout in pixels (constrained layout's pads) moves with the dpi.
        fig.set_dpi(saved_dpi)
        display_px = min(display_px, width_in * saved_dpi)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    canvas = fig.bbox
    problems: list[str] = []
    boxes = []
    for t in _texts(fig):
        text = t.get_text().replace("\n", " ")
        shown = shown_points(t.get_fontsize(), width_in, display_px)
        if shown < min_pt - 1e-9:
            problems.append(f"{text!r}: {shown:.1f} pt at {display_px:g} px, under {min_pt:g} pt")
        box = t.get_window_extent(renderer)
        if (
            box.x0 < canvas.x0 - SLACK_PX
            or box.y0 < canvas.y0 - SLACK_PX
            or box.x1 > canvas.x1 + SLACK_PX
            or box.y1 > canvas.y1 + SLACK_PX
        ):
            problems.append(f"{text!r}: outside the canvas (clipped)")
        boxes.append((text, box))
    for i, (a, box_a) in enumerate(boxes):
        for b, box_b in boxes[i + 1 :]:
            overlap_x = min(box_a.x1, box_b.x1) - max(box_a.x0, box_b.x0)
            overlap_y = min(box_a.y1, box_b.y1) - max(box_a.y0, box_b.y0)
            if overlap_x > SLACK_PX and overlap_y > SLACK_PX:
                problems.append(f"{a!r} overlaps {b!r}")
    return problems


__all__ = ["DISPLAY_PX", "FIG_WIDTH", "MIN_TEXT_PT", "shown_points", "text_problems"]
