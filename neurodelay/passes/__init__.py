"""Deployment passes: pure functions ``network -> (network, report)``.

* :func:`prune`         magnitude pruning (K synapses per neuron, or a sparsity fraction)
* :func:`check_delays`  integer delays must fit the target (raise, or clip and report)
* :func:`quantize`      float :class:`Network` -> integer :class:`QNetwork` for Lava/Loihi 2
* :func:`run_passes`    check_delays -> (prune) -> quantize, collecting the reports

No pass changes its input. ``data`` is ``(x_padded, labels)`` or ``x_padded`` alone
(inputs only: used for activity statistics, no accuracy). With labels a report also
gives the accuracy before / after (float networks: :func:`neurodelay.sim.floatsim.accuracy`; quantized
ones: the bit-accurate :func:`neurodelay.sim.bitsim.predict`).

One module per pass (:mod:`.prune`, :mod:`.delays`, :mod:`.quantize`; the reports in
:mod:`.reports`); this package's names are the API (``from neurodelay import passes``).
"""
from __future__ import annotations

from neurodelay.core.network import Network, QNetwork
from neurodelay.errors import DelayRangeError, PassError, QuantizationError
from neurodelay.passes.delays import DELAY_MODES, check_delays, reduce_delays, used_delay_max
from neurodelay.passes.prune import prune
from neurodelay.passes.quantize import (
    WEIGHT_RANGES,
    _float_activity,
    mse_range,
    quantize,
    weight_precision,
)
from neurodelay.passes.reports import PassReport, QuantReport, _target

__all__ = ["prune", "check_delays", "reduce_delays", "used_delay_max", "quantize",
           "weight_precision", "mse_range", "run_passes", "PassReport", "QuantReport",
           "DELAY_MODES", "WEIGHT_RANGES", "PassError", "DelayRangeError",
           "QuantizationError", "_float_activity"]


def run_passes(net: Network, target=None, *, clip_delays: bool = False,
               k_per_neuron: int | None = None, sparsity: float | None = None,
               data=None, weight_bits: int | None = None, input_scale: float = 1.0,
               bias_exp_min: int | None = None) -> tuple[QNetwork, list]:
    """check_delays -> (prune, if k_per_neuron or sparsity) -> quantize; returns the
    QNetwork and the list of reports in order."""
    tgt = _target(target)
    net, r1 = check_delays(net, tgt.max_delay, clip=clip_delays, data=data)
    reports = [r1]
    if k_per_neuron is not None or sparsity is not None:
        net, r2 = prune(net, k_per_neuron=k_per_neuron, sparsity=sparsity, data=data)
        reports.append(r2)
    qnet, r3 = quantize(net, tgt, data=data, weight_bits=weight_bits,
                        input_scale=input_scale, bias_exp_min=bias_exp_min)
    reports.append(r3)
    return qnet, reports
