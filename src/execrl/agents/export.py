"""Learned policies as plain numpy: no torch at decision time.

Every trained agent exports to a ``NumpyPolicy``: an MLP trunk (or a discretiser and a Q
table) and a head that turns its outputs into an action. It implements the ``Policy``
protocol, so it runs through the same environment as the baselines, and it decides exactly
as the agent it came from (tests check this against torch on many observations).

Heads:
- ``argmax``: outputs are action scores (Q-values or logits); the masked argmax is the action.
  A dueling network's V + A − mean(A) is linear in the last hidden layer, so it is folded
  into one linear layer at export and needs no head of its own.
- ``quantiles``: outputs are ``n_actions × n_quantiles`` return quantiles (QR-DQN); actions
  are ranked by the mean of the quantiles or, with ``cvar_alpha`` < 1, by the mean of the
  lowest ``cvar_alpha`` share of them (CVaR of the return: the cost tail).
- ``gaussian_mean``: one output, the mean of the action distribution, clipped to [0, 1].
- ``qtable``: the observation is discretised by ``bin_edges`` per feature into one row of a
  dense Q table, then masked argmax.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from execrl.domain import ConfigError

HEADS = ("argmax", "quantiles", "gaussian_mean", "qtable")
ACTIVATIONS = ("tanh", "relu", "identity")


@dataclass
class NumpyPolicy:
    """A learned policy's decision function, in numpy."""

    name: str
    observations: tuple[str, ...]
    action_set: str
    head: str
    weights: list[NDArray[np.float64]] = field(default_factory=list)  # W0, b0, W1, b1, …
    activation: str = "tanh"
    n_quantiles: int = 0
    cvar_alpha: float = 1.0
    bin_edges: list[NDArray[np.float64]] = field(default_factory=list)  # qtable only
    q_table: NDArray[np.float64] | None = None  # qtable only: (n_states, n_actions)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise ConfigError(f"policy head {self.head!r} is unknown; known: {', '.join(HEADS)}")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"policy activation {self.activation!r} is unknown")
        self.observations = tuple(self.observations)
        self.weights = [np.asarray(w, dtype=np.float64) for w in self.weights]
        if self.head == "qtable":
            if self.q_table is None or len(self.bin_edges) != len(self.observations):
                raise ConfigError("a qtable policy needs q_table and one bin_edges per feature")
            self.bin_edges = [np.asarray(e, dtype=np.float64) for e in self.bin_edges]
            self.q_table = np.asarray(self.q_table, dtype=np.float64)
            sizes = [len(e) + 1 for e in self.bin_edges]
            self._strides = np.cumprod([1, *sizes[:0:-1]])[::-1].astype(np.int64)
        elif len(self.weights) % 2 or not self.weights:
            raise ConfigError("an MLP policy needs weights W0, b0, W1, b1, … (an even count > 0)")

    # -- the decision ---------------------------------------------------------------------------
    def outputs(self, observations: NDArray) -> NDArray[np.float64]:
        """The network's raw outputs (or the Q-table rows) for a batch of observations."""
        x = np.asarray(observations, dtype=np.float64)
        if x.ndim == 1:
            x = x[None, :]
        if self.head == "qtable":
            return self.q_table[self.state_index(x)]  # type: ignore[index]
        last = len(self.weights) // 2 - 1
        for i in range(0, len(self.weights), 2):
            x = x @ self.weights[i] + self.weights[i + 1]
            if i // 2 < last:
                x = _activate(x, self.activation)
        return x

    def action_scores(self, observations: NDArray) -> NDArray[np.float64]:
        """Per-action scores, higher is better (discrete heads)."""
        out = self.outputs(observations)
        if self.head != "quantiles":
            return out
        q = out.reshape(out.shape[0], -1, self.n_quantiles)
        if self.cvar_alpha >= 1.0:
            return q.mean(axis=2)
        k = max(1, int(np.ceil(self.cvar_alpha * self.n_quantiles)))
        return np.sort(q, axis=2)[:, :, :k].mean(axis=2)

    def act(self, observations: NDArray, masks: NDArray | None = None) -> NDArray:
        if self.head == "gaussian_mean":
            mean = self.outputs(observations)[:, :1]
            return np.clip(mean, 0.0, 1.0).astype(np.float32)
        scores = self.action_scores(observations)
        if masks is not None:
            scores = np.where(np.asarray(masks, dtype=bool), scores, -np.inf)
        return scores.argmax(axis=1)

    def state_index(self, observations: NDArray) -> NDArray[np.int64]:
        """Row of the Q table: mixed-radix index of each feature's bucket."""
        x = np.asarray(observations, dtype=np.float64)
        if x.ndim == 1:
            x = x[None, :]
        idx = np.zeros(x.shape[0], dtype=np.int64)
        for j, edges in enumerate(self.bin_edges):
            idx += np.searchsorted(edges, x[:, j], side="right") * self._strides[j]
        return idx

    # -- files ------------------------------------------------------------------------------------
    def arrays(self) -> dict[str, NDArray]:
        out: dict[str, NDArray] = {f"w{i}": w for i, w in enumerate(self.weights)}
        out.update({f"edges{j}": e for j, e in enumerate(self.bin_edges)})
        if self.q_table is not None:
            out["q_table"] = self.q_table
        return out

    def spec(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "observations": list(self.observations),
            "action_set": self.action_set,
            "head": self.head,
            "activation": self.activation,
            "n_weights": len(self.weights),
            "n_quantiles": self.n_quantiles,
            "cvar_alpha": self.cvar_alpha,
            "n_features_binned": len(self.bin_edges),
            "meta": self.meta,
        }

    def policy_hash(self) -> str:
        """sha256 over the decision function: its specification and every array's bytes
        (seed 001 §6: the policy hash recorded with each decision). The display name is left
        out: the same policy evaluated as ``a:DIR`` or ``b:DIR`` is one policy."""
        spec = {k: v for k, v in self.spec().items() if k != "name"}
        h = hashlib.sha256(json.dumps(spec, sort_keys=True).encode())
        for key, arr in sorted(self.arrays().items()):
            h.update(key.encode())
            h.update(np.ascontiguousarray(arr, dtype=np.float64).tobytes())
        return h.hexdigest()

    def save(self, folder: Path) -> str:
        """Write ``policy.json`` and ``policy.npz``; return the policy hash."""
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / "policy.npz", **self.arrays())
        digest = self.policy_hash()
        spec = {**self.spec(), "policy_hash": digest}
        (folder / "policy.json").write_text(json.dumps(spec, indent=2, sort_keys=True))
        return digest

    @classmethod
    def load(cls, folder: Path, name: str | None = None) -> NumpyPolicy:
        folder = Path(folder)
        try:
            spec = json.loads((folder / "policy.json").read_text())
            arrays = dict(np.load(folder / "policy.npz"))
        except FileNotFoundError:
            raise ConfigError(
                f"{str(folder)!r} is not a trained policy folder (no policy.json / policy.npz)"
            ) from None
        policy = cls(
            name=name or spec["name"],
            observations=tuple(spec["observations"]),
            action_set=spec["action_set"],
            head=spec["head"],
            weights=[arrays[f"w{i}"] for i in range(spec["n_weights"])],
            activation=spec["activation"],
            n_quantiles=spec["n_quantiles"],
            cvar_alpha=spec["cvar_alpha"],
            bin_edges=[arrays[f"edges{j}"] for j in range(spec["n_features_binned"])],
            q_table=arrays.get("q_table"),
            meta=spec.get("meta", {}),
        )
        if spec.get("policy_hash") and policy.policy_hash() != spec["policy_hash"]:
            raise ConfigError(
                f"policy in {str(folder)!r} does not match its recorded hash: files changed"
            )
        return policy


def _activate(x: NDArray[np.float64], kind: str) -> NDArray[np.float64]:
    if kind == "tanh":
        return np.tanh(x)
    if kind == "relu":
        return np.maximum(x, 0.0)
    return x
