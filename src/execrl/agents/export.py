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
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numba import njit
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
    #: where a loaded policy came from: ``path``, ``policy_hash`` and, for a checkpoint,
    #: ``algo`` and ``trained_with_execrl`` (for results.json); not part of the hash
    provenance: dict[str, Any] = field(default_factory=dict, compare=False)
    #: a loaded checkpoint's config.json (market, order, … it was trained on); not hashed
    training: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    # a loaded checkpoint's features.json (execrl.market.features.FeatureSchema), or None
    feature_schema: Any = field(default=None, compare=False, repr=False)
    #: the frozen online normaliser the policy was trained behind
    #: (``execrl.market.observations.ObservationNormaliser``, locked), applied to every
    #: observation before the network: evaluate and execute hand it the fixed-scaled
    #: observations, as to any policy. None: the policy reads those directly. Part of the
    #: decision function: in policy.json and in the hash (absent, the hash is unchanged).
    normaliser: Any = field(default=None, compare=False, repr=False)

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
        self.check_shapes()
        if self.head != "qtable":
            self._pack()

    def _pack(self) -> None:
        """Every layer's weights and bias in one flat array, with a (layers, 4) table of
        (weights offset, inputs, outputs, bias offset): the compiled forward pass takes the
        whole network as two arguments."""
        parts, layout, offset = [], [], 0
        for i in range(0, len(self.weights), 2):
            w, b = self.weights[i], self.weights[i + 1]
            layout.append((offset, w.shape[0], w.shape[1], offset + w.size))
            parts += [w.ravel(), b]
            offset += w.size + b.size
        self._flat = np.ascontiguousarray(np.concatenate(parts))
        self._layout = np.array(layout, dtype=np.int64)
        self._act_code = ACTIVATIONS.index(self.activation)
        self._width = max(max(row[1], row[2]) for row in layout)

    def check_shapes(self) -> None:
        """Refuse arrays that cannot compute a decision: a layer whose input is not the
        previous one's output, a Q table with one row per state missing, unsorted bin edges,
        or quantile outputs that are not whole sets of ``n_quantiles``."""
        if not 0.0 < self.cvar_alpha <= 1.0:
            raise ConfigError(f"cvar_alpha = {self.cvar_alpha!r} must be in (0, 1]")
        width = len(self.observations)
        if self.head == "qtable":
            for j, edges in enumerate(self.bin_edges):
                if edges.ndim != 1 or np.any(np.diff(edges) <= 0):
                    raise ConfigError(f"bin edges {j} must be one increasing row of numbers")
            n_states = int(np.prod([len(e) + 1 for e in self.bin_edges]))
            q = self.q_table
            if q is None or q.ndim != 2 or q.shape[0] != n_states or q.shape[1] < 1:
                shape = None if q is None else q.shape
                raise ConfigError(
                    f"q_table of shape {shape} must have {n_states} rows (one per state of the "
                    "bin edges) and at least one action column"
                )
            return
        for i in range(0, len(self.weights), 2):
            w, b = self.weights[i], self.weights[i + 1]
            if w.ndim != 2 or w.shape[0] != width or b.shape != (w.shape[1],):
                raise ConfigError(
                    f"layer {i // 2}: weights w{i} of shape {w.shape} and bias w{i + 1} of "
                    f"shape {b.shape} do not take {width} input(s) to one output per bias"
                )
            width = w.shape[1]
        if self.head == "quantiles" and (self.n_quantiles < 1 or width % self.n_quantiles):
            raise ConfigError(
                f"{width} outputs are not whole sets of n_quantiles = {self.n_quantiles}"
            )

    @property
    def n_outputs(self) -> int:
        """Columns of ``outputs``: action scores, quantiles or the Gaussian's mean."""
        if self.head == "qtable":
            return int(self.q_table.shape[1])  # type: ignore[union-attr]
        return int(self.weights[-2].shape[1])

    # -- the decision ---------------------------------------------------------------------------
    def outputs(self, observations: NDArray) -> NDArray[np.float64]:
        """The network's raw outputs (or the Q-table rows) for a batch of observations."""
        x = np.asarray(observations, dtype=np.float64)
        if x.ndim == 1:
            x = x[None, :]
        if self.normaliser is not None:
            x = self.network_inputs(x)
        if self.head == "qtable":
            return self.q_table[self.state_index(x)]  # type: ignore[index]
        if x.shape[1] != self._layout[0, 1]:
            raise ValueError(f"observations have {x.shape[1]} features; the policy takes "
                             f"{self._layout[0, 1]}")
        out = np.empty((x.shape[0], self._layout[-1, 2]))
        _mlp_forward(np.ascontiguousarray(x), self._flat, self._layout, self._act_code,
                     self._width, out)
        return out

    def network_inputs(self, observations: NDArray) -> NDArray[np.float64]:
        """What the network sees: the observations through the frozen normaliser (float32,
        as the training environment gave them), or as they are without one."""
        x = np.asarray(observations, dtype=np.float64)
        if self.normaliser is None:
            return x
        if not self.normaliser.locked:
            raise ConfigError("the policy's normaliser must be locked (its trained state)")
        return self.normaliser.apply(x.astype(np.float32)).astype(np.float64)

    def attach_normaliser(self, normaliser: Any) -> None:
        """Freeze ``normaliser`` (its state now) into the policy, checked against its
        features."""
        normaliser.check(self.observations, f"policy {self.name!r}")
        self.normaliser = normaliser.frozen()

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
            # np.clip's own overhead is a few µs, a third of one decision's time
            return np.minimum(np.maximum(mean, 0.0), 1.0).astype(np.float32)
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
            **({} if self.normaliser is None
               else {"normaliser": self.normaliser.state().model_dump(mode="json")}),
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
    def load(
        cls, folder: Path, name: str | None = None, *, checkpoint: bool = False
    ) -> NumpyPolicy:
        """The policy ``save`` wrote into ``folder``, verified against its recorded hash.

        Anything wrong with the files (missing, not JSON / not an array file, a key or an
        array missing, wrong shapes, no hash or a hash that does not match) is one
        ``ConfigError`` naming the file. With ``checkpoint`` (what ``evaluate`` loads) the
        folder must be a whole ``execrl train`` checkpoint: its ``policy_hash`` file and its
        ``config.json`` must name the same hash; the policy's ``provenance`` (path, hash,
        algorithm, execrl version) and ``training`` (the config.json content) are filled in.
        """
        folder = Path(folder)
        where = str(folder)
        if not folder.is_dir():
            what = "does not exist" if not folder.exists() else "is not a folder"
            raise ConfigError(f"policy folder {where!r} {what}")
        spec_path, arrays_path = folder / "policy.json", folder / "policy.npz"
        spec = _read_json_object(spec_path, "policy file")
        arrays = _read_arrays(arrays_path)
        try:
            fields = {key: _spec_field(spec, key, kind) for key, kind in _SPEC_FIELDS.items()}
        except ValueError as exc:
            raise ConfigError(f"policy file {str(spec_path)!r}: {exc}") from None
        recorded = spec.get("policy_hash")
        if not isinstance(recorded, str) or not recorded:
            raise ConfigError(
                f"policy file {str(spec_path)!r} has no 'policy_hash': the policy cannot be "
                "verified (retrain it, or restore the file written by execrl train)"
            )
        meta = spec.get("meta", {})
        if not isinstance(meta, dict):
            raise ConfigError(f"policy file {str(spec_path)!r}: 'meta' must be an object")
        normaliser = _normaliser(spec, spec_path, tuple(fields["observations"]))
        keys = [f"w{i}" for i in range(fields["n_weights"])]
        keys += [f"edges{j}" for j in range(fields["n_features_binned"])]
        if fields["head"] == "qtable":
            keys.append("q_table")
        missing = [k for k in keys if k not in arrays]
        if missing:
            raise ConfigError(
                f"policy file {str(arrays_path)!r} lacks array(s) {', '.join(missing)} "
                f"(as {str(spec_path)!r} describes)"
            )
        for key in keys:
            arr = arrays[key]
            if arr.dtype.kind not in "fiu":
                raise ConfigError(
                    f"policy file {str(arrays_path)!r}: array {key!r} holds {arr.dtype}, "
                    "not numbers"
                )
            if not np.isfinite(arr).all():
                raise ConfigError(
                    f"policy file {str(arrays_path)!r}: array {key!r} has non-finite values"
                )
        try:
            policy = cls(
                name=name or fields["name"],
                observations=tuple(fields["observations"]),
                action_set=fields["action_set"],
                head=fields["head"],
                weights=[arrays[f"w{i}"] for i in range(fields["n_weights"])],
                activation=fields["activation"],
                n_quantiles=fields["n_quantiles"],
                cvar_alpha=fields["cvar_alpha"],
                bin_edges=[arrays[f"edges{j}"] for j in range(fields["n_features_binned"])],
                q_table=arrays.get("q_table"),
                meta=meta,
                normaliser=normaliser,
            )
            policy.check_shapes()
        except ConfigError as exc:
            raise ConfigError(f"policy in {where!r} is not valid: {exc}") from None
        digest = policy.policy_hash()
        if digest != recorded:
            raise ConfigError(
                f"policy in {where!r} does not match its recorded hash: files changed "
                f"({str(spec_path)!r} records {recorded[:16]}…, the arrays hash to "
                f"{digest[:16]}…)"
            )
        policy.provenance = {"path": where, "policy_hash": digest}
        hash_path, config_path = folder / "policy_hash", folder / "config.json"
        if checkpoint or hash_path.exists():
            try:
                written = hash_path.read_text(encoding="utf-8").strip()
            except FileNotFoundError:
                raise ConfigError(
                    f"checkpoint {where!r} lacks its policy_hash file (written by execrl train)"
                ) from None
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"checkpoint file {str(hash_path)!r} cannot be read: "
                                  f"{_reason(exc)}") from None
            if written != digest:
                raise ConfigError(
                    f"checkpoint file {str(hash_path)!r} names hash {written[:16]!r}…, but the "
                    f"policy hashes to {digest[:16]}…: files changed"
                )
        if checkpoint or config_path.exists():
            if not config_path.exists():
                raise ConfigError(
                    f"checkpoint {where!r} lacks its config.json (written by execrl train)"
                )
            config = _read_json_object(config_path, "checkpoint file")
            if config.get("policy_hash") != digest:
                raise ConfigError(
                    f"checkpoint file {str(config_path)!r} records policy_hash "
                    f"{str(config.get('policy_hash'))[:16]!r}…, but the policy hashes to "
                    f"{digest[:16]}…: files changed"
                )
            policy.training = config
            policy.provenance.update(
                algo=config.get("algo"), trained_with_execrl=config.get("execrl_version")
            )
        if checkpoint:
            _check_runnable(policy, where)
            policy.feature_schema = _feature_schema(policy, folder)
        return policy


