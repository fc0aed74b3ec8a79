"""Record utterance-level (pooled) activations of chosen layers of any torch model while it runs.

:class:`Recorder` registers forward hooks that pool each chosen layer's frames on the fly (see
:mod:`neurohook.pooling`); no frame tensor outlives the hook. Valid frame counts are followed
through the model exactly: a forward pre-hook on the wrapped model reads the padded input length,
and every ``Conv1d``/``Conv2d``/pooling module maps the valid lengths through its kernel, stride,
padding and dilation (recurrent and transformer layers keep them). Each layer then looks up the
valid lengths of its own time length.

Layouts (``layout=``) name the axes of a layer's output; the neurons of a frame are:

- ``"BTD"`` / ``"TBD"`` / ``"BDT"``: the D features (``BDT`` is the Conv1d layout);
- ``"BCFT"`` / ``"BCTF"``: every (channel, frequency-bin) pair of a 2-D conv map, unit ``c * F + f``;
- ``"BD"``: an utterance-level output, passed through unchanged (pooling ``"none"``).

Modules: :mod:`~neurohook.hooks.layers` (which modules), :mod:`~neurohook.hooks.specs` (how each is
recorded; overrides), :mod:`~neurohook.hooks.layouts` (output layouts and selection),
:mod:`~neurohook.hooks.frame_lengths` (valid frames followed through the model),
:mod:`~neurohook.hooks.recorder` (the Recorder); exact lengths come from :mod:`neurohook.lengths`.
"""

from __future__ import annotations

from neurohook.hooks.layers import LayerNotFoundError, find_layers
from neurohook.hooks.layouts import LAYOUTS, infer_layout
from neurohook.hooks.recorder import Recorder
from neurohook.hooks.rnn import StackedRNN, split_rnn

__all__ = ["LAYOUTS", "LayerNotFoundError", "Recorder", "StackedRNN", "find_layers", "infer_layout", "split_rnn"]
