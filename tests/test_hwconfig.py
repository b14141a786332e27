"""Hardware targets (hw_configs/*.toml) and resource reports."""
import tomllib

import numpy as np
import pytest

from neurodelay.core.network import Layer, Network, QLayer, QNetwork
from neurodelay.errors import FitError, TargetError
from neurodelay.hw.resources import check_fits, format_resource_report, resource_report
from neurodelay.hw.target import Target, arith, available_targets, config_dir, load_target


def make_net(delays=((0, 3), (5, 0)), n_hidden=2):
    """2 inputs -> n_hidden LIF -> 2 LI; hidden weights with one zero (not a synapse)."""
    w1 = np.ones((n_hidden, 2))
    w1[0, 1] = 0.0
    d1 = np.zeros((n_hidden, 2), int)
    d1[:2] = delays
    hidden = Layer(weight=w1, delay=d1, bias=np.zeros(n_hidden), decay=0.5, threshold=1.0,
                   name="h")
    out = Layer(weight=np.ones((2, n_hidden)), delay=np.zeros((2, n_hidden), int),
                bias=np.zeros(2), decay=0.5, kind="li", name="o")
    return Network(layers=[hidden, out])


def make_qnet(**over):
    fields = dict(weight=[[100, -3], [0, 255]], weight_exp=0, num_weight_bits=8,
                  delay=[[0, 2], [1, 0]], bias_mant=[0, 10], bias_exp=6, du=4095, dv=0,
                  vth=1000, scale=1.0, kind="lif", name="h")
    fields.update(over)
    out = QLayer(weight=[[1, 1]], weight_exp=0, num_weight_bits=8, delay=[[0, 0]],
                 bias_mant=[0], bias_exp=0, du=4095, dv=0, vth=None, scale=1.0, kind="li")
    return QNetwork(layers=[QLayer(**fields), out], target="loihi2")


BASE_TOML = """
name = "tiny"
description = "test target"
[synapse]
weight_bits = 8
weight_exp_min = -8
weight_exp_max = 7
sign_mode = "mixed"
delay_bits = 6
max_delay = 4
[neuron]
du_bits = 12
dv_bits = 12
vth_bits = 17
state_bits = 24
bias_mant_bits = 13
bias_exp_bits = 3
[spikes]
graded = true
payload_bits = 24
[timing]
latency_per_layer = 1
[resources]
cores_per_chip = 4
chips = 1
neurons_per_core = 2
synaptic_memory_per_core = 2
"""


