"""What a search algorithm is: `propose`, `feedback`, `state` and `restore`.

A search algorithm is a plain Python object that proposes architectures of a
`nas_tf.space.Space` and learns from their rewards. It knows nothing of the
loop that drives it: Keras Tuner drives one through `NASRLOracle` (a
multi-trial search, each architecture trained on its own), and a
weight-sharing trainer can drive the same object directly.

The contract, in the way PyGlove's DNA generators separate proposing from
feedback:

* `propose(key)` returns the next architecture to evaluate, or None when the
  space looks exhausted. `key` names the proposal (a trial id), so that its
  reward can be matched to how it was proposed.
* `feedback(key, architecture, reward)` reports a finite reward (higher is
  better). Rewards may arrive in any order and for architectures the
  algorithm never proposed (then `key` is one it never returned).
* `state()` returns plain JSON values; `restore(state)` on a fresh object
  built with the same arguments continues exactly where `state()` was taken,
  so the next proposals equal those of an uninterrupted run.
"""

import abc
from typing import Callable, List, Optional

import numpy as np

from nas_tf import space as space_lib


class SearchAlgorithm(abc.ABC):
    """A search algorithm over one `Space` (see the module docstring).

    Args:
      space: the space to search.
      seed: the seed of every random choice the algorithm makes.
      tried: predicate telling whether an architecture was already proposed
        or evaluated; a driver that keeps its own records (Keras Tuner's
        values hashes) passes it. Default: the architectures this object
        proposed or was fed.

    Required: `propose` and `feedback`. `state`/`restore` default to the
    architectures tried so far.
    """

    def __init__(self, space: space_lib.Space, seed: int = 0,
                 tried: Optional[Callable[[space_lib.Architecture], bool]] = None):
        self.space = space
        self.seed = int(seed)
        self._seen = set()  # Keys (`arch.to_json()`) proposed or fed.
        self._tried = tried
        self.num_sampled = 0  # Calls of `sample` (its draws come from the seed and this).

    def is_tried(self, arch: space_lib.Architecture) -> bool:
        """Whether `arch` was already proposed or evaluated."""
        if self._tried is not None:
            return self._tried(arch)
        return arch.to_json() in self._seen

    def _mark(self, arch: space_lib.Architecture) -> space_lib.Architecture:
        self._seen.add(arch.to_json())
        return arch

    @abc.abstractmethod
    def propose(self, key: str) -> Optional[space_lib.Architecture]:
        """The next architecture to evaluate, or None if none untried is left."""

    @abc.abstractmethod
    def feedback(self, key: str, architecture: space_lib.Architecture, reward: float) -> None:
        """Reports `architecture`'s reward (finite; higher is better)."""

    def sample(self, n: int) -> List[space_lib.Architecture]:
        """`n` architectures to train shared weights on; no feedback is expected.

        A weight-sharing trainer (`nas_tf.supernets.search`) trains a fresh
        architecture per minibatch. Default: uniform draws from the seed and
        a count of draws (saved in `state`), so a restored search draws the same.
        """
        rng = np.random.default_rng([self.seed, self.num_sampled, 2])
        self.num_sampled += 1
        return [random_architecture(self.space, rng) for _ in range(int(n))]

    def forget(self) -> None:
        """Drops the record of what was tried (a weight-sharing driver tries thousands).

        Only for a driver that does not rely on `is_tried` and checkpoints
        the algorithm right after (`checkpoint` then includes every feed).
        """
        self._seen = set()

    def set_space(self, space: space_lib.Space) -> None:
        """Continues in a space that grew (a HyperModel declared more entries)."""
        self.space = space

    @property
    def num_updates(self) -> int:
        """Updates of a learned model so far (0 for an algorithm without one)."""
        return 0

    def checkpoint(self):
        """(arrays too large for `state`, feeds they include), or None if there are none."""
        return None

    def state(self) -> dict:
        """Plain JSON values from which `restore` continues exactly."""
        return {"seen": sorted(self._seen), "num_sampled": self.num_sampled}

    def restore(self, state: dict, checkpoint=None) -> bool:
        """Continues from `state()` of an object built with the same arguments.

        Args:
          state: a `state()`.
          checkpoint: a `checkpoint()` taken at or before `state`, or None.

        Returns:
          Whether `checkpoint` was used.
        """
        self._seen = set(state.get("seen", []))
        self.num_sampled = int(state.get("num_sampled", 0))
        return False


def random_architecture(space: space_lib.Space, rng: np.random.Generator,
                        depth: Optional[int] = None) -> space_lib.Architecture:
    """A uniform draw of every active decision, in the space's order."""
    if depth is None and space.uses_depth:
        depth = space.max_depth
    return space.validate(space_lib.Architecture(complete(space, {}, depth, rng), depth))


def complete(space: space_lib.Space, values: dict, depth: Optional[int],
             rng: np.random.Generator) -> dict:
    """`values` made consistent: inactive decisions dropped, newly active ones drawn."""
    out = {}
    for d in space.decisions:
        if not space.is_active(d, out, depth):
            continue
        if d.name in values:
            out[d.name] = values[d.name]
        elif isinstance(d, space_lib.Anchor):
            out[d.name] = tuple(int(b) for b in rng.integers(0, 2, len(d.sources)))
        else:
            out[d.name] = d.values[rng.integers(d.num_choices)]
    return out


class RandomSearch(SearchAlgorithm):
    """Uniform draws without repeats: the baseline every search is measured against.

    Draw n comes from the seed and n, so a restored search draws the same.

    Args:
      space, seed, tried: as for `SearchAlgorithm`.
      max_draws: draws of already-tried architectures per proposal before
        the space is taken as exhausted.
    """

    def __init__(self, space, seed=0, tried=None, max_draws: int = 1000):
        super().__init__(space, seed, tried)
        self.max_draws = int(max_draws)
        self.num_proposed = 0
        self.best = None  # (architecture JSON, reward) of the best feedback.

    def propose(self, key):
        rng = np.random.default_rng([self.seed, self.num_proposed])
        for _ in range(self.max_draws):
            arch = random_architecture(self.space, rng)
            if not self.is_tried(arch):
                self.num_proposed += 1
                return self._mark(arch)
        return None

    def feedback(self, key, architecture, reward):
        self._mark(architecture)
        if self.best is None or reward > self.best[1]:
            self.best = (architecture.to_json(), float(reward))

    def state(self):
        return dict(super().state(), num_proposed=self.num_proposed,
                    best=None if self.best is None else list(self.best))

    def restore(self, state, checkpoint=None):
        super().restore(state)
        self.num_proposed = int(state["num_proposed"])
        self.best = None if state.get("best") is None else tuple(state["best"])
        return False

