"""The recurrent-cell family: the Penn Treebank cell space (Zoph & Le 2017, sec. 4.2).

Its space is `nas_tf.spaces.cell.ptb_cell(base, functions)` (functions
"extended": the paper's control experiment 1, max and sin added), its children language
models (`nas_tf.children.language_model`) trained by `nas_tf.tasks.CellTask`,
its reward c / (validation perplexity)^2 with c = 80. The paper's controller
for this search learns at 0.0005 (sec. 4.2; 0.0006 for CIFAR-10): the
"paper" preset's override here. This file registers them, with how a cell
reads (one line per tree node) and is drawn (Figure 5 style).

Keras is imported inside the hooks only.
"""

import dataclasses

from nas_tf import families
from nas_tf import space as space_lib
from nas_tf.spaces import cell as cell_space

NAME = "cell"
SPACE = "ptb_cell"


@dataclasses.dataclass(frozen=True)
class CellSpec:
    """The cell space of a search: `ptb_cell(base, functions)`.

    Attributes:
      base: leaves of the cell's tree, a power of two (8: sec. 4.2).
      functions: the nodes' function set (`nas_tf.spaces.cell.FUNCTIONS`):
        "paper", or "extended" (max and sin added: control experiment 1).
    """

    base: int = 8
    functions: str = cell_space.PAPER

    @property
    def name(self) -> str:
        return SPACE

    @property
    def space(self) -> space_lib.Space:
        return cell_space.ptb_cell(self.base, self.functions)


def ptb_cell(base: int = 8, functions: str = cell_space.PAPER) -> CellSpec:
    """The factory of the "ptb_cell" space.

    Raises:
      ValueError: for a base that is not a power of two, or an unknown
        function set.
    """
    cell_space.function_set(functions)
    return CellSpec(cell_space.check_base(base), functions)


def _space(spec):
    """The space to parse a cell with: the search's; None (no spec): the smallest that holds it."""
    return spec.space if isinstance(spec, CellSpec) else None


def owns(arch: space_lib.Architecture) -> bool:
    """Whether `arch` has a cell's decisions ("node_0_combine", "cell_index_out", ...)."""
    return cell_space.node_decision_names(0)[0] in arch.values and cell_space.MEMORY_OUT in arch.values


def summary(arch: space_lib.Architecture, spec=None) -> str:
    """The cell as equations, one line per tree node (`CellDescription`)."""
    return str(cell_space.CellDescription.from_architecture(arch, _space(spec)))


def build(arch, spec=None, vocab_size=10000, language_model=None, **unused):
    """The cell's language model, built (`nas_tf.children.language_model.build_model`).

    Args:
      arch: the cell.
      spec: the search's `CellSpec` to validate against (None: the smallest
        function set that holds the cell's decisions).
      vocab_size: the vocabulary.
      language_model: a `LanguageModelConfig` (default: the paper's 2-layer model).
      **unused: other families' `Architecture.build` settings (ignored).
    """
    from nas_tf.children import language_model as lm

    description = cell_space.CellDescription.from_architecture(arch, _space(spec))
    return lm.build_model(description, vocab_size, language_model or lm.LanguageModelConfig())


def make_task(spec, data, config):
    """A `CellTask` with `config.lm_model` and `config.lm_train` (seeded) on text `data`."""
    from nas_tf import tasks
    from nas_tf.data import ptb

    if not isinstance(data, ptb.LMData):
        raise ValueError(f"Space {SPACE!r} searches language models: use a text dataset.")
    return tasks.CellTask(spec.base, data, config.lm_model, config.lm_train,
                          functions=spec.functions)


def supernet(spec, data, config):
    """The cell supernet (`nas_tf.supernets.cell`) and step-addressed windows of text `data`.

    Its width is `config.lm_model.units` (unset: 64, a supernet for the
    quick runs; the paper's children are far wider), its windows
    `config.lm_train.bptt_steps` tokens, dropout `lm_model.output_dropout`.
    """
    from nas_tf.data import ptb
    from nas_tf.supernets import cell as cell_supernet
    from nas_tf.supernets import text_batches

    if not isinstance(data, ptb.LMData):
        raise ValueError(f"Space {SPACE!r} searches language models: use a text dataset.")
    units = config.lm_model.units or 64
    steps = config.lm_train.bptt_steps
    net = cell_supernet.CellSupernet(
        base=spec.base, vocab_size=data.vocab_size, embedding_size=units, units=units,
        dropout=config.lm_model.output_dropout, steps=steps, seed=config.seed,
        init_scale=config.lm_model.init_scale, functions=spec.functions)
    batches = text_batches.TextBatches(data, config.weight_sharing.batch_size, steps,
                                       seed=config.seed)
    return net, batches


def diagram(arch, path, spec=None, title=None) -> str:
    """Zoph & Le 2017, Figure 5 style (`nas_tf.report.diagrams.cell`)."""
    from nas_tf.report import diagrams

    return diagrams.cell(arch, path, title)


FAMILY = families.register(families.Family(
    name=NAME,
    spaces={SPACE: ptb_cell},
    make_task=make_task,
    data_kind=families.TEXT,
    metric="val_perplexity",
    reward="ptb",
    flags={
        "search_cell_base": "space_overrides.base",
        "search_cell_functions": "space_overrides.functions",
        # Language models train on one replica; the task refuses others, naming the flag.
        "child_distribution": "lm_train.distribution",
    },
    preset_overrides={"paper": {"reinforce": {"learning_rate": 0.0005}}},
    owns=owns,
    summary=summary,
    build=build,
    diagram=diagram,
    supernet=supernet,
    diagram_file="best_cell.png",
    diagram_title="Best recurrent cell",
))
