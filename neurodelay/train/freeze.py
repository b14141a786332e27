"""freeze(model) -> Network: the trained DelaySNN as a torch-free, hardware-neutral network.

What happens:
* every synapse becomes one weight at one integer delay (positions rounded: the
  discrete model of the paper's Eq. 7, exactly what evaluation uses);
* the connectivity mask is applied to W;
* BatchNorm (eval statistics) is folded into W and a per-neuron bias:
  BN(I) = a * I + c with a = gamma / sqrt(var + eps), c = beta - a * mean,
  so W' = a[:, None] * W and bias = c (added to the current every step);
* LIF: decay = 1 - 1/tau (spikingjelly, decay_input=False), threshold, hard reset to 0;
* the readout is a non-spiking leaky integrator ("li") with the same decay;
* recurrent hidden layers (``--recurrent``) carry ``rec_weight`` (the recurrent weights as
  trained: no BatchNorm acts on the recurrent current, so there is nothing to fold) and
  ``rec_delay`` (the positions rounded and clamped to 1..Td, the discrete model's delays).
"""
from __future__ import annotations

import numpy as np
import torch

from neurodelay.core.network import Layer, Network
from neurodelay.train.model import DelaySNN

# provenance tag in every frozen network's meta (the module's name when it was written;
# kept stable so that networks and NIR files of different versions compare equal)
SOURCE_TAG = "neurodelay.deploy.freeze"


@torch.no_grad()
def freeze(model: DelaySNN, *, dt: float = 0.01, class_names=None, n_channels: int = 700,
           channel_bin: int = 5, meta: dict | None = None) -> Network:
    cfg = model.cfg
    decay = 1.0 - 1.0 / cfg.tau
    layers = []
    recs = model.recurrent_synapses() or [None] * len(model.synapses)
    for k, (syn, bn, rec) in enumerate(zip(model.synapses, model.norms, recs)):
        w = syn.weight_matrix().double()
        a = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
        c = bn.bias.double() - a * bn.running_mean.double()
        extra = {}
        if rec is not None:
            extra = {"rec_weight": rec.weight_matrix().float().cpu().numpy(),
                     "rec_delay": rec.integer_delays().cpu().numpy().astype(np.int32)}
        layers.append(Layer(weight=(a[:, None] * w).float().cpu().numpy(),
                            delay=syn.integer_delays().cpu().numpy().astype(np.int32),
                            bias=c.float().cpu().numpy(), decay=decay, threshold=cfg.threshold,
                            reset=0.0, kind="lif", name=f"hidden{k}", **extra))
    ro = model.readout_synapses
    layers.append(Layer(weight=ro.weight_matrix().float().numpy(),
                        delay=ro.integer_delays().numpy().astype(np.int32),
                        bias=np.zeros(ro.n_out, np.float32), decay=decay, kind="li",
                        name="readout"))
    info = {"source": SOURCE_TAG, "model_config": cfg.to_dict()}
    info.update(meta or {})
    return Network(layers=layers, dt=float(dt), n_channels=int(n_channels),
                   channel_bin=int(channel_bin), class_names=list(class_names or []), meta=info)
