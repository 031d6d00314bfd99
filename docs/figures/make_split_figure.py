"""Write docs/figures/split.svg: what medsplit splits and what crosses the cut.

    python docs/figures/make_split_figure.py

Plain SVG written by hand (no plotting library), so the figure is small, sharp at any zoom and
reviewable as text. Top: the two-part ResNet split of the retinopathy task (the hospital keeps the
photographs; the labels go to the server, which computes the loss). Bottom: the four-part U-shaped
U-Net of the lung task (the masks and the loss stay at the hospital).
"""

from __future__ import annotations

from pathlib import Path
from xml.sax.saxutils import escape

WIDTH, HEIGHT = 960, 430
HOSPITAL, SERVER, DATA = "#e8f1fb", "#fdf0e1", "#eef7ee"
LINE = "#33475b"


def box(x, y, w, h, fill, title, sub=""):
    parts = [f'<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="8" fill="{fill}" stroke="{LINE}" stroke-width="1.5"/>',
             f'<text x="{x + w / 2}" y="{y + h / 2 - (6 if sub else -5)}" text-anchor="middle" font-size="15" font-weight="600">{escape(title)}</text>']
    if sub:
        parts.append(f'<text x="{x + w / 2}" y="{y + h / 2 + 14}" text-anchor="middle" font-size="12">{escape(sub)}</text>')
    return "\n".join(parts)


def arrow(x1, y1, x2, y2, label="", colour=LINE, dy=-8):
    mid_x, mid_y = (x1 + x2) / 2, (y1 + y2) / 2
    out = f'<line x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}" stroke="{colour}" stroke-width="2" marker-end="url(#head)"/>'
    if label:
        out += f'\n<text x="{mid_x}" y="{mid_y + dy}" text-anchor="middle" font-size="12" fill="{colour}">{escape(label)}</text>'
    return out


def region(x, y, w, h, fill, label):
    return (f'<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="12" fill="{fill}" stroke="none" opacity="0.55"/>\n'
            f'<text x="{x + 10}" y="{y + 18}" font-size="13" font-style="italic">{escape(label)}</text>')


def figure() -> str:
    items = [
        # Retinopathy: two parts.
        '<text x="20" y="30" font-size="16" font-weight="700">Retinopathy: split ResNet, cut at CUT (two parts)</text>',
        region(20, 45, 380, 150, HOSPITAL, "each hospital (keeps its photographs)"),
        region(560, 45, 380, 150, SERVER, "server (never sees an image)"),
        box(40, 80, 110, 60, DATA, "fundus photo"),
        box(200, 80, 180, 60, "#ffffff", "layers 0..CUT", "client part"),
        box(580, 80, 200, 60, "#ffffff", "layers CUT+1..end", "server part"),
        box(810, 80, 110, 60, "#ffffff", "loss", "(labels sent)"),
        arrow(150, 110, 198, 110),
        arrow(380, 100, 578, 100, "activations (forward)"),
        arrow(578, 128, 382, 128, "gradients (backward)", colour="#b5541c", dy=18),
        arrow(780, 110, 808, 110),
        # Lungs: four parts, U-shaped.
        '<text x="20" y="245" font-size="16" font-weight="700">Lungs: U-shaped split U-Net (four parts; masks never leave the hospital)</text>',
        region(20, 260, 380, 155, HOSPITAL, "each hospital (keeps images, masks, loss)"),
        region(560, 260, 380, 155, SERVER, "server"),
        box(40, 290, 160, 50, "#ffffff", "client encoder"),
        box(40, 355, 160, 50, "#ffffff", "client decoder + loss"),
        box(620, 290, 160, 50, "#ffffff", "server encoder"),
        box(620, 355, 160, 50, "#ffffff", "server decoder"),
        arrow(200, 300, 618, 300, "activations up"),
        arrow(618, 326, 202, 326, "gradients down", colour="#b5541c", dy=14),
        arrow(618, 372, 202, 372, "features down", dy=-8),
        arrow(202, 395, 618, 395, "gradients up", colour="#b5541c", dy=16),
        arrow(120, 340, 120, 353, colour="#6b7b8c"),
        '<text x="128" y="351" font-size="11" fill="#6b7b8c">skips stay local</text>',
        arrow(700, 340, 700, 353),
    ]
    defs = (f'<defs><marker id="head" markerWidth="10" markerHeight="8" refX="9" refY="4" orient="auto">'
            f'<path d="M0,0 L10,4 L0,8 z" fill="{LINE}"/></marker></defs>')
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" '
            f'font-family="Helvetica, Arial, sans-serif" fill="{LINE}">\n<title>What medsplit splits</title>\n{defs}\n'
            f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>\n' + "\n".join(items) + "\n</svg>\n")


if __name__ == "__main__":
    out = Path(__file__).with_name("split.svg")
    out.write_text(figure(), encoding="utf-8")
    print(f"wrote {out}")
