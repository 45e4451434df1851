"""The space families nas_tf ships, registered: import this module to use them.

Importing it registers, in this order, `nas_tf.conv_family` (the CIFAR-10
spaces) and `nas_tf.cell_family` (the Penn Treebank cell), `nas_tf.nb201_family`
(the NAS-Bench-201 cell, for weight sharing), and fills
`Architecture.summary`/`build`'s hooks (`nas_tf.describe`). The entry points,
the search, the report and `nas_tf.Search` import it; so does the first use
of a name exported by `nas_tf`. This is tensorflow/models' `registry_imports.py`
pattern: the registry (`nas_tf.families`) knows no family, and a family of
one's own registers itself the same way, from its own module. No Keras or
TensorFlow is imported here.
"""

from nas_tf import conv_family  # noqa: F401 (registers "conv")
from nas_tf import cell_family  # noqa: F401 (registers "cell"; after conv, for --search_space's order)
from nas_tf import nb201_family  # noqa: F401 (registers "nb201": weight sharing only)
from nas_tf import describe  # noqa: F401 (Architecture.summary/build's hooks)
