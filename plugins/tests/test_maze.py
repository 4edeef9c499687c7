"""The maze task: Prim's mazes, the rules of the env, its metrics, and the random-agent reference.

Run as a script to print the uniformly random policy's metrics on 1000 held-out mazes::

    python plugins/tests/test_maze.py
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import pytest
import torch
from metods_plugins.tasks.maze import (
    DOWN,
    LEFT,
    RIGHT,
    UP,
    MazeEnv,
    MazeTaskBatch,
    MazeTasks,
    split_parity,
)
from metods_plugins.tasks.maze_generation import generate_mazes
from pydantic import ValidationError

from metods_core.testing.torch_calls import CountTorchCalls

Policy = Callable[[torch.Tensor, MazeEnv], torch.Tensor]
CORRIDOR = [
    "#####",
    "#...#",
    "###.#",
    "#...#",
    "#####",
]
"""A hand-made 5 x 5 maze: one corridor from (1, 1) to (3, 1)."""


def make_env(
    batch: int = 8, seed: int = 0, split: str = "test", **config: Any
) -> tuple[MazeTasks, MazeEnv]:
    """Build the sampler and the env of ``batch`` tasks drawn with generator seed ``seed``."""
    sampler = MazeTasks(MazeTasks.Config(**config))
    tasks = sampler.sample(batch, split, torch.Generator().manual_seed(seed))  # type: ignore[arg-type]
    return sampler, sampler.make_env(tasks)


def corridor_env(batch: int, goal: tuple[int, int], **config: Any) -> MazeEnv:
    """Build an env of ``batch`` copies of ``CORRIDOR`` with the goal at ``goal`` (row, col)."""
    walls = torch.tensor([[char == "#" for char in row] for row in CORRIDOR])
    tasks = MazeTaskBatch(
        size=batch,
        split="test",
        seed=0,
        walls=walls.expand(batch, -1, -1).clone(),
        goal=torch.full((batch,), goal[0] * 5 + goal[1]),
    )
    return MazeTasks(MazeTasks.Config(size=5, **config)).make_env(tasks)


def free_neighbours(walls: torch.Tensor, cell: int) -> list[int]:
    """Return the free 4-neighbours of flat ``cell`` in ``walls`` ``(grid, grid)``."""
    grid = walls.shape[-1]
    flat = walls.flatten()
    return [cell + d for d in (-grid, grid, -1, 1) if not flat[cell + d]]


def distances_to(walls: torch.Tensor, goal: int) -> torch.Tensor:
    """Breadth-first search: steps from every cell to ``goal`` (``inf`` for unreachable)."""
    distance = torch.full((walls.numel(),), float("inf"))
    distance[goal] = 0
    queue = deque([goal])
    while queue:
        cell = queue.popleft()
        for neighbour in free_neighbours(walls, cell):
            if distance[neighbour] == float("inf"):
                distance[neighbour] = distance[cell] + 1
                queue.append(neighbour)
    return distance


def shortest_path_agent(env: MazeEnv) -> Policy:
    """Return a policy that knows the goal and walks the shortest path to it."""
    grid = int(env.walls.shape[1] ** 0.5)
    walls = env.walls.view(-1, grid, grid)
    distance = torch.stack([distances_to(walls[b], int(env.goal[b])) for b in range(env.num_envs)])

    def policy(observation: torch.Tensor, env: MazeEnv) -> torch.Tensor:
        neighbours = env.position.unsqueeze(1) + torch.tensor([-grid, grid, -1, 1])
        return distance.gather(1, neighbours).argmin(dim=1)

    return policy


def walls_around(observation: torch.Tensor) -> torch.Tensor:
    """Return ``(batch, 4)`` bool: a wall up, down, left, right of the agent (action order)."""
    return observation[:, [0, 2, 1, 1], [1, 1, 0, 2]] > 0.5


def stay(observation: torch.Tensor, env: MazeEnv) -> torch.Tensor:
    """Run into a wall (the first of up, down, left, right), so the agent never moves."""
    return walls_around(observation).float().argmax(dim=1)


def uniform(generator: torch.Generator) -> Policy:
    """Return the uniformly random policy."""
    return lambda observation, env: torch.randint(0, 4, (env.num_envs,), generator=generator)


def run(env: MazeEnv, policy: Policy, steps: int | None = None) -> dict[str, torch.Tensor]:
    """Reset ``env`` and step it under ``policy``; return positions ``(steps + 1, batch)`` and
    observations, rewards, truncated flags stacked over steps."""
    observation, _ = env.reset()
    record: dict[str, list[torch.Tensor]] = {
        "positions": [env.position],
        "observations": [observation],
        "rewards": [],
        "truncated": [],
    }
    for _ in range(env.lifetime_steps if steps is None else steps):
        observation, reward, _, truncated, _ = env.step(policy(observation, env))
        record["positions"].append(env.position)
        record["observations"].append(observation)
        record["rewards"].append(reward)
        record["truncated"].append(truncated)
    return {name: torch.stack(values) for name, values in record.items()}


@pytest.mark.parametrize("grid", [4, 5, 8, 9, 10])
def test_prim_mazes_are_closed_trees(grid: int) -> None:
    """Every maze has a closed outer wall, and its passages form one tree: every free cell is
    reachable from every other (BFS), with no loop (edges = cells - 1)."""
    walls = generate_mazes(100, grid, torch.Generator().manual_seed(grid))
    assert walls.shape == (100, grid, grid) and walls.dtype == torch.bool
    border = torch.ones(grid, grid, dtype=torch.bool)
    border[1:-1, 1:-1] = False
    assert walls[:, border].all()
    for maze in walls:
        free = (~maze.flatten()).nonzero().flatten().tolist()
        assert len(free) >= 3
        reachable = distances_to(maze, free[0])[free]
        assert torch.isfinite(reachable).all()
        edges = sum(len(free_neighbours(maze, cell)) for cell in free) // 2
        assert edges == len(free) - 1


def test_generation_is_deterministic_under_a_seed() -> None:
    """The same generator seed gives the same mazes and goals; another seed other ones."""
    sampler = MazeTasks(MazeTasks.Config())
    a, b, c = (sampler.sample(64, "train", torch.Generator().manual_seed(s)) for s in (3, 3, 4))
    assert torch.equal(a.walls, b.walls) and torch.equal(a.goal, b.goal) and a.seed == b.seed
    assert not torch.equal(a.walls, c.walls)


def test_train_and_test_splits_are_disjoint() -> None:
    """No (maze, goal) pair of the test split is a train pair: the split bit is 0 on every train
    goal and 1 on every test goal, whatever the generator seeds."""
    sampler = MazeTasks(MazeTasks.Config())
    cells = (torch.arange(8).unsqueeze(1) + torch.arange(8)).flatten()
    keys: dict[str, set[tuple[bytes, int]]] = {}
    for split, bit in (("train", 0), ("test", 1)):
        keys[split] = set()
        for seed in range(20):
            tasks = sampler.sample(64, split, torch.Generator().manual_seed(seed))  # type: ignore[arg-type]
            parity = split_parity(tasks.walls, cells).gather(1, tasks.goal.unsqueeze(1))
            assert (parity == bit).all()
            assert not tasks.walls.flatten(1).gather(1, tasks.goal.unsqueeze(1)).any()
            for walls, goal in zip(tasks.walls, tasks.goal, strict=True):
                keys[split].add((walls.numpy().tobytes(), int(goal)))
    assert len(keys["train"]) > 1200 and not keys["train"] & keys["test"]


def test_walls_block_movement() -> None:
    """A move into a wall leaves the agent in place and costs ``wall_penalty``; a free move
    goes one cell in its direction at no cost."""
    env = corridor_env(4, goal=(3, 1), wall_penalty=0.5)
    env.reset()
    env.position = torch.full((4,), 1 * 5 + 1)
    _, reward, *_ = env.step(torch.tensor([UP, DOWN, LEFT, RIGHT]))
    assert env.position.tolist() == [6, 6, 6, 7]
    assert reward.tolist() == [-0.5, -0.5, -0.5, 0.0]


def test_goal_gives_its_reward_and_teleports() -> None:
    """Stepping onto the goal gives 10 and lands the agent on a random free cell other than
    the goal, where its observation is drawn."""
    env = corridor_env(64, goal=(3, 1))
    env.reset()
    env.position = torch.full((64,), 3 * 5 + 2)
    observation, reward, *_ = env.step(torch.full((64,), LEFT))
    assert torch.equal(reward, torch.full((64,), 10.0))
    landed = env.position
    assert not env.walls.gather(1, landed.unsqueeze(1)).any() and (landed != 16).all()
    assert set(landed.tolist()) == {6, 7, 8, 13, 17, 18}  # all six other free cells, by chance
    walls = env.walls.view(64, 5, 5).float()
    rows, columns = landed // 5, landed % 5
    for b in range(64):
        r, c = int(rows[b]), int(columns[b])
        assert torch.equal(observation[b], walls[b, r - 1 : r + 2, c - 1 : c + 2])
    assert torch.equal(env.lifetime_metrics()["rewards_found"], torch.ones(64))


def test_observation_is_the_3x3_walls_around_the_agent() -> None:
    """At every step of a random walk each task sees its own maze's walls around itself."""
    _, env = make_env(batch=6)
    record = run(env, uniform(torch.Generator().manual_seed(0)), steps=30)
    walls = env.walls.view(6, 8, 8).float()
    for positions, observation in zip(record["positions"], record["observations"], strict=True):
        for b, cell in enumerate(positions.tolist()):
            r, c = divmod(cell, 8)
            assert torch.equal(observation[b], walls[b, r - 1 : r + 2, c - 1 : c + 2])
            assert observation[b, 1, 1] == 0.0


