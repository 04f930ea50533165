"""The confusion matrix as a PNG, drawn with Pillow (host side).

Rows are the true categories, columns the predicted ones; each cell holds its count and is
shaded by the share of its row (white 0, dark blue 1), so a good classifier shows a dark
diagonal. Cell (i, j) spans x in [LEFT + j * CELL, LEFT + (j + 1) * CELL) and y in
[TOP + i * CELL, TOP + (i + 1) * CELL), which tests read back.
"""

CELL = 56
LEFT = 130
TOP = 130
MARGIN = 20
LOW = (255, 255, 255)
HIGH = (8, 48, 107)


def shade(share):
    """The colour of a cell holding `share` (0..1) of its row."""
    return tuple(round(lo + (hi - lo) * share) for lo, hi in zip(LOW, HIGH))


def write_confusion_png(confusion, path):
    from PIL import Image, ImageDraw, ImageFont

    labels, matrix = confusion["labels"], confusion["matrix"]
    n = len(labels)
    size = (LEFT + n * CELL + MARGIN, TOP + n * CELL + MARGIN)
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    for i, row in enumerate(matrix):
        total = sum(row) or 1
        for j, count in enumerate(row):
            x, y = LEFT + j * CELL, TOP + i * CELL
            share = count / total
            draw.rectangle([x, y, x + CELL - 1, y + CELL - 1], fill=shade(share), outline=(200, 200, 200))
            text = str(count)
            w = draw.textlength(text, font=font)
            draw.text((x + (CELL - w) / 2, y + CELL / 2 - 5), text, font=font,
                      fill="white" if share > 0.5 else "black")
    for k, label in enumerate(labels):
        draw.text((MARGIN, TOP + k * CELL + CELL / 2 - 5), label, font=font, fill="black")
        column = Image.new("RGB", (LEFT - MARGIN, 14), "white")
        ImageDraw.Draw(column).text((0, 0), label, font=font, fill="black")
        rotated = column.rotate(90, expand=True)
        image.paste(rotated, (LEFT + k * CELL + CELL // 2 - 7, MARGIN))
    draw.text((MARGIN, MARGIN), "true \\ predicted", font=font, fill="black")
    image.save(path, format="PNG")
    return path
