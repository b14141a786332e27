"""Integer delays and the target: check them (raise, or clip and report), reduce them to
fewer delay bits."""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np

from neurodelay.core.network import Network, QNetwork
from neurodelay.errors import DelayRangeError, PassError
from neurodelay.passes.reports import PassReport, _accuracy, _check_data, _tag, _target


def check_delays(net, max_delay: int | None = None, *, clip: bool = False,
                 data=None, target=None) -> tuple[Any, PassReport]:
    """Check that every synapse's integer delay is in 0..max_delay.

    max_delay defaults to the target's ``max_delay`` (hw_configs/). Synapses with
    a zero weight do not count; their delays are set to 0 in the returned network (no
    effect on its behaviour; reported as ``unused_delays_zeroed``).
    Too-long delays raise :class:`DelayRangeError` naming each layer, the number of
    offending synapses, the largest delay and the fix -- unless ``clip=True``: then they
    are clipped to max_delay and the report gives the count (and, with data, the
    accuracy before / after). Works on Network and QNetwork.
    """
    if max_delay is None:
        max_delay = _target(target).max_delay
    max_delay = int(max_delay)
    if max_delay < 0:
        raise PassError(f"max_delay must be >= 0, got {max_delay}")
    if not isinstance(net, (Network, QNetwork)):
        raise PassError(f"check_delays expects a Network or QNetwork, got "
                        f"{type(net).__name__}")
    data = _check_data(net.layers[0].n_in, data)
    rows, problems, layers = [], [], []
    n_clipped = n_zeroed = 0
    for k, layer in enumerate(net.layers):
        used = layer.weight != 0
        d = layer.delay
        over = used & (d > max_delay)
        unused_long = (~used) & (d > max_delay)
        n_over = int(over.sum())
        big = int(d[used].max()) if used.any() else 0
        rows.append({"layer": k, "name": layer.name, "max_delay": big,
                     "over_limit": n_over})
        if n_over:
            problems.append(f"{_tag(k, layer)}: {n_over} synapse(s) with delay > "
                            f"{max_delay} (largest {big})")
        new_d = d.copy()
        new_d[unused_long] = 0
        n_zeroed += int(unused_long.sum())
        if clip:
            new_d[over] = max_delay
            n_clipped += n_over
            rows[-1]["clipped"] = n_over
        changes = {"delay": new_d}
        if layer.recurrent:
            # a recurrent delay E reaches the layer E rows later: its synapse process
            # adds one step, the DelayDense holds E - 1 <= max_delay
            rused = layer.rec_weight != 0
            rover = rused & (layer.rec_delay > max_delay + 1)
            n_rover = int(rover.sum())
            rows[-1]["recurrent_over_limit"] = n_rover
            if n_rover:
                problems.append(f"{_tag(k, layer)}: {n_rover} recurrent synapse(s) with "
                                f"delay > {max_delay + 1} (largest "
                                f"{int(layer.rec_delay[rused].max())}; the recurrent "
                                f"synapse process holds delay - 1 <= {max_delay})")
            if clip and n_rover:
                rd = layer.rec_delay.copy()
                rd[rover] = max_delay + 1
                changes["rec_delay"] = rd
                n_clipped += n_rover
                rows[-1]["clipped"] += n_rover
        layers.append(replace(layer, **changes))
    if problems and not clip:
        raise DelayRangeError(
            "delays exceed the target's maximum of " f"{max_delay} steps:\n  - "
            + "\n  - ".join(problems)
            + f"\nfix: pass --clip-delays (clip=True) to clip them to {max_delay} and see "
              f"the accuracy cost, or retrain with a max delay of at most {max_delay} steps")
    out = replace(net, layers=layers, meta=dict(net.meta))
    rep = PassReport("check_delays", {"max_delay": max_delay, "clipped": n_clipped,
                                      "unused_delays_zeroed": n_zeroed}, rows)
    if n_clipped:
        rep.notes.append(f"clipped {n_clipped} synapse delay(s) to {max_delay}")
        rep.accuracy_before, rep.accuracy_after = _accuracy(net, data), _accuracy(out, data)
    return out, rep


DELAY_MODES = ("clip", "coarse")


def used_delay_max(net) -> int:
    """Largest delay over synapses with a nonzero weight (0 if none)."""
    return max((int(lay.delay[lay.weight != 0].max(initial=0)) for lay in net.layers),
               default=0)


def reduce_delays(net, delay_bits: int, mode: str, target_max: int
                  ) -> tuple[Any, PassReport]:
    """Delays that fit ``delay_bits`` bits (values 0 .. 2**b - 1, never above target_max).

    ``clip``: delays above ``m = min(2**b - 1, target_max)`` become m; shorter ones stay
    exact. ``coarse``: the range is kept at a coarser resolution: with D the largest used
    delay and ``k = ceil(D / (2**b - 1))`` steps per unit, every delay d becomes
    ``k * floor(d / k + 1/2)`` (its stored value fits b bits; the hardware needs a k-step
    delay unit), then is clipped to the largest multiple of k within target_max (so every
    delay stays a whole number of units). The report's ``changes`` give mode,
    delay_bits, max_delay (largest allowed), delay_step (k; 1 for clip), delays_changed
    (used synapses whose delay changed) and largest_delay (after).
    """
    if mode not in DELAY_MODES:
        raise PassError(f"delay mode must be one of {DELAY_MODES}, got {mode!r}")
    b = int(delay_bits)
    if not 1 <= b <= 16:
        raise PassError(f"delay bits {b} out of range; use 1..16 (b bits hold delays "
                        f"0..2**b - 1)")
    step = 1
    if mode == "clip":
        limit = min(2 ** b - 1, int(target_max))
        out, _ = check_delays(net, limit, clip=True)
    else:
        step = max(1, math.ceil(used_delay_max(net) / (2 ** b - 1)))
        layers = []
        for lay in net.layers:
            d = lay.delay.astype(np.int64)
            d = (2 * d + step) // (2 * step) * step          # k * floor(d / k + 1/2)
            layers.append(replace(lay, delay=d.astype(lay.delay.dtype)))
        limit = min(step * (2 ** b - 1), int(target_max) // step * step)
        out, _ = check_delays(replace(net, layers=layers, meta=dict(net.meta)),
                              limit, clip=True)
    changed = sum(int(np.count_nonzero((a.delay != c.delay) & (a.weight != 0)))
                  for a, c in zip(net.layers, out.layers))
    return out, PassReport("reduce_delays", {
        "mode": mode, "delay_bits": b, "max_delay": int(limit), "delay_step": int(step),
        "delays_changed": changed, "largest_delay": used_delay_max(out)})