def test_shortest_path_agent_finds_the_goal_at_once() -> None:
    """An agent that knows the goal finds it in exactly the BFS distance from its start, and
    again after each teleport: success 1 and reward 10 per find."""
    _, env = make_env(batch=32)
    policy = shortest_path_agent(env)
    record = run(env, policy)
    start = record["positions"][0]
    expected = torch.stack(
        [distances_to(env.walls[b].view(8, 8), int(env.goal[b]))[start[b]] for b in range(32)]
    )
    metrics = env.lifetime_metrics()
    assert torch.equal(metrics["steps_to_first_reward"], expected)
    assert metrics["steps_to_first_reward"].max() < 30
    assert torch.equal(metrics["success"], torch.ones(32))
    assert (metrics["rewards_found"] >= 3).all()
    assert torch.equal(metrics["episode_reward"], 10 * metrics["rewards_found"])
    assert torch.equal(record["rewards"].sum(0), metrics["episode_reward"])


def test_an_agent_that_never_moves_scores_nothing() -> None:
    """Staying put never finds the goal: 100 steps to the first reward, success 0, reward 0,
    and the lifetime is truncated at its 100th step only."""
    sampler, env = make_env()
    assert sampler.lifetime_steps == env.lifetime_steps == 100
    record = run(env, stay)
    assert walls_around(record["observations"][0]).any(dim=1).all()  # no start at a crossroads
    assert (record["positions"] == record["positions"][0]).all()
    metrics = env.lifetime_metrics()
    assert torch.equal(metrics["steps_to_first_reward"], torch.full((8,), 100.0))
    for name in ("success", "rewards_found", "episode_reward"):
        assert torch.equal(metrics[name], torch.zeros(8))
    assert torch.equal(record["truncated"].nonzero()[:, 0], torch.full((8,), 99))


