"""neurodelay.hw.fixedpoint: the one home of Loihi 2's integer rules, checked against Lava's
own code, and every consumer (bit-accurate simulator, Lava runner, resource report,
netx exporter) accepting and refusing exactly the same networks."""
from __future__ import annotations

import numpy as np
import pytest

from neurodelay.hw import fixedpoint as fp
from neurodelay.hw.target import arith, load_target

A = arith("loihi2")


def ew(w, nwb):
    return fp.effective_weights(np.array(w), nwb, A).tolist()


def test_mixed_8bit_truncation_drops_the_lsb_toward_minus_infinity():
    assert ew([[101, -3]], 8) == [[100, -4]]
    assert ew([[101, -3]], 9) == [[101, -3]]
    assert ew([[101, -3]], 7) == [[100, -4]]
    assert ew([[103, -5]], 7) == [[100, -8]]


def test_sign_modes_clip_and_truncate_like_lava():
    assert ew([[300, 3]], 7) == [[254, 2]]                 # excitatory: 0..255
    assert ew([[-3, -300]], 8) == [[-3, -255]]             # inhibitory: -255..0
    assert ew([[-3, -300]], 7) == [[-2, -254]]
    assert ew([[300, -300]], 9) == [[255, -256]]           # mixed: -256..255


def test_more_weight_bits_than_lava_handles_are_refused_not_zeroed():
    # Lava shifts by a negative count and silently zeroes every weight: we refuse
    with pytest.raises(fp.FixedPointError, match="num_weight_bits=10 is outside 1..9 for "
                                                 "mixed weights"):
        ew([[1, -1]], 10)
    with pytest.raises(fp.FixedPointError, match="outside 1..8 for excitatory"):
        ew([[3, 5]], 9)
    with pytest.raises(fp.FixedPointError):
        ew([[3, 5]], 0)


def test_effective_weights_match_lava_weightutils():
    from neurodelay._compat import ensure_lava
    ensure_lava()
    from lava.utils.weightutils import clip_weights, determine_sign_mode, truncate_weights
    rng = np.random.default_rng(3)
    checked = 0
    for _ in range(60):
        w = rng.integers(-300, 300, (5, 7))
        if rng.random() < 0.3:
            w = np.abs(w) * rng.choice([-1, 1])
        mode = determine_sign_mode(w)
        assert fp.sign_mode(w) == mode.name.lower()
        nwb = int(rng.integers(1, 11))
        top = fp.max_num_weight_bits(fp.sign_mode(w), A)
        if nwb > top:
            with pytest.raises(fp.FixedPointError):
                fp.effective_weights(w, nwb, A)
            continue
        ref = truncate_weights(clip_weights(w, mode, num_bits=8), mode, nwb)
        assert np.array_equal(fp.effective_weights(w, nwb, A), ref)
        checked += 1
    assert checked > 30


@pytest.mark.parametrize("x", [-8193, -4097, -4096, -1, 0, 1, 4095, 4097, 8388607, -8388607])
@pytest.mark.parametrize("keep", [0, 1, 2048, 3000, 4095, 4096])
def test_decay_rounds_toward_zero_in_every_representation(x, keep):
    import torch
    want = int(np.sign(x * keep) * (abs(x * keep) >> 12))          # Lava's formula
    assert int(fp.decay(np.array([x], np.int64), keep, 12)[0]) == want
    assert fp.decay(np.array([float(x)]), keep, 12)[0] == want
    assert float(fp.decay(torch.tensor([float(x)], dtype=torch.float64), keep, 12)[0]) == want
    v = np.array([float(x)])
    fp.decay_inplace(v, keep, 12)
    assert v[0] == want


def test_encodings_round_trip():
    for dv in (0, 1, 100, 4095):
        assert fp.decay_to_dv(fp.dv_to_decay(dv, A), A) == dv
    for du in (0, 1, 100, 4095):
        assert fp.current_decay_to_du(fp.du_to_current_decay(du, A), A) == du
    assert fp.current_decay_to_du(0.0, A) == 4095 and fp.current_keep(4095, A) == 0
    mant, e, n = fp.bias_encoding(np.array([64 * 4095.0, -64.0, 0.0]), A, 6)
    assert e == 6 and mant.tolist() == [4095, -1, 0] and n == 0
    mant, e, n = fp.bias_encoding(np.array([64 * 5000.0]), A, 6)
    assert e == 7 and mant.tolist() == [2500] and n == 0
    assert fp.threshold(100, A) == 6400 and A.readout_vth == 2 ** 17 - 1
    assert A.state_max == 2 ** 23 and A.v_limit == 2 ** 23 - 1


