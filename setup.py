"""nas_tf: Neural Architecture Search with Reinforcement Learning in TF2/Keras 3."""

import setuptools

setuptools.setup(
    name="nas_tf",
    version="0.1.0",
    description=(
        "Neural Architecture Search with Reinforcement Learning (Zoph & Le, 2017) "
        "for TensorFlow 2 / Keras 3, with a Keras Tuner oracle."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=setuptools.find_packages(include=["nas_tf", "nas_tf.*"]),
    package_data={"nas_tf": ["data/embedded/*"]},
    python_requires=">=3.10",
    install_requires=[
        "tensorflow>=2.16",
        "keras>=3.0",
        # nas_tf.kt_compat relies on Keras Tuner internals: the versions tested.
        "keras-tuner>=1.4.7,<=1.4.8",
        "tensorflow-datasets>=4.9",
        "absl-py>=1.0",
        "numpy>=1.23",
        # Embedded offline datasets (handwritten digits) ship with scikit-learn.
        "scikit-learn>=1.2",
        # Keras Tuner imports tensorboard in every trial (hparams logging).
        "tensorboard>=2.16",
        # Keras Tuner's chief/worker mode talks gRPC.
        "grpcio>=1.50",
        # `python -m nas_tf.report`: plots and architecture diagrams.
        "matplotlib>=3.6",
    ],
    extras_require={
        "test": ["pytest>=7", "hypothesis>=6"],
        "tpu": [],
    },
)