#: policy.json keys ``load`` needs, and their kind
_SPEC_FIELDS: dict[str, str] = {
    "name": "str",
    "observations": "str_list",
    "action_set": "str",
    "head": "str",
    "activation": "str",
    "n_weights": "count",
    "n_quantiles": "count",
    "cvar_alpha": "number",
    "n_features_binned": "count",
}


def _spec_field(spec: dict[str, Any], key: str, kind: str) -> Any:
    if key not in spec:
        raise ValueError(f"key {key!r} is missing")
    value = spec[key]
    ok = {
        "str": isinstance(value, str),
        "str_list": isinstance(value, list) and all(isinstance(v, str) for v in value),
        "count": isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 10_000,
        "number": isinstance(value, (int, float)) and not isinstance(value, bool)
        and bool(np.isfinite(value)),
    }[kind]
    if not ok:
        expected = {"str": "a string", "str_list": "a list of strings",
                    "count": "a whole number in [0, 10000]", "number": "a finite number"}[kind]
        raise ValueError(f"{key!r} = {value!r} is not {expected}")
    return value


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _read_json_object(path: Path, what: str) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{what} {str(path)!r} is missing") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what} {str(path)!r} cannot be read: {_reason(exc)}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{what} {str(path)!r} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {str(path)!r} must hold a JSON object")
    return data


