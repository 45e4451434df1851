"""A space family of one's own: defined and registered here, searched, retrained, reported.

The "tiny_dense" family below (a space, its builder, its task, its summary
and its drawing) is one file's worth of code and one `families.register`
call: the search (`nas_tf.Search`, what `python -m nas_tf.train` runs), the
final training (`nas_tf.retrain.run`) and the report (`nas_tf.report`) run
it with no change to nas_tf.
"""

import dataclasses
import json
import os
import time

import keras
import numpy as np
import pytest

import nas_tf
from nas_tf import families, report, retrain, settings
from nas_tf.data import cifar10 as image_data

# -- the family: a space, its builder, its task ------------------------------------


def tiny_dense(max_layers: int = 2, units=(4, 8)) -> nas_tf.Space:
    """Up to `max_layers` dense layers, each of some units, one activation for all."""
    decisions = [nas_tf.Categorical("activation", ("relu", "tanh"))]
    for i in range(max_layers):
        decisions.append(nas_tf.Categorical(f"dense_{i}/units", tuple(units), kind="units"))
    return nas_tf.Space(tuple(decisions), name="tiny_dense")


def build_dense(arch, spec, input_shape, num_classes, weight_decay=None):
    """The classifier: flatten, the chosen dense layers, logits."""
    regularizer = keras.regularizers.L2(weight_decay / 2) if weight_decay else None
    inputs = keras.Input(input_shape)
    x = keras.layers.Flatten()(inputs)
    for name in sorted(n for n in arch.values if n.startswith("dense_")):
        x = keras.layers.Dense(arch.values[name], arch.values["activation"],
                               kernel_regularizer=regularizer)(x)  # fmt: skip
    return keras.Model(inputs, keras.layers.Dense(num_classes)(x))


@dataclasses.dataclass(frozen=True)
class DenseTask:
    """Trains a dense child for `child.epochs`; reward = its last validation accuracy."""

    data: image_data.ImageData
    child: object
    space: nas_tf.Space = dataclasses.field(default_factory=tiny_dense)

    def __call__(self, request):
        arch_json, model_path = request
        arch = self.space.architecture_from_json(arch_json)
        keras.utils.set_random_seed(self.child.seed or 1)
        model = build_dense(arch, None, self.data.input_shape, self.data.num_classes)
        model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])  # fmt: skip
        start = time.time()
        history = model.fit(self.data.train_dataset(16, seed=1), epochs=self.child.epochs,
                            validation_data=self.data.valid_dataset(16), shuffle=False,
                            verbose=0)  # fmt: skip
        if model_path:
            model.save(model_path)
        accuracy = [float(a) for a in history.history["val_accuracy"]]
        return {"reward": accuracy[-1], "val_accuracy": accuracy,
                "num_params": int(model.count_params()), "train_seconds": time.time() - start}  # fmt: skip

    @staticmethod
    def headline(record):
        return f"val_acc {record['val_accuracy'][-1]:.3f}"

    @staticmethod
    def objective(record):
        return {"reward": record["reward"], "val_accuracy": record["val_accuracy"][-1]}


def make_dense_task(spec, data, config):
    return DenseTask(data, config.child, spec)


def dense_summary(arch, spec):
    layers = [arch.values[n] for n in sorted(arch.values) if n.startswith("dense_")]
    return f"Dense network ({arch.values['activation']}): " + " -> ".join(map(str, layers))


def dense_diagram(arch, path, spec, title):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig = plt.figure(figsize=(2, 2))
    fig.suptitle(title, fontsize=6)
    fig.savefig(path)
    plt.close(fig)
    return path


DENSE = families.Family(
    name="tiny_dense",
    spaces={"tiny_dense": tiny_dense},
    make_task=make_dense_task,
    metric="val_accuracy",
    preset_overrides={"paper": {"reinforce": {"learning_rate": 0.01}}},
    owns=lambda arch: "dense_0/units" in arch.values,
    summary=dense_summary,
    build=lambda arch, spec=None, input_shape=(8, 8, 1), num_classes=10, **_: build_dense(
        arch, spec, input_shape, num_classes),
    build_classifier=build_dense,
    diagram=dense_diagram,
    diagram_file="best_dense.png",
    diagram_title="Best dense network",
)

# -- the tests -----------------------------------------------------------------------


@pytest.fixture
def dense_family():
    families.register(DENSE)
    yield DENSE
    families.unregister(DENSE.name)


def _data():
    rng = np.random.default_rng(0)
    x = rng.random((96, 4, 4, 1), dtype=np.float32)
    y = (x.mean(axis=(1, 2, 3)) > 0.5).astype(np.int32)
    return image_data.from_arrays(x[:64], y[:64], x[64:], y[64:], num_valid=16, pad=0, flip=False,
                                  num_classes=2, name="tiny")  # fmt: skip


def test_registry_lists_the_family_and_resolves_its_preset(dense_family):
    assert "tiny_dense" in families.space_names() and families.for_space("tiny_dense") is DENSE
    assert settings.resolve_preset("paper", DENSE)["reinforce"].learning_rate == 0.01
    assert settings.resolve_preset("paper", "cell")["reinforce"].learning_rate == 0.0005
    with pytest.raises(ValueError, match="has no setting 'depth'; it has 'max_layers', 'units'"):
        families.space_spec("tiny_dense", {"depth": 3})
    with pytest.raises(KeyError, match="already registered"):
        families.register(DENSE)


