"""Random mazes by a randomised Prim's algorithm, vectorised over a batch of mazes in torch.

We follow the textbook description of randomised Prim's algorithm (Wikipedia, "Maze generation
algorithm", *Iterative randomized Prim's algorithm*) in its block form, where every grid cell is
either a wall or a passage (there are no thin walls between cells):

1. Start from a grid full of walls; turn one random interior cell into a passage, and put its
   wall neighbours (up, down, left, right) in the frontier.
2. While the frontier is not empty, take a random cell out of it. If exactly one of its four
   neighbours is a passage (the cell would join the maze without closing a loop), turn it into
   a passage and put its interior wall neighbours that were never drawn in the frontier.

Each accepted cell touches exactly one passage when it joins, so the passages always form one
tree: every passage is reachable from every other, there are no loops and no open 2 x 2
blocks. The form works for any grid size, odd or even (the lattice form with rooms at odd
coordinates needs odd sizes). The border is never carved: the outer wall stays closed.

Every maze of the batch takes one step of the loop at a time, with tensor operations over the
batch; the loop runs at most once per interior cell (a drawn cell never re-enters the
frontier: its passage-neighbour count can only grow), and stops when all frontiers are empty.
"""

from __future__ import annotations

import torch

__all__ = ["generate_mazes", "interior_mask", "neighbour_offsets", "random_cells"]


def neighbour_offsets(grid: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Return the flat-index offsets of the up, down, left and right neighbours: ``(4,)``."""
    return torch.tensor([-grid, grid, -1, 1], device=device)


def interior_mask(grid: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Return ``(grid * grid,)`` bool: True for the cells inside the outer wall."""
    inside = torch.zeros(grid, grid, dtype=torch.bool, device=device)
    inside[1:-1, 1:-1] = True
    return inside.flatten()


def random_cells(allowed: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Draw one cell per row of ``allowed`` ``(batch, cells)``, uniformly among the True ones.

    A row with no True cell gives an arbitrary index; callers mask it out. The draw is an
    argmax of uniform scores: one batched call, no synchronisation with the host.
    """
    scores = torch.rand(allowed.shape, generator=generator, device=allowed.device)
    return scores.masked_fill(~allowed, -1.0).argmax(dim=1)


def generate_mazes(n: int, grid: int, generator: torch.Generator) -> torch.Tensor:
    """Draw ``n`` mazes of ``grid`` x ``grid`` cells, outer wall included.

    Args:
        n: number of mazes.
        grid: cells per side, the closed outer wall included (at least 4).
        generator: the source of randomness, on the device the mazes are built on.

    Returns:
        Walls ``(n, grid, grid)`` bool: True for a wall, False for a passage.
    """
    if grid < 4:
        raise ValueError(f"a maze needs at least 2 x 2 interior cells; grid {grid} is too small")
    device = generator.device
    cells = grid * grid
    inside = interior_mask(grid, device).expand(n, cells)
    offsets = neighbour_offsets(grid, device)
    batch = torch.arange(n, device=device)
    passage = torch.zeros(n, cells, dtype=torch.bool, device=device)
    drawn = torch.zeros(n, cells, dtype=torch.bool, device=device)
    frontier = torch.zeros(n, cells, dtype=torch.bool, device=device)

    def carve(cell: torch.Tensor, accept: torch.Tensor) -> None:
        """Carve ``cell`` where ``accept``; put its fresh wall neighbours in the frontier."""
        passage[batch, cell] |= accept
        neighbours = cell.unsqueeze(1) + offsets  # interior cells: never off the grid
        fresh = inside.gather(1, neighbours) & ~passage.gather(1, neighbours)
        fresh &= ~drawn.gather(1, neighbours) & accept.unsqueeze(1)
        frontier.scatter_(1, neighbours, frontier.gather(1, neighbours) | fresh)

    # ---- randomised Prim's algorithm, block form, one step for every maze at a time ----
    start = random_cells(inside, generator)
    drawn[batch, start] = True
    carve(start, torch.ones(n, dtype=torch.bool, device=device))
    for _ in range(int(inside[0].sum())):
        pending = frontier.any(dim=1)
        if not bool(pending.any()):  # generation runs once per batch, off the env's hot path
            break
        cell = torch.where(pending, random_cells(frontier, generator), start)
        frontier[batch, cell] &= ~pending
        drawn[batch, cell] |= pending
        touching = passage.gather(1, cell.unsqueeze(1) + offsets).sum(dim=1)
        carve(cell, pending & (touching == 1))
    return ~passage.view(n, grid, grid)