def _read_arrays(path: Path) -> dict[str, NDArray]:
    """Every array of an ``.npz`` file (no pickled objects: a policy is numbers only)."""
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError("it holds a single array, not an .npz archive")
        with data:
            return {key: np.asarray(data[key]) for key in data.files}
    except FileNotFoundError:
        raise ConfigError(f"policy file {str(path)!r} is missing") from None
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
        reason = _reason(exc)
        if "pickle" in reason:  # numpy's guess for any file that is not .npy / .npz
            reason = "it is neither .npz nor .npy data"
        raise ConfigError(
            f"policy file {str(path)!r} is not a readable .npz array archive: {reason}"
        ) from None


def _normaliser(spec: dict[str, Any], path: Path, names: tuple[str, ...]) -> Any:
    """policy.json's frozen normaliser (None when it has none), checked against the features
    it names."""
    if "normaliser" not in spec:
        return None
    from pydantic import ValidationError

    from execrl.domain.errors import describe_pydantic_error
    from execrl.market.observations import ObservationNormaliser, ObservationNormaliserState

    try:
        state = ObservationNormaliserState.model_validate(spec["normaliser"])
    except ValidationError as exc:
        raise ConfigError(f"policy file {str(path)!r}: "
                          f"{describe_pydantic_error('normaliser', exc)}") from None
    norm = ObservationNormaliser.from_state(state)
    norm.check(names, f"policy file {str(path)!r}")
    if not norm.locked:
        raise ConfigError(f"policy file {str(path)!r}: normaliser field 'stats.locked' = False "
                          "(a policy carries its trained state, locked)")
    return norm