def write_target(tmp_path, text=BASE_TOML, name="tiny.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


# ----------------------------------------------------------------------------- loading

def test_builtin_targets_load_and_are_named_after_their_file():
    names = available_targets()
    assert {"loihi2", "loihi1", "nodelay"} <= set(names)
    for n in names:
        t = load_target(n)
        assert isinstance(t, Target) and t.name == n and t.description


def test_loihi2_facts():
    t = load_target("loihi2")
    assert (t.weight_bits, t.sign_mode, t.delay_bits) == (8, "mixed", 6)
    assert (t.max_delay, t.max_delay_hardware) == (62, 63)
    assert (t.du_bits, t.dv_bits, t.vth_bits, t.state_bits) == (12, 12, 17, 24)
    assert (t.bias_mant_bits, t.bias_exp_bits) == (13, 3)
    assert t.graded and t.payload_bits == 24 and t.latency_per_layer == 1
    assert (t.cores_per_chip, t.neurons_per_core) == (128, 8192)
    assert t.weight_exp_min < 0 < t.weight_exp_max
    from neurodelay.hw import fixedpoint as fp
    assert fp.mantissa_range("mixed", arith(t)) == (-256, 255)   # Lava Dense's clip


def test_other_targets_differ():
    l1, nd = load_target("loihi1"), load_target("nodelay")
    assert not l1.graded and l1.neurons_per_core == 1024
    assert nd.max_delay == 0 and not nd.has_delays and nd.delay_bits == 0


def test_load_by_path_and_passthrough(tmp_path):
    t = load_target(write_target(tmp_path))
    assert t.name == "tiny" and t.source.endswith("tiny.toml")
    assert t.max_delay_hardware == 4                         # defaults to max_delay
    assert load_target(str(write_target(tmp_path))) == t
    assert load_target(t) is t


def test_unknown_name_lists_targets():
    with pytest.raises(TargetError, match="unknown target 'loihi9'; available targets: "
                                          ".*loihi1, loihi2, nodelay"):
        load_target("loihi9")
    with pytest.raises(TargetError, match="target file not found"):
        load_target("/nonexistent/x.toml")


def _edit(old, new):
    assert old in BASE_TOML
    return BASE_TOML.replace(old, new)


@pytest.mark.parametrize("text, pattern", [
    ("name = [", "not valid TOML"),
    (_edit('name = "tiny"\n', ""), "name: missing"),
    (_edit('description = "test target"', 'description = ""'), "description: must be a non"),
    (_edit("weight_bits = 8\n", ""), r"\[synapse\] weight_bits: missing \(a int\)"),
    (_edit("weight_bits = 8", 'weight_bits = "8"'), r"\[synapse\] weight_bits: must be a int"),
    (_edit("weight_bits = 8", "weight_bits = 8.0"), r"\[synapse\] weight_bits: must be a int"),
    (_edit("weight_bits = 8", "weight_bits = 0"), r"\[synapse\] weight_bits: must be > 0"),
    (_edit("graded = true", "graded = 1"), r"\[spikes\] graded: must be a bool"),
    (_edit("max_delay = 4", "max_dealy = 4"), r"\[synapse\] max_dealy: unknown field"),
    (_edit("max_delay = 4", "max_delay = 64"), r"max_delay: 64 does not fit in delay_bits"),
    (_edit("max_delay = 4", "max_delay = -1"), r"max_delay: must be >= 0"),
    (_edit("max_delay = 4", "max_delay = 4\nmax_delay_hardware = 3"),
     "max_delay_hardware: 3 < max_delay 4"),
    (_edit("weight_exp_min = -8", "weight_exp_min = 9"), "weight_exp_min: 9 > weight_exp_max"),
    (_edit('sign_mode = "mixed"', 'sign_mode = "both"'), "sign_mode: must be one of"),
    (_edit("payload_bits = 24", "payload_bits = 0"), "graded = true needs payload_bits > 0"),
    (_edit("[timing]\nlatency_per_layer = 1\n", ""), r"\[timing\]: missing table"),
    (_edit("chips = 1", "chips = 0"), r"\[resources\] chips: must be > 0"),
    (BASE_TOML + "\n[extra]\nx = 1\n", "unknown top-level entries"),
])
def test_bad_toml_names_file_and_field(tmp_path, text, pattern):
    p = write_target(tmp_path, text, "bad.toml")
    with pytest.raises(TargetError, match=pattern) as e:
        load_target(p)
    assert str(p) in str(e.value)


def test_builtin_files_are_plain_toml():
    for n in available_targets():
        data = tomllib.loads((config_dir() / f"{n}.toml").read_text())
        assert data["name"] == n


# ----------------------------------------------------------------------------- reports

def test_report_numbers():
    r = resource_report(make_net(), "loihi2")
    h, o = r.layers
    assert (h["neurons"], h["synapses"], h["inputs"]) == (2, 3, 2)
    assert h["synaptic_memory_bytes"] == 6                  # ceil(3 * (8 + 6) / 8)
    assert (h["delay_min"], h["delay_max"]) == (0, 5)        # zero weight's delay 3 unused
    assert (h["max_fan_in"], h["max_fan_out"]) == (2, 2)
    assert (o["synapses"], o["synaptic_memory_bytes"], o["cores"]) == (4, 7, 1)
    assert r.totals == {"neurons": 4, "synapses": 7, "synaptic_memory_bytes": 13,
                           "cores": 2, "chips_needed": 1}
    assert r.fits and r.violations == []
    assert "8 weight + 6 delay bits" in r.memory_formula
    r = resource_report(make_net(), "nodelay")
    assert r.layers[0]["synaptic_memory_bytes"] == 3      # ceil(3 * 8 / 8)


def test_cores_take_the_larger_of_neurons_and_memory(tmp_path):
    t = load_target(write_target(tmp_path))                  # 2 neurons, 2 bytes per core
    r = resource_report(make_net(n_hidden=5), t)
    h = r.layers[0]
    # 5 neurons -> 3 cores; 9 synapses * 14 bits = 16 bytes -> 8 cores
    assert (h["synapses"], h["synaptic_memory_bytes"], h["cores"]) == (9, 16, 8)


def test_violation_delay_above_max(tmp_path):
    t = load_target(write_target(tmp_path, _edit("chips = 1", "chips = 100")))
    r = resource_report(make_net(delays=((6, 0), (5, 9))), t)
    assert r.violations == ["layer 0 'h': max_delay: 9 > allowed 4 (3 synapses above it)"]
    assert not r.fits


def test_nodelay_target_refuses_delays():
    with pytest.raises(FitError, match="layer 0 'h': uses synaptic delays .*up to 5 steps, "
                                       "1 synapses with delay > 0.* target 'nodelay' has no "
                                       "synaptic delays"):
        check_fits(make_net(), "nodelay")
    report = check_fits(make_net(delays=((0, 3), (0, 0))), "nodelay")   # 3 is on a zero weight
    assert report.fits


def test_violation_neurons_fan_in_fan_out_and_cores(tmp_path):
    text = _edit("synaptic_memory_per_core = 2", "synaptic_memory_per_core = 1000\n"
                 "max_fan_in = 1\nmax_fan_out = 2\nmax_neurons_per_layer = 3")
    t = load_target(write_target(tmp_path, text))
    r = resource_report(make_net(n_hidden=5), t)
    v = r.violations
    assert "layer 0 'h': max_neurons_per_layer: 5 > allowed 3" in v
    assert "layer 0 'h': max_fan_in: 2 > allowed 1" in v
    assert "layer 0 'h': max_fan_out: 5 > allowed 2" in v
    assert "layer 1 'o': max_fan_in: 5 > allowed 1" in v
    # cores: 3 (hidden) + 1 (out) = 4 fits 4 cores; now with a 1-core chip
    assert not any("total cores" in s for s in v)
    t1 = load_target(write_target(tmp_path, text.replace("cores_per_chip = 4",
                                                          "cores_per_chip = 3"), "t1.toml"))
    v1 = resource_report(make_net(n_hidden=5), t1).violations
    assert "network: total cores: 4 > allowed 3 (1 chip(s) x 3 cores)" in v1


def test_quantized_field_violations(tmp_path):
    assert resource_report(make_qnet(), "loihi2").violations == []
    cases = {
        "weight (8-bit mixed)": make_qnet(weight=[[300, 0], [0, -257]]),
        "weight_exp": make_qnet(weight_exp=-9),
        "num_weight_bits": make_qnet(num_weight_bits=10),
        "bias_mant (13-bit signed)": make_qnet(bias_mant=[4096, 0]),
        "bias_exp (3-bit)": make_qnet(bias_exp=8),
        "max_delay": make_qnet(delay=[[63, 0], [0, 0]]),
    }
    for what, q in cases.items():
        v = resource_report(q, "loihi2").violations
        assert len(v) == 1 and v[0].startswith(f"layer 0 'h': {what}"), (what, v)
    assert "(2 of 4)" in resource_report(cases["weight (8-bit mixed)"], "loihi2").violations[0]
    small = load_target(write_target(tmp_path, _edit("vth_bits = 17", "vth_bits = 8")
                                     .replace("du_bits = 12", "du_bits = 4")))
    v = resource_report(make_qnet(du=100), small).violations
    assert any("vth (8-bit): values 1000..1000 outside the allowed 0..255" in s for s in v)
    assert any("du (4-bit)" in s for s in v)


def test_notes_binary_spikes_and_target_mismatch():
    notes = resource_report(make_qnet(), "loihi1").notes
    assert any("binary spikes only" in n for n in notes)
    assert any("made for target 'loihi2'" in n for n in notes)
    assert not any("binary" in n for n in resource_report(make_net(), "loihi2").notes)


def test_format_resource_report():
    ok = format_resource_report(resource_report(make_net(), "loihi2"))
    lines = ok.splitlines()
    assert lines[0] == "Resource estimate for target 'loihi2'"
    assert lines[1].split() == ["layer", "kind", "in", "neurons", "synapses", "syn.mem", "B",
                                "cores", "delays", "fan-in", "fan-out"]
    assert lines[3].split() == ["0", "h", "lif", "2", "2", "3", "6", "1", "0..5", "2", "2"]
    total = [ln for ln in lines if ln.startswith("total")]
    assert len(total) == 1 and total[0].split() == ["total", "4", "7", "13", "2"]
    assert "chips needed: 1" in lines
    assert "fits: no limit violated" in ok
    bad = format_resource_report(resource_report(make_net(), "nodelay"))
    assert "VIOLATIONS (1):" in bad and "no synaptic delays" in bad


def test_report_rejects_non_networks():
    with pytest.raises(TargetError, match="Network or QNetwork"):
        resource_report("net.h5", "loihi2")
