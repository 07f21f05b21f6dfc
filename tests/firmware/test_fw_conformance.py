"""The conformance vectors (firmware/vectors/*.vec) pass on the real firmware in simavr.

The same core built for the PC (rigctl-host, the simulated rig's controller) runs them in
tests/test_sim_controller.py."""

from fwsim import VECTORS, runner


def test_vectors_pass_on_firmware(sim):
    failures = runner.run_vectors(sim.pty, VECTORS)
    assert failures == []


def test_runner_notices_a_wrong_expectation(sim, tmp_path):
    # The runner itself must be able to fail, or the test above proves nothing.
    (tmp_path / "bad.vec").write_text("> hello\n< ok rigctl fw=0\\.0\\.0 .*\n")
    failures = runner.run_vectors(sim.pty, tmp_path, edges=False)
    assert len(failures) == 1 and "bad.vec:2" in failures[0]


def test_checked_status_stream_answers_every_line(sim):
    # A host polling status in checked mode: every reply carries its own seq and a valid CRC.
    s = sim.connect()
    for seq in range(200):
        s.send(runner.frame(seq, "status"))
        reply = s.reply()
        assert reply is not None, f"no reply to seq {seq}"
        body, crc_ok = runner.split_crc(reply)
        assert crc_ok and body.startswith(b"#%d ok ms=" % seq), reply

