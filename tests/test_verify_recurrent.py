"""export + verify of a trained recurrent run (issue 22): the deploy folder holds the Lava
process network file (no netx file, and the report says why); `verify --lava N` builds
the Lava processes FROM THAT FILE and compares every layer's spikes and the readout at
every step with the bit-accurate simulator."""
import json

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from neurodelay import api
from neurodelay.cli import main
from neurodelay.deploy.artifact import load_artifact
from neurodelay.deploy.verify import verify_run
from neurodelay.errors import ArtifactError


@pytest.fixture(scope="module")
def rec_verified(work, data):
    out = work / "rec"
    api.train_run(str(out), preset="tiny", hidden=[16, 12], epochs=3, batch_size=16,
                  seed=2, recurrent=True, recurrent_max_delay_ms=60.0,
                  train_file=str(data["train"]), test_file=str(data["test"]),
                  progress=False, log=lambda m: None)
    res = verify_run(out, "loihi2", lava=3, tolerance=100, progress=False,
                     log=lambda m: None)
    return out, res


def test_verify_recurrent_run_lava_from_the_exported_file(rec_verified):
    out, res = rec_verified
    r = res.to_dict()
    art = load_artifact(r["artifact"])
    assert art.qnet.recurrent and all(lay.recurrent for lay in art.qnet.layers[:-1])
    assert r["lava_samples"] == 3 and r["lava_mismatches"] == 0, r["lava"]["first_mismatch"]
    assert r["lava_source"] == f"Lava process network file {art.folder}/network.lava.h5"
    assert r["lava"]["spike_mismatches"] == [0, 0, 0] and r["lava"]["v_mismatches"] == 0
    assert sum(r["lava"]["lava_spike_counts"][:2]) > 0
    assert r["passed"] and r["float_agreement"] == 1.0
    assert r["agreement"] >= 0.8
    rec = [st["recurrent_synapses"] for st in r["resources"]["layers"]]
    assert rec[0] > 0 and rec[1] > 0 and rec[2] == 0


def test_recurrent_deploy_folder_files_and_why(rec_verified):
    out, res = rec_verified
    folder = load_artifact(res.artifact).folder
    rep = json.loads((folder / "deploy.json").read_text())
    assert "netx" not in rep["files"] and rep["files"]["lava"] == "network.lava.h5"
    assert not (folder / "network.netx.h5").exists()
    assert "cannot carry recurrent delays" in rep["file_notes"]["netx"]
    assert rep["netx"]["written"] is False
    assert (folder / "model.quantized.nir").exists()
    readme = (folder / "README.txt").read_text()
    assert "build_from_file" in readme and "cannot carry recurrent delays" in readme
    # the recurrent layers' synapses are what the hash covers: the file is checked too
    with h5py.File(folder / "network.lava.h5", "a") as f:
        w = f["layers/0/rec/weights"]
        w[0, 0] = int(w[0, 0]) + 2
    with pytest.raises(ArtifactError, match="network.lava.h5: does not hold"):
        load_artifact(folder)
    with h5py.File(folder / "network.lava.h5", "a") as f:
        w = f["layers/0/rec/weights"]
        w[0, 0] = int(w[0, 0]) - 2
    load_artifact(folder)


def test_export_cli_quantized_nir_of_a_recurrent_run(rec_verified, tmp_path):
    import nir

    out, _ = rec_verified
    r = CliRunner().invoke(main, ["export", str(out), "--target", "nir", "--variant",
                                  "quantized", "--out", str(tmp_path / "q.nir")])
    assert r.exit_code == 0, r.output
    from neurodelay.hw import fixedpoint as fp
    from neurodelay.hw.target import arith
    from neurodelay.nir.importer import to_network

    g = nir.read(tmp_path / "q.nir")
    assert g.metadata["recurrent"] and g.metadata["variant"] == "quantized"
    # the recurrent cycles carry the quantized recurrent synapses in float units (their
    # own exponent, the layer's scale) and their delays
    qnet = load_artifact(r.output.split("artifact ")[1].split(" (")[0]).qnet
    back = to_network(g, dt=qnet.dt).network
    a = arith(qnet)
    for ql, lay in zip(qnet.layers[:2], back.layers[:2]):
        want = fp.effective_weights(ql.rec_weight, ql.rec_num_weight_bits, a) * \
            fp.weight_unit(ql.rec_weight_exp, a) * ql.scale
        np.testing.assert_allclose(lay.rec_weight, want, rtol=1e-5, atol=1e-7)
        used = ql.rec_weight != 0
        np.testing.assert_array_equal(lay.rec_delay[used], ql.rec_delay[used])
    assert not back.layers[2].recurrent


def test_finetuned_recurrent_run_is_hardware_exact(rec_verified, tmp_path):
    """Hardware-exact fine-tuning of the recurrent run at 4-bit weights / 3-bit delays:
    the fine-tuned PyTorch model == bitsim (every readout value and hidden spike), and
    Lava running the exported file == bitsim."""
    from neurodelay.train.finetune import FinetuneConfig, finetune

    out, _ = rec_verified
    ft = tmp_path / "ft"
    finetune(out, ft, FinetuneConfig(weight_bits=4, delay_bits=3, epochs=1), progress=False,
             threads=1, log=lambda m: None)
    r = verify_run(ft, "loihi2", lava=1, tolerance=100, progress=False,
                   log=lambda m: None).to_dict()
    assert r["reference_exact"] == {"readout_equal": True, "spikes_equal": True}
    assert r["agreement"] == 1.0 and r["passed"]
    assert r["lava_mismatches"] == 0 and "network.lava.h5" in r["lava_source"]
    art = load_artifact(r["artifact"])
    assert art.qnet.recurrent and art.qnet.weight_bits == 4
