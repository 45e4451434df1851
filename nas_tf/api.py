"""The search as a Python call, for notebooks: `nas_tf.Search(...).run()`.

    import nas_tf

    result = nas_tf.Search("runs/notebook", max_trials=8, child={"epochs": 2}).run()
    print(result.best_architecture)      # one line per layer
    result.dataframe()                   # one row per child (needs pandas)
    model = result.best_model()          # the best child, trained
    result.report()                      # runs/notebook/report/index.html

`Search.run` runs exactly what `python -m nas_tf.train` runs (`nas_tf.search.run`),
with the settings of `SearchConfig` as keyword arguments (or a whole
`SearchConfig`), and resumes a search in the same directory as the command
line does. `open_search(output_dir)` gives the same result object for a search
that another process ran or is running.
"""

import json
import os
from typing import List, Optional

from nas_tf import space as space_lib

def make_config(output_dir: str, **settings):
    """A `SearchConfig` from keyword settings, as the command line builds it.

    The same function as the flags' (`nas_tf.settings.search_config`).

    Args:
      output_dir: where the search writes.
      **settings: `SearchConfig` fields. `controller`, `reinforce`, `child`,
        `lm_model`, `lm_train` and `curriculum` take their dataclass or a dict
        of its fields; `preset="paper"` starts the controller and REINFORCE
        settings (and reward re-use) from the paper's values, as
        `--controller_preset` does.

    Raises:
      TypeError: naming a setting `SearchConfig` does not have.
    """
    from nas_tf import settings as settings_lib

    return settings_lib.search_config(output_dir, **settings)


class Search:
    """One search, set up from keyword settings; `run()` runs (or resumes) it.

    `nas_tf.Search(...).run()` is what `python -m nas_tf.train` does (the
    module `nas_tf.search` keeps the name `search`, so this is a class).

    Args:
      output_dir: where the search writes and resumes from.
      config: a whole `SearchConfig` instead of `output_dir` and settings.
      data: optional `ImageData` (`nas_tf.data.from_arrays`) or `LMData`;
        otherwise `dataset` is loaded by name.
      **settings: `SearchConfig` fields (see `make_config`).

    Attributes:
      config: the resolved `SearchConfig`.

    Raises:
      TypeError: for `config` together with settings or another output_dir,
        no output_dir, or an unknown setting.
    """

    def __init__(self, output_dir: Optional[str] = None, config=None, data=None, **settings):
        if config is not None:
            if settings or (output_dir is not None and output_dir != config.output_dir):
                raise TypeError("Pass either a SearchConfig or output_dir and settings, not both.")
        elif output_dir is None:
            raise TypeError("Search() needs an output_dir (or a SearchConfig).")
        else:
            config = make_config(output_dir, **settings)
        self.config, self.data = config, data

    def run(self) -> "SearchResult":
        """Runs the search to its `max_trials` (resuming what is there); returns its result.

        Raises:
          The errors of `nas_tf.search.run` (a changed configuration on
          resume, a corrupt history, an error that is not a child's).
        """
        from nas_tf import search as search_lib

        search_lib.run(self.config, data=self.data)
        return SearchResult(self.config.output_dir)

    @staticmethod
    def open(output_dir: str) -> "SearchResult":
        """The result of a search run elsewhere (finished, or still running)."""
        return open_search(output_dir)


def open_search(output_dir: str) -> "SearchResult":
    """The result object of a search run elsewhere (finished, or still running).

    Raises:
      FileNotFoundError: if `output_dir` is not a search's output directory.
    """
    from nas_tf.report import data as report_data

    report_data.load(output_dir)  # Checks that it is one.
    return SearchResult(output_dir)


class SearchResult:
    """What a search found, read from its output directory (re-read on each access).

    Attributes:
      output_dir: the search's output directory.
    """

    def __init__(self, output_dir: str):
        self.output_dir = output_dir

    def _files(self):
        from nas_tf.report import data as report_data

        return report_data.load(self.output_dir)

    @property
    def config(self) -> dict:
        """The resolved settings (`config.json`)."""
        return self._files().config

    @property
    def records(self) -> List[dict]:
        """One record per child, in trial order (`history.jsonl`)."""
        return self._files().records

    history = records

    @property
    def best(self) -> Optional[dict]:
        """The best child's record (highest reward), or None if none finished."""
        return self._files().best()

    @property
    def best_reward(self) -> Optional[float]:
        best = self.best
        return None if best is None else best["reward"]

    @property
    def best_architecture(self) -> Optional[space_lib.Architecture]:
        """The best child's `Architecture`: print it, or `.build()` a fresh model of it."""
        from nas_tf import builtin_families  # noqa: F401 (its summary and build)

        best = self.best
        if best is None:
            return None
        return space_lib.Architecture.from_json(json.dumps(best["architecture"]))

    def dataframe(self):
        """The history as a `pandas.DataFrame`, one row per child (architecture as JSON text).

        Raises:
          ImportError: if pandas is not installed (the records are `records`).
        """
        try:
            import pandas as pd
        except ImportError:
            raise ImportError(
                "SearchResult.dataframe() needs pandas (pip install pandas); "
                "the same data is in SearchResult.records."
            ) from None
        rows = []
        for r in self.records:
            row = dict(r)
            if isinstance(row.get("architecture"), dict):
                row["depth"] = row["architecture"].get("depth")
                row["architecture"] = json.dumps(row["architecture"], sort_keys=True)
            rows.append(row)
        return pd.DataFrame(rows)

    def best_model(self):
        """The best child's trained Keras model (`best_model.keras`).

        Raises:
          FileNotFoundError: if the search has not exported one yet (it does
            when it ends); `best_architecture.build()` gives an untrained one.
        """
        import keras

        path = os.path.join(self.output_dir, "best_model.keras")
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"{path} does not exist yet: a search writes it when it ends. "
                "best_architecture.build() gives an untrained model of the best architecture."
            )
        return keras.models.load_model(path, compile=False)

    def report(self, top_k: int = 10) -> str:
        """Writes the report (`nas_tf.report`); returns the path of its index.html."""
        from nas_tf import report

        return report.build_report(self.output_dir, top_k=top_k)

    def __repr__(self):
        files = self._files()
        best = files.best()
        what = "no child finished" if best is None else (
            f"best reward {best['reward']:.4f} (trial {best['trial_id']})"
        )
        return (
            f"SearchResult({self.output_dir!r}: {len(files.completed)} children trained, "
            f"{len(files.failed)} failed; {what})"
        )
