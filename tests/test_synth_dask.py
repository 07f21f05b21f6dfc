"""`rig synth --scheduler`: the same job on a real Dask cluster gives the local pool's bytes."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import SYNTH_REFERENCE
from test_synth import digests, one_error_line, synth

distributed = pytest.importorskip("distributed", reason="the dask extra: pip install 'rig[dask]'")


def test_dask_cluster_gives_byte_identical_outputs_to_the_local_pool(phantoms: Path, tmp_path: Path,
                                                                    synth_one_worker: Path) -> None:
    local, dask = synth_one_worker, tmp_path / "dask"
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as cluster:
        r = synth(phantoms, dask, *SYNTH_REFERENCE, "--scheduler", cluster.scheduler_address)
        assert r.returncode == 0, r.stderr
        assert "Dask scheduler" in r.stderr
    d_local, d_dask = digests(local), digests(dask)
    assert len([k for k in d_local if k.endswith(".jpg")]) == 8
    assert d_local == d_dask


def test_unreachable_scheduler_is_one_line(phantoms: Path, tmp_path: Path) -> None:
    line = one_error_line(synth(phantoms, tmp_path / "out", "--set", "digital",
                                "--scheduler", "tcp://127.0.0.1:1", timeout=120))
    assert "--scheduler: cannot reach tcp://127.0.0.1:1" in line
