"""The conformance vectors (firmware/vectors/*.vec) pass on the real firmware in simavr."""

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


def test_vectors_pass_on_portable_core_built_for_the_host(firmware_build):
    # The protocol core is plain C++: built with the PC's g++ (no AVR, no simulator) it must
    # behave the same. rigctl-host serves it on a pty just like rigsim.
    import subprocess

    from fwsim import BUILD

    proc = subprocess.Popen([str(BUILD / "rigctl-host")], stdout=subprocess.PIPE, text=True)
    try:
        pty = proc.stdout.readline().split()[1]
        assert runner.run_vectors(pty, VECTORS) == []
    finally:
        proc.terminate()
        proc.wait(timeout=5)