def test_flags_and_keywords_take_one_path(tmp_path):
    """The flags' config and `nas_tf.Search`'s come from one function: same settings, same config."""
    from nas_tf import train

    train.FLAGS.unparse_flags()
    train.FLAGS(["train", f"--output_dir={tmp_path}", "--search_space=ptb_cell", "--data_name=text",
                 "--controller_preset=paper", "--child_epochs=2", "--search_cell_base=4"])  # fmt: skip
    try:
        from_flags = train.config_from_flags()
    finally:
        train.FLAGS.unparse_flags()
    keywords = settings.search_config(str(tmp_path), **train_settings(from_flags))
    assert keywords == from_flags
    assert from_flags.reinforce.learning_rate == 0.0005  # The cell family's paper override.


def test_cell_functions_flag_reaches_the_space_the_task_and_the_supernet(tmp_path):
    """--search_cell_functions=extended: the paper's control experiment 1 (max and sin added)."""
    from nas_tf import train
    from nas_tf.data import ptb
    from nas_tf.spaces import cell as cell_space

    common = ["train", f"--output_dir={tmp_path}", "--search_space=ptb_cell", "--data_name=text",
              "--search_cell_base=2"]  # fmt: skip
    train.FLAGS.unparse_flags()
    try:
        train.FLAGS(common)
        plain = train.config_from_flags()
        train.FLAGS(common + ["--search_cell_functions=extended", "--weight_sharing",
                              "--shared_batch_size=2", "--child_bptt_steps=5", "--lm_units=4"])
        extended = train.config_from_flags()
        train.FLAGS.unparse_flags()
        with pytest.raises(Exception, match="search_cell_functions"):
            train.FLAGS(common + ["--search_cell_functions=more"])
    finally:
        train.FLAGS.unparse_flags()
    # Unset, the overrides (config.json's) are what they were before the flag existed.
    assert plain.space_overrides == {"base": 2}
    assert families.space_spec(plain.space, plain.space_overrides).space == cell_space.ptb_cell(2)
    assert extended.space_overrides == {"base": 2, "functions": "extended"}
    spec = families.space_spec(extended.space, extended.space_overrides)
    assert spec.space == cell_space.ptb_cell(2, "extended")
    assert families.spec_from_config(
        json.loads(json.dumps(families.spec_to_config(extended.space, extended.space_overrides)))
    ) == spec  # fmt: skip
    lines = [" ".join(f"w{(i * 7 + j) % 11}" for j in range(9)) for i in range(30)]
    data = ptb.from_lines(lines[:20], lines[20:25], lines[25:])
    assert families.make_task(extended, data).space == spec.space
    net, _ = families.for_space(extended.space).supernet(spec, data, extended)
    assert net.space == spec.space and "node_0_combine=max" in net.branch_names
    arch = cell_space.CellDescription(
        nodes=(("max", "sin"), ("add", "tanh"), ("add", "sin")), inject=("max", "relu"),
        inject_node=0, memory_node=1).to_architecture()
    assert "a_0 = sin(max(W x_t, U h_(t-1)))" in arch.summary(spec)
    with pytest.raises(ValueError, match="no setting 'funcs'"):
        families.space_spec("ptb_cell", {"funcs": "extended"})
    with pytest.raises(ValueError, match="Cell functions must be one of"):
        families.space_spec("ptb_cell", {"functions": "more"})


def train_settings(config):
    """A config's settings as keywords (its nested configs as dicts)."""
    return {f.name: (dataclasses.asdict(getattr(config, f.name))
                     if dataclasses.is_dataclass(getattr(config, f.name)) else getattr(config, f.name))
            for f in dataclasses.fields(config) if f.name != "output_dir"}  # fmt: skip


def test_search_retrain_and_report_of_a_family_defined_here(dense_family, tmp_path):
    data = _data()
    out = str(tmp_path / "search")
    result = nas_tf.Search(out, data=data, space="tiny_dense", max_trials=2, isolate_children=False,
                           verbose=0, child={"epochs": 1}, reinforce={"batch_size": 1}).run()  # fmt: skip
    assert len(result.records) == 2 and result.best is not None
    assert result.config["space"] == "tiny_dense"
    arch = result.best_architecture
    assert str(arch).startswith("Dense network (")  # The family's summary hook.
    assert arch.build(input_shape=(4, 4, 1), num_classes=2).count_params() == result.best["num_params"]

    arch_path = os.path.join(out, "best_architecture.json")
    config = retrain.RetrainConfig(
        output_dir=str(tmp_path / "retrain"), architecture_path=arch_path,
        space=retrain.read_space(arch_path), data_name="digits", grid_epochs=1, epochs=1,
        batch_size=16, verbose=0,
    )  # fmt: skip
    assert config.space == {"space": "tiny_dense", "space_overrides": {}}
    results = retrain.run(config, data=data)
    assert results["space"] == "tiny_dense" and 0.0 <= results["test_error"] <= 1.0

    index = report.build_report(out)
    page = open(index, encoding="utf-8").read()
    assert 'src="best_dense.png"' in page and "Dense network (" in page
    assert os.path.getsize(os.path.join(out, "report", "best_dense.png")) > 0
    assert json.load(open(os.path.join(out, "config.json")))["space"] == "tiny_dense"


def test_the_guide_example(tmp_path):
    """docs/families.md's example registers a family whose task trains a child."""
    guide = os.path.join(os.path.dirname(__file__), "..", "docs", "families.md")
    code = open(guide, encoding="utf-8").read().split("```python\n")[1].split("```")[0]
    try:
        exec(compile(code, "docs/families.md", "exec"), {})
        config = settings.search_config(str(tmp_path), space="tiny_dense", child={"epochs": 1})
        task = families.make_task(config, _data())
        arch = nas_tf.Architecture({"activation": "relu", "dense_0/units": 4})
        record = task((arch.to_json(), None))
        assert 0.0 <= record["reward"] <= 1.0 and record["num_params"] > 0
    finally:
        families.unregister("tiny_dense")