def test_each_task_follows_its_own_agent() -> None:
    """Changing one task's actions changes nothing in the other tasks of the batch."""
    runs = []
    for perturbed in (False, True):
        _, env = make_env(batch=4)
        seeker = shortest_path_agent(env)

        def policy(
            observation: torch.Tensor, env: MazeEnv, seeker: Policy = seeker, stop: bool = perturbed
        ) -> torch.Tensor:
            actions = seeker(observation, env)
            actions[0] = stay(observation, env)[0] if stop else actions[0]
            return actions

        runs.append((run(env, policy), env.lifetime_metrics()))
    (a, metrics_a), (b, metrics_b) = runs
    for name in ("positions", "observations", "rewards"):
        assert not torch.equal(a[name][:, 0], b[name][:, 0])
        assert torch.equal(a[name][:, 1:], b[name][:, 1:])
    assert metrics_b["success"].tolist() == [0.0, 1.0, 1.0, 1.0]
    assert torch.equal(metrics_a["rewards_found"][1:], metrics_b["rewards_found"][1:])


def test_step_is_batched_without_a_python_loop() -> None:
    """A step costs the same number of torch calls for 2 tasks as for 64 (no loop over tasks)."""
    counts = []
    for batch in (2, 64):
        _, env = make_env(batch=batch)
        env.reset()
        actions = torch.randint(0, 4, (10, batch), generator=torch.Generator().manual_seed(0))
        with CountTorchCalls() as counter:
            for action in actions:
                env.step(action)
        counts.append(counter.calls)
    assert counts[0] == counts[1]


