"""Multi-layer RNNs split into one module per layer, so that each layer's output can be recorded.

Example::

    model.lstm = split_rnn(model.lstm)                 # same weights, same outputs
    rec = Recorder(model, "lstm.layers.*")              # one entry per LSTM layer
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

__all__ = ["StackedRNN", "split_rnn"]


class StackedRNN(nn.Module):
    """A multi-layer nn.LSTM/GRU/RNN as ``layers`` (ModuleList of one-layer RNNs sharing its parameters).

    Same call signature and outputs as the original: input (B, T, D) or (T, B, D) or PackedSequence,
    optional initial state (num_layers * directions, B, H); returns (output, h_n) or (output, (h_n, c_n)).
    """

    def __init__(self, rnn: nn.RNNBase) -> None:
        """Split ``rnn``; parameters are shared, not copied."""
        super().__init__()
        if not isinstance(rnn, (nn.LSTM, nn.GRU, nn.RNN)):
            raise TypeError(f"split_rnn needs nn.LSTM, nn.GRU or nn.RNN, got {type(rnn).__name__}")
        self.mode = rnn.mode
        self.num_layers = rnn.num_layers
        self.batch_first = rnn.batch_first
        self.bidirectional = rnn.bidirectional
        self.dropout = float(rnn.dropout)
        dirs = 2 if rnn.bidirectional else 1
        out_size = (rnn.proj_size or rnn.hidden_size) if isinstance(rnn, nn.LSTM) else rnn.hidden_size
        ref = rnn.weight_ih_l0
        self.layers = nn.ModuleList()
        for k in range(rnn.num_layers):
            kw: dict[str, Any] = dict(
                input_size=rnn.input_size if k == 0 else out_size * dirs,
                hidden_size=rnn.hidden_size,
                num_layers=1,
                bias=rnn.bias,
                batch_first=rnn.batch_first,
                bidirectional=rnn.bidirectional,
                device=ref.device,
                dtype=ref.dtype,
            )
            if isinstance(rnn, nn.LSTM):
                layer: nn.RNNBase = nn.LSTM(proj_size=rnn.proj_size, **kw)
            elif isinstance(rnn, nn.GRU):
                layer = nn.GRU(**kw)
            else:
                layer = nn.RNN(nonlinearity=rnn.nonlinearity, **kw)
            for name in list(layer._flat_weights_names):
                setattr(layer, name, getattr(rnn, name.replace("_l0", f"_l{k}", 1)))
            self.layers.append(layer)

    def forward(self, x: Tensor | PackedSequence, hx: Any = None) -> tuple[Any, Any]:
        """Run the layers in turn (dropout between layers in training, as the original)."""
        is_lstm = self.mode == "LSTM"
        dirs = 2 if self.bidirectional else 1
        hs: list[Tensor] = []
        cs: list[Tensor] = []
        for k, layer in enumerate(self.layers):
            state = None
            if hx is not None:
                part = slice(k * dirs, (k + 1) * dirs)
                state = (hx[0][part], hx[1][part]) if is_lstm else hx[part]
            x, out_state = layer(x, state)
            if is_lstm:
                hs.append(out_state[0])
                cs.append(out_state[1])
            else:
                hs.append(out_state)
            if k < self.num_layers - 1 and self.dropout > 0 and self.training:
                if isinstance(x, PackedSequence):
                    x = PackedSequence(
                        nn.functional.dropout(x.data, self.dropout, True), x.batch_sizes, x.sorted_indices, x.unsorted_indices
                    )
                else:
                    x = nn.functional.dropout(x, self.dropout, True)
        h_n = torch.cat(hs, dim=0)
        return (x, (h_n, torch.cat(cs, dim=0))) if is_lstm else (x, h_n)


def split_rnn(rnn: nn.RNNBase) -> StackedRNN:
    """Per-layer view of a multi-layer RNN (same weights, outputs equal to the original within 1e-6)."""
    return StackedRNN(rnn)
