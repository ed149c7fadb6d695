"""Draw the import graph between SpecOps' layer packages into docs/architecture.png.

The graph is the real one: grimp reads every import in ``specops`` and ``specops_testkit`` and
the module-level imports are summed per layer package.  The layer order is read from the
``layers`` contract in pyproject.toml (the one ``lint-imports`` enforces), so the picture and the
contract cannot disagree on the order.  An import that runs against the order (upwards, or from
the product into the test kit) is drawn in red and printed; ``lint-imports`` is what fails CI.

    $VENV/bin/python hack/architecture-diagram.py [--out docs/architecture.png]
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import grimp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

ROOT = Path(__file__).resolve().parent.parent
PRODUCT, KIT = "specops", "specops_testkit"
# The layers that do I/O (Kopf, the Kubernetes client, HTTP); everything below them is pure.
IO_LAYERS = {"specops.cli", "specops.controller"}
# Top to bottom in the kit column: who imports whom inside the kit reads downwards.
KIT_ORDER = ("commands", "sim", "testbed", "emulator")

BOX_W, BOX_H, STEP = 3.6, 0.78, 1.12
PRODUCT_X, KIT_X = 0.0, 7.2
IO_COLOUR, PURE_COLOUR, KIT_COLOUR = "#f6d7a7", "#cfe3f6", "#dfeccf"
EDGE_COLOUR, BAD_COLOUR = "#34495e", "#d62728"
# One colour per kit package, so each one's imports of the product can be followed.
KIT_COLOURS = ("#7f7f7f", "#2ca02c", "#8c564b", "#9467bd", "#17becf")
PORT_SPAN = 0.3  # how far from a box's centre line arrows may start or end


@dataclass(frozen=True)
class Box:
    package: str
    x: float
    y: float

    @property
    def left(self) -> float:
        return self.x - BOX_W / 2

    @property
    def right(self) -> float:
        return self.x + BOX_W / 2


class Ports:
    """Where on a box's side each arrow starts and ends, so arrows do not share one point.

    Left side (arcs inside the product): at the source, the farther the target the higher the
    start; at the target, the farther the source the lower the end; so longer arcs nest outside
    shorter ones instead of crossing them.  Right side (the kit's imports): spread in order."""

    def __init__(
        self, edges: Counter[tuple[str, str]], rank: dict[str, int], kit_rank: dict[str, int]
    ) -> None:
        skips = [(a, b) for a, b in edges if a in rank and b in rank and abs(rank[b] - rank[a]) > 1]
        distance = {(a, b): abs(rank[b] - rank[a]) for a, b in skips}
        self._out = {a: sorted((e for e in skips if e[0] == a), key=distance.__getitem__) for a, _ in skips}
        self._in = {b: sorted((e for e in skips if e[1] == b), key=distance.__getitem__) for _, b in skips}
        crossing = [(a, b) for a, b in edges if a in kit_rank and b in rank]
        self._kit_out = {
            a: sorted((e for e in crossing if e[0] == a), key=lambda e: rank[e[1]]) for a, _ in crossing
        }
        self._kit_in = {
            b: sorted((e for e in crossing if e[1] == b), key=lambda e: kit_rank[e[0]]) for _, b in crossing
        }

    @staticmethod
    def _spread(items: list[tuple[str, str]], edge: tuple[str, str], upwards: bool) -> float:
        if len(items) < 2:
            return 0.0
        share = items.index(edge) / (len(items) - 1)
        return (-PORT_SPAN + 2 * PORT_SPAN * share) * (1 if upwards else -1)

    def left(self, a: str, b: str) -> tuple[float, float]:
        return (
            self._spread(self._out[a], (a, b), upwards=True),
            self._spread(self._in[b], (a, b), upwards=False),
        )

    def right(self, a: str, b: str) -> tuple[float, float]:
        return (
            self._spread(self._kit_out[a], (a, b), upwards=False),
            self._spread(self._kit_in[b], (a, b), upwards=False),
        )


def layer_order(pyproject: Path) -> list[str]:
    """The ``layers`` contract's layers, top first."""
    config = tomllib.loads(pyproject.read_text())
    for contract in config["tool"]["importlinter"]["contracts"]:
        if contract.get("type") == "layers":
            return [str(layer) for layer in contract["layers"]]
    raise SystemExit(f"{pyproject}: no import-linter contract of type 'layers'")


def package_of(module: str) -> str | None:
    """The layer package a module belongs to (``specops.plan.reconcile`` -> ``specops.plan``);
    None for the bare root packages (``specops.__init__`` holds only the version)."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) >= 2 else None


def package_edges(graph: grimp.ImportGraph) -> Counter[tuple[str, str]]:
    """Direct imports between layer packages, counted as (importing module, imported module) pairs."""
    edges: Counter[tuple[str, str]] = Counter()
    for module in graph.modules:
        for imported in graph.find_modules_directly_imported_by(module):
            a, b = package_of(module), package_of(imported)
            if a is not None and b is not None and a != b:
                edges[(a, b)] += 1
    return edges


def module_names(graph: grimp.ImportGraph, package: str) -> str:
    """The modules a package holds, for the box's second line."""
    children = sorted(c.rsplit(".", 1)[1] for c in graph.find_children(package))
    names = [n for n in children if not n.startswith("_")]
    return ", ".join(names) if names else package.rsplit(".", 1)[1] + ".py"


def wrap(text: str, width: int = 40) -> str:
    lines: list[str] = []
    for word in text.split(" "):
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return "\n".join(lines)


def draw_box(ax: Axes, box: Box, colour: str, detail: str, edge: str = "#555555") -> None:
    ax.add_patch(
        FancyBboxPatch(
            (box.left, box.y - BOX_H / 2),
            BOX_W,
            BOX_H,
            boxstyle="round,pad=0.02,rounding_size=0.08",
            facecolor=colour,
            edgecolor=edge,
            linewidth=1.0 if edge == "#555555" else 2.0,
            zorder=2,
        )
    )
    ax.text(
        box.x,
        box.y + 0.17,
        box.package,
        ha="center",
        va="center",
        fontsize=10.5,
        fontweight="bold",
        family="monospace",
        zorder=3,
    )
    ax.text(
        box.x,
        box.y - 0.15,
        wrap(detail),
        ha="center",
        va="center",
        fontsize=7,
        color="#333333",
        zorder=3,
        linespacing=1.0,
    )


def arrow(
    ax: Axes,
    start: tuple[float, float],
    end: tuple[float, float],
    colour: str,
    width: float,
    rad: float = 0.0,
    style: str = "-|>",
    linestyle: str = "-",
    alpha: float = 1.0,
) -> None:
    ax.add_patch(
        FancyArrowPatch(
            start,
            end,
            arrowstyle=style,
            mutation_scale=11,
            color=colour,
            linewidth=width,
            connectionstyle=f"arc3,rad={rad}",
            linestyle=linestyle,
            alpha=alpha,
            zorder=1,
            shrinkA=0,
            shrinkB=0,
        )
    )


def draw(out: Path) -> list[str]:
    """Draw the diagram; return the imports that run against the layer order."""
    layers = layer_order(ROOT / "pyproject.toml")
    graph = grimp.build_graph(PRODUCT, KIT, include_external_packages=False)
    edges = package_edges(graph)
    kit_packages = [f"{KIT}.{name}" for name in KIT_ORDER if f"{KIT}.{name}" in graph.modules]
    kit_packages += sorted(set(graph.find_children(KIT)) - set(kit_packages))

    top = (len(layers) - 1) * STEP
    boxes = {layer: Box(layer, PRODUCT_X, top - i * STEP) for i, layer in enumerate(layers)}
    kit_step = top / max(len(kit_packages) - 1, 1) * 0.62
    for i, package in enumerate(kit_packages):
        boxes[package] = Box(package, KIT_X, top - 0.5 * STEP - i * kit_step)

    fig, ax = plt.subplots(figsize=(12.5, 11.5))
    ax.set_xlim(PRODUCT_X - BOX_W / 2 - 3.2, KIT_X + BOX_W / 2 + 1.3)
    ax.set_ylim(-1.6, top + 1.7)
    ax.axis("off")

    for layer in layers:
        draw_box(
            ax, boxes[layer], IO_COLOUR if layer in IO_LAYERS else PURE_COLOUR, module_names(graph, layer)
        )
    for i, package in enumerate(kit_packages):
        draw_box(
            ax, boxes[package], KIT_COLOUR, module_names(graph, package), KIT_COLOURS[i % len(KIT_COLOURS)]
        )

    rank = {layer: i for i, layer in enumerate(layers)}
    kit_rank = {package: i for i, package in enumerate(kit_packages)}
    ports = Ports(edges, rank, kit_rank)
    violations: list[str] = []
    for (a, b), count in sorted(edges.items()):
        if a not in boxes or b not in boxes:
            continue
        width = 0.8 + 0.2 * min(count, 8)
        src, dst = boxes[a], boxes[b]
        if a in rank and b in rank:  # inside the product
            bad = rank[b] <= rank[a]
            colour = BAD_COLOUR if bad else EDGE_COLOUR
            if abs(rank[b] - rank[a]) == 1:
                side = BOX_H / 2 if bad else -BOX_H / 2
                arrow(ax, (src.x, src.y + side), (dst.x, dst.y - side), colour, width)
            else:  # skips layers: an arc on the left, the longer ones outside the shorter ones
                start, end = ports.left(a, b)
                arrow(
                    ax,
                    (src.left, src.y + start),
                    (dst.left, dst.y + end),
                    colour,
                    width,
                    rad=-0.5 if bad else 0.5,
                )
        elif a in kit_rank and b in kit_rank:  # inside the kit
            bad = kit_rank[b] <= kit_rank[a]
            colour = BAD_COLOUR if bad else KIT_COLOURS[kit_rank[a] % len(KIT_COLOURS)]
            if kit_rank[b] - kit_rank[a] == 1:
                arrow(ax, (src.x, src.y - BOX_H / 2), (dst.x, dst.y + BOX_H / 2), colour, width)
            else:
                arrow(ax, (src.right, src.y - 0.15), (dst.right, dst.y + 0.15), colour, width, rad=-0.45)
        else:  # between the kit and the product: only the kit may import the product
            bad = a.startswith(f"{PRODUCT}.")
            colour = BAD_COLOUR if bad else KIT_COLOURS[kit_rank.get(a, 0) % len(KIT_COLOURS)]
            start, end = ports.right(a, b)
            arrow(
                ax,
                (src.left, src.y + start),
                (dst.right, dst.y + end),
                colour,
                0.6 + 0.12 * min(count, 8),
                alpha=0.7,
            )
        if bad:
            violations.append(f"{a} -> {b} ({count} imports)")

    # The kit's commands reach the CLI through entry points: looked up at run time, never imported.
    cli, commands = boxes[layers[0]], boxes.get(f"{KIT}.commands")
    if commands is not None:
        arrow(
            ax,
            (cli.right, cli.y + 0.12),
            (commands.x, commands.y + BOX_H / 2),
            "#888888",
            1.2,
            rad=-0.25,
            linestyle="--",
        )
        ax.text(
            (cli.right + commands.x) / 2 + 0.3,
            cli.y + 0.62,
            "entry points 'specops.commands'\n(looked up when installed, not imported)",
            ha="center",
            fontsize=7.5,
            color="#555555",
            style="italic",
        )

    ax.text(
        PRODUCT_X,
        top + 1.35,
        "operator/specops  (the product: wheel and image)",
        ha="center",
        fontsize=12,
        fontweight="bold",
    )
    ax.text(
        KIT_X,
        top + 1.35,
        "testkit/specops_testkit  (never shipped)",
        ha="center",
        fontsize=12,
        fontweight="bold",
    )
    legend = [
        (IO_COLOUR, "does I/O (Kopf, Kubernetes, HTTP)"),
        (PURE_COLOUR, "pure: no Kopf, Kubernetes or HTTP client"),
        (KIT_COLOUR, "test kit: imports the product, never imported by it"),
    ]
    for i, (colour, text) in enumerate(legend):
        y = -0.75 - i * 0.32
        ax.add_patch(
            FancyBboxPatch(
                (PRODUCT_X - BOX_W / 2 - 3.0, y - 0.1),
                0.35,
                0.2,
                boxstyle="square,pad=0",
                facecolor=colour,
                edgecolor="#555555",
            )
        )
        ax.text(PRODUCT_X - BOX_W / 2 - 2.5, y, text, va="center", fontsize=8.5)
    ax.text(
        KIT_X + BOX_W / 2,
        -1.35,
        "Arrows: 'imports' (width: number of module imports), drawn from the code by grimp.\n"
        "Layer order: the 'layers' contract in pyproject.toml. Red: an import against the order.",
        ha="right",
        fontsize=8,
        color="#444444",
    )

    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return violations


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "architecture.png")
    args = parser.parse_args()
    violations = draw(args.out)
    print(f"wrote {args.out}")
    for v in violations:
        print(f"against the layer order: {v}", file=sys.stderr)
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