def test_maze10_condition_builds_larger_mazes_with_the_same_observation() -> None:
    """``evaluation_conditions`` gives ``maze10``: 10 x 10 mazes, same spaces for the agent."""
    sampler = MazeTasks(MazeTasks.Config())
    changes = sampler.evaluation_conditions()["maze10"]
    assert changes == {"size": 10}
    larger = MazeTasks(sampler.config.model_copy(update=changes))
    assert larger.observation_space == sampler.observation_space
    assert larger.action_space == sampler.action_space
    tasks = larger.sample(4, "test", torch.Generator().manual_seed(0))
    assert tasks.walls.shape == (4, 10, 10)
    observation, _ = larger.make_env(tasks).reset()
    assert observation.shape == (4, 3, 3)


def test_outer_wall_can_be_left_out_of_the_size() -> None:
    """With ``outer_wall_included=False``, size counts the cells inside the border."""
    _, env = make_env(batch=2, size=6, outer_wall_included=False)
    assert env.walls.shape == (2, 8 * 8)


@pytest.mark.parametrize("config", [{"size": 3}, {"size": 1, "outer_wall_included": False}])
def test_too_small_mazes_are_rejected(config: dict[str, Any]) -> None:
    """A maze needs at least 2 x 2 cells inside its outer wall."""
    with pytest.raises(ValidationError):
        MazeTasks.Config(**config)


def random_agent_reference(
    episodes: int = 1000, size: int = 8, outer_wall_included: bool = True
) -> dict[str, float]:
    """Return the uniformly random policy's mean metrics on ``episodes`` held-out mazes."""
    sampler = MazeTasks(MazeTasks.Config(size=size, outer_wall_included=outer_wall_included))
    tasks_generator = torch.Generator().manual_seed(2022)
    policy = uniform(torch.Generator().manual_seed(2023))
    collected: dict[str, list[torch.Tensor]] = {}
    for _ in range(episodes // 250):
        env = sampler.make_env(sampler.sample(250, "test", tasks_generator))
        run(env, policy)
        for name, value in env.lifetime_metrics().items():
            collected.setdefault(name, []).append(value)
    return {name: float(torch.cat(values).mean()) for name, values in collected.items()}


def test_random_agent_reference() -> None:
    """The random policy on 1000 held-out 8 x 8 mazes finds the goal in about 43 % of lifetimes
    (measured 0.436; steps to first reward 72.4; cumulative reward 6.6)."""
    metrics = random_agent_reference()
    assert 0.35 < metrics["success"] < 0.52
    assert 65 < metrics["steps_to_first_reward"] < 78
    assert 5.0 < metrics["episode_reward"] < 8.5


if __name__ == "__main__":
    for wall_included in (True, False):
        for size in (8, 10):
            reference = random_agent_reference(size=size, outer_wall_included=wall_included)
            print(
                f"random policy, 1000 held-out {size} x {size} mazes "
                f"(outer_wall_included={wall_included}): {reference}"
            )
