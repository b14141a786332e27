"""The paper's reference model, written out for side-by-side timing and checks.

dcls ``Dcls1d(version="gauss")`` on the input left-padded by Td-1 (F.conv1d over the
whole window with the one-tap kernel for the discrete / fixed-delay model) and
spikingjelly's multi-step ``LIFNode``, run on a DelaySNN's own parameters, BatchNorms and
dropouts. It is written here, independent of neurodelay/train/model.py (whose forward
runs the fast kernels, and whose ``reference=True`` path is a second copy of this
formulation), so that the benchmarks' reference does not change with model.py.
"""
from __future__ import annotations

import torch.nn.functional as F


def _sj_lif(tau: float, threshold: float, alpha: float):
    from spikingjelly.activation_based import neuron, surrogate

    return neuron.LIFNode(tau=tau, decay_input=False, v_threshold=threshold, v_reset=0.0,
                          surrogate_function=surrogate.ATan(alpha=alpha), detach_reset=True,
                          step_mode="m", store_v_seq=True)


class ReferenceForward:
    """The paper's formulation on a DelaySNN's parameters: dcls conv + spikingjelly LIF.

    ``ReferenceForward(model)(model, x, discrete=False, record=None)`` -> readout membrane
    (B, T, n_outputs); ``record`` (a list) receives the hidden spikes, time-major.
    """

    def __init__(self, model):
        c = model.cfg
        self.hidden = [_sj_lif(c.tau, c.threshold, c.surrogate_alpha) for _ in model.synapses]
        self.readout = _sj_lif(c.tau, 1e9, c.surrogate_alpha)

    def __call__(self, model, x, discrete: bool = False, record: list | None = None):
        for node in (*self.hidden, self.readout):
            node.reset()
        b, t, _ = x.shape
        h = x.transpose(1, 2)
        for syn, bn, lif, drop in zip(model.synapses, model.norms, self.hidden, model.drops):
            cur = _ref_syn(syn, h, discrete).permute(2, 0, 1)
            c = cur.shape[-1]
            cur = bn(cur.reshape(t * b, c)).reshape(t, b, c)
            s = lif(cur)
            if record is not None:
                record.append(s.detach())
            h = drop(s).permute(1, 2, 0)
        cur = _ref_syn(model.readout_synapses, h, discrete).permute(2, 0, 1)
        self.readout(cur)
        return self.readout.v_seq.permute(1, 0, 2)


def _ref_syn(syn, h, discrete):
    xp = F.pad(h, (syn.window - 1, 0))
    if discrete or syn.mode != "learned":
        return F.conv1d(xp, syn.discrete_kernel())
    return syn.conv(xp)
