"""nas_tf's third-party Python distributions: Bazel target name -> pip name.

setup.py's install_requires and its `test` extra, plus etils, which
nas_tf/data/ptb.py imports directly (tensorflow-datasets installs it).
Target names are the pip names normalized as rules_python's pip_parse names
its targets (lower case, `-` and `.` as `_`), so that a monorepo can map each
to `requirement(<pip name>)` (third_party/README.md).
"""

REQUIREMENTS = {
    "absl_py": "absl-py",
    "etils": "etils",
    "grpcio": "grpcio",
    "hypothesis": "hypothesis",
    "keras": "keras",
    "keras_tuner": "keras-tuner",
    "matplotlib": "matplotlib",
    "numpy": "numpy",
    "pytest": "pytest",
    "scikit_learn": "scikit-learn",
    "tensorboard": "tensorboard",
    "tensorflow": "tensorflow",
    "tensorflow_datasets": "tensorflow-datasets",
}