def test_target_values_come_from_the_toml(tmp_path):
    from neurodelay.hw.target import config_dir
    text = (config_dir() / "loihi2.toml").read_text()
    text = text.replace("state_bits = 24", "state_bits = 16").replace(
        "weight_bits = 8 ", "weight_bits = 6 ")
    p = tmp_path / "small.toml"
    p.write_text(text)
    a = arith(load_target(p))
    assert a.state_max == 2 ** 15 and a.weight_bits == 6 and a.weight_register_bits == 8
    # Lava's register still clips at 8 bits; the target's precision caps num_weight_bits
    assert fp.mantissa_range("mixed", a) == (-256, 255)
    assert fp.max_num_weight_bits("mixed", a) == 7
    assert fp.effective_weights(np.array([[101, -3]]), 7, a).tolist() == [[100, -4]]
    from neurodelay.core.network import QLayer
    q = QLayer(weight=[[101, -3]], weight_exp=0, num_weight_bits=8, delay=[[0, 0]],
               bias_mant=[0], bias_exp=0, du=0, dv=0, vth=10, scale=1.0)
    assert any("num_weight_bits" in s for s in fp.check_qlayer(q, a))
    assert not fp.check_qlayer(q, arith("loihi2"))


# ----------------------------------------------------------------------------- consumers

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st


@st.composite
def qnets(draw):
    from neurodelay.core.network import QLayer, QNetwork
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 31)))
    sizes = (3, 4, 2)
    layers = []
    ok = draw(st.booleans())               # half the networks: every field in range
    for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        pick = (lambda good, any_: draw(st.sampled_from(good if ok else good + any_)))
        hi = pick([3, 127, 255], [256, 300])
        sign = pick(["mixed", "exc", "inh"], [])
        w = rng.integers(0 if sign == "exc" else -hi, 1 if sign == "inh" else hi + 1, (b, a))
        last = k == len(sizes) - 2
        layers.append(QLayer(
            weight=w, weight_exp=pick([-8, -1, 0, 3, 7], [-10, 9]),
            num_weight_bits=pick([1, 5, 8], [9, 10]),
            delay=rng.integers(0, pick([3, 62], [63, 70]) + 1, (b, a)),
            bias_mant=rng.integers(-pick([10, 4096], [6000]), 11, b),
            bias_exp=pick([0, 6, 7], [-1, 8]), du=pick([0, 4095], [4096, 5000]),
            dv=pick([0, 17, 4095], [4096]),
            vth=None if last else pick([0, 100, 2 ** 17 - 1], [2 ** 17, 2 ** 20]),
            scale=1.0, kind="li" if last else "lif"))
    return QNetwork(layers, target="loihi2")


@settings(max_examples=60, deadline=None, derandomize=True)
@given(q=qnets())
def test_every_consumer_accepts_and_refuses_the_same_networks(q, tmp_path_factory):
    """bitsim, the Lava runner, the resource report and the netx exporter apply the one
    set of rules: each refuses exactly the networks fixedpoint.check_qnet refuses."""
    from neurodelay.exporters.loihi2 import ExportError, write_netx
    from neurodelay.hw.resources import resource_report
    from neurodelay.sim import bitsim, lavarun

    problems = fp.check_qnet(q, arith(q))
    refused = {}
    try:
        bitsim.run(q, np.ones((1, 3, 3), np.int64))
        refused["bitsim"] = False
    except bitsim.BitSimError as e:
        refused["bitsim"] = True
        assert problems and problems[0] in str(e)
    try:
        lavarun.check_qnet(q)
        refused["lavarun"] = False
    except lavarun.LavaRunError as e:
        refused["lavarun"] = True
        assert problems[0] in str(e)
    refused["report"] = bool(resource_report(q, "loihi2").violations)
    assert resource_report(q, "loihi2").violations == problems
    path = tmp_path_factory.mktemp("netx") / "n.h5"
    try:
        write_netx(q, path, strict=False)
        refused["netx"] = False
    except ExportError as e:
        refused["netx"] = True
        assert problems[0] in str(e) and not path.exists()
    assert set(refused.values()) == {bool(problems)}, (refused, problems)


def test_current_input_with_a_bound_skips_only_a_wrap_that_cannot_happen():
    a = arith("loihi2")
    h = 1 << (a.accumulator_bits - 1)
    edge = (h >> a.current_shift) - 1                     # the largest bound that cannot wrap
    rng = np.random.default_rng(0)
    x = rng.integers(-edge, edge + 1, 5000)
    x[:2] = (-edge, edge)
    for arr in (x, x.astype(np.float64)):
        assert np.array_equal(fp.current_input(arr, a, bound=edge), fp.current_input(arr, a))
    # one more and the wrap can matter: with that bound the wrap must still be applied
    y = np.array([edge + 1, -(edge + 1), 3])
    for arr in (y, y.astype(np.float64)):
        got = fp.current_input(arr, a, bound=edge + 1)
        assert np.array_equal(got, fp.current_input(arr, a))
        assert got[0] != (edge + 1) << a.current_shift      # it did wrap
