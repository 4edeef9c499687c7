"""Cut recorded lifetimes into windows that replay side by side from stored plastic states.

A whole-lifetime replay is ``steps`` sequential agent steps, whatever the batch: on a 5000-step
Meta-World lifetime it is the cost that bounds PPO's number of updates. Recurrent PPO
(Stable-Baselines3's ``RecurrentPPO``, CleanRL's ``ppo_atari_lstm``) replays short sequences
instead, each from the memory state the collecting policy had at the sequence's first step
(Kapturowski et al. 2019 call it the "stored state"). Here a lifetime of ``steps`` steps
becomes ``ceil(steps / window)`` windows; window ``j`` of lifetime ``b`` is column
``j * batch + b`` of every windowed tensor, so all windows of a batch replay in ``window``
sequential steps.

What it changes: a window starts from a state computed under the collecting meta-parameters
and detached, so no gradient flows between windows (as with truncated BPTT), and the state a
window starts from does not follow the meta-parameters' updates within the outer step. Window
0 starts from ``agent.init_state`` with its gradient (MetODS's learned ``W_0`` still learns).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from metods_core.agent import Agent
from metods_core.interfaces import State, map_state, where_state
from metods_core.rollout import LifetimeRecord, Replay, replay_steps


def to_windows(tensor: torch.Tensor, window: int, fill: float | bool = 0) -> torch.Tensor:
    """Return ``tensor`` ``(steps, batch, ...)`` as ``(window, n * batch, ...)`` windows.

    ``n = ceil(steps / window)``; the last window is padded with ``fill`` past ``steps``.
    Column ``j * batch + b`` holds steps ``[j * window, (j + 1) * window)`` of lifetime ``b``.
    """
    steps, batch = tensor.shape[:2]
    count = -(-steps // window)
    padding = count * window - steps
    if padding:
        pad = tensor.new_full((padding, *tensor.shape[1:]), fill)
        tensor = torch.cat([tensor, pad])
    trailing = tensor.shape[2:]
    shaped = tensor.reshape(count, window, batch, *trailing).transpose(0, 1)
    return shaped.reshape(window, count * batch, *trailing)


@dataclass
class Windows:
    """Recorded lifetimes as windows of ``window`` steps, with the state each starts from.

    Attributes:
        record: the windowed inputs and actions, each ``(window, units, ...)`` with
            ``units = n * batch``; padded steps (past a lifetime's last step) hold zeros.
        starts: the plastic state at each window's first step under the collecting
            meta-parameters, detached, batch dimension ``units``.
        first: bool ``(units,)``, set for the windows that start the lifetime (these replay
            from ``agent.init_state``, with its gradient).
    """

    record: LifetimeRecord
    starts: State
    first: torch.Tensor

    @property
    def window(self) -> int:
        """Steps per window."""
        return int(self.record.previous_rewards.shape[0])

    def replay(self, agent: Agent, index: torch.Tensor) -> Replay:
        """Replay the windows ``index`` ``(k,)`` side by side; outputs ``(window, k)``.

        Gradients flow to the meta-parameters through each window's steps, and into
        ``agent.init_state`` for the windows that start a lifetime.
        """
        stored = map_state(lambda leaf: leaf[index], self.starts)
        start = where_state(self.first[index], agent.init_state(int(index.shape[0])), stored)
        replay, _ = replay_steps(
            agent, self.record.select(index), start, 0, self.window, from_lifetime_start=False
        )
        return replay


@torch.no_grad()
def split_into_windows(agent: Agent, record: LifetimeRecord, window: int) -> Windows:
    """Return ``record`` ``(steps, batch, ...)`` cut into windows of ``window`` steps.

    One replay of the whole lifetimes without a graph finds the state at every window's first
    step; call it before the meta-parameters change (with the collecting ones, it gives the
    states the rollout had, which the replay test of every shipped rule checks).
    """
    steps, batch = record.previous_rewards.shape
    state = agent.init_state(batch)
    starts = [state]
    for start in range(0, steps - window, window):
        _, state = replay_steps(agent, record, state, start, start + window)
        starts.append(state)
    stacked = map_state(lambda *leaves: torch.cat([leaf.detach() for leaf in leaves]), *starts)
    first = torch.zeros(len(starts) * batch, dtype=torch.bool, device=record.actions.device)
    first[:batch] = True
    columns = {f.name: to_windows(getattr(record, f.name), window) for f in fields(record)}
    windowed = LifetimeRecord(**columns)
    return Windows(record=windowed, starts=stacked, first=first)


__all__ = ["Windows", "split_into_windows", "to_windows"]
