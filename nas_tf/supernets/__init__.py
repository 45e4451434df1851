"""Weight-sharing search: supernets whose sub-networks are a space's architectures.

`base` holds the contract every supernet meets; `nb201`, `conv` and `cell`
the supernets of the NAS-Bench-201 cell, the paper's convolutional spaces and
its recurrent cell; `trainer` the shared weights' training and evaluation
steps (one trace each, whatever the architecture); `search` the ENAS-style
loop that alternates shared-weight and controller training through a
`nas_tf.algorithms.SearchAlgorithm`.
"""