def _feature_schema(policy: NumpyPolicy, folder: Path) -> Any:
    """The checkpoint's ``features.json`` (``execrl.market.features.FeatureSchema``), checked
    against the policy's features and what they mean now; None for a checkpoint written
    before schemas were saved."""
    from execrl.market.features import FeatureSchema
    from execrl.market.observations import definition

    path = folder / "features.json"
    if not path.exists():
        return None
    schema = FeatureSchema.load(path)
    try:
        schema.check(policy.observations,
                     definitions=[definition(name) for name in policy.observations])
        _same_normaliser(schema, policy)
    except ConfigError as exc:
        raise ConfigError(f"checkpoint {str(folder)!r}: {exc}") from None
    return schema


def _same_normaliser(schema: Any, policy: NumpyPolicy) -> None:
    """features.json and policy.json must carry the same normaliser (or neither): refused
    naming the first field that differs."""
    norm = policy.normaliser
    saved = schema.normalisation
    if norm is None and saved is None:
        return
    if norm is None or saved is None:
        has, lacks = ("features.json", "policy.json") if norm is None else (
            "policy.json", "features.json")
        raise ConfigError(f"{has} has an online normaliser and {lacks} none: files changed")
    now, then = norm.spec, saved.spec
    for name in type(then).model_fields:
        if getattr(now, name) != getattr(then, name):
            raise ConfigError(
                f"normaliser field '{name}' = {_short(getattr(now, name))} in policy.json "
                f"differs from {_short(getattr(then, name))} in features.json"
            )
    if norm.state().stats != saved.stats:
        raise ConfigError("normaliser field 'stats' in policy.json differs from features.json's "
                          "(files changed)")


def _short(value: Any) -> str:
    text = json.dumps(value if not isinstance(value, tuple) else list(value))
    return text if len(text) <= 80 else text[:77] + "..."


def _check_runnable(policy: NumpyPolicy, where: str) -> None:
    """Refuse a policy whose action set or features evaluate cannot build, or whose outputs
    do not fit its action set."""
    from execrl.env.spaces import resolve_action_set, resolve_observation_set

    try:
        resolve_observation_set(policy.observations)
        actions = resolve_action_set(policy.action_set)
    except ConfigError as exc:
        raise ConfigError(f"policy in {where!r} is not valid: {exc}") from None
    expected = {
        "argmax": actions.n_actions,
        "qtable": actions.n_actions,
        "quantiles": actions.n_actions * policy.n_quantiles,
        "gaussian_mean": 1,
    }[policy.head]
    if actions.is_discrete == (policy.head == "gaussian_mean") or policy.n_outputs != expected:
        raise ConfigError(
            f"policy in {where!r} is not valid: head {policy.head!r} with {policy.n_outputs} "
            f"output(s) does not fit action set {actions.name!r} "
            f"({f'{actions.n_actions} actions' if actions.is_discrete else 'continuous'})"
        )


@njit(cache=True)
def _mlp_forward(
    x: NDArray[np.float64],
    flat: NDArray[np.float64],
    layout: NDArray[np.int64],
    activation: int,
    width: int,
    out: NDArray[np.float64],
) -> None:
    """The MLP of ``NumpyPolicy._pack`` on every row of ``x``: x·W + b per layer, the
    activation (``ACTIVATIONS[activation]``) between layers. Compiled because one decision on
    one observation is what a live executor asks for: numpy's per-call overhead (three matrix
    products, adds and an activation, ~1 µs each) was most of its 12–25 µs. Each row is
    summed in input order on its own, so a decision does not depend on the batch around it."""
    n_layers = layout.shape[0]
    cur = np.empty(width)
    nxt = np.empty(width)
    for r in range(x.shape[0]):
        for i in range(layout[0, 1]):
            cur[i] = x[r, i]
        for layer in range(n_layers):
            w0, n_in, n_out, b0 = layout[layer, 0], layout[layer, 1], layout[layer, 2], \
                layout[layer, 3]
            for j in range(n_out):
                nxt[j] = 0.0
            for i in range(n_in):
                xi = cur[i]
                w = flat[w0 + i * n_out : w0 + (i + 1) * n_out]  # a view: the loop vectorises
                for j in range(n_out):
                    nxt[j] += xi * w[j]
            b = flat[b0 : b0 + n_out]
            for j in range(n_out):
                nxt[j] += b[j]
            if layer < n_layers - 1:
                if activation == 0:
                    for j in range(n_out):
                        nxt[j] = np.tanh(nxt[j])
                elif activation == 1:
                    for j in range(n_out):
                        v = nxt[j]
                        nxt[j] = v if v > 0.0 or v != v else 0.0  # NaN stays NaN
            cur, nxt = nxt, cur
        for j in range(layout[n_layers - 1, 2]):
            out[r, j] = cur[j]
