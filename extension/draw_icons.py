"""The extension's icons (extension/src/icons/icon-N.png), drawn with Pillow:

    python extension/draw_icons.py          # rewrites them; build.py copies them into dist

A dark rounded tile holding three bars in tab-group colours, left-aligned like sorted tabs: what
the extension does, legible at 16 pixels in the toolbar. Each size is drawn four times larger
and scaled down, so the edges are smooth; the same Pillow draws the same pixels, which
tests/test_extension_build.py checks against the files.
"""

import sys
from pathlib import Path

from PIL import Image, ImageDraw

ICONS = Path(__file__).resolve().parent / "src" / "icons"
SIZES = (16, 32, 48, 128)           # Chrome's toolbar, Windows, the extensions page, the store
SUPERSAMPLE = 4
TILE = (31, 41, 55, 255)            # slate, a background either theme shows it on
# chrome.tabGroups' blue, pink and green as Chrome draws them (the Dev, Social, Shopping groups)
BARS = (((26, 115, 232, 255), 0.72), ((208, 24, 132, 255), 0.50), ((24, 128, 56, 255), 0.62))


def draw(size):
    """The icon at `size` x `size` pixels (RGBA)."""
    big = size * SUPERSAMPLE
    image = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    pen = ImageDraw.Draw(image)
    pen.rounded_rectangle((0, 0, big - 1, big - 1), radius=round(big * 0.22), fill=TILE)
    margin, gap = big * 0.19, big * 0.08
    height = (big - 2 * margin - 2 * gap) / 3
    for k, (colour, share) in enumerate(BARS):
        top = margin + k * (height + gap)
        right = margin + share * (big - 2 * margin) / max(s for _, s in BARS)
        pen.rounded_rectangle((margin, top, right, top + height), radius=height / 2, fill=colour)
    return image.resize((size, size), Image.LANCZOS)


def main(directory=ICONS):
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for size in SIZES:
        draw(size).save(directory / f"icon-{size}.png", optimize=True)
    print(f"wrote {', '.join(f'icon-{s}.png' for s in SIZES)} in {directory}")


if __name__ == "__main__":
    main(*sys.argv[1:2])
