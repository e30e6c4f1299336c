"""Kill -9 at random moments of runs of one cohort, sometimes two at once, against the test
server with faults; a clean run then finds everything done, nothing paid twice (``tests/chaos.py``;
``bench/chaos.py`` runs more iterations)."""

from __future__ import annotations

import pytest

from chaos import KEY_ENV, SPEC, run_chaos
from conftest import server_cfg

pytestmark = pytest.mark.slow


def test_kill_minus_nine_at_random_moments_loses_nothing_and_pays_nothing_twice(project, tmp_path):
    (project.root / "cohorts" / "t1" / "spec" / "config.yaml").write_text(SPEC.format(drafts=4))
    cfg = server_cfg(tmp_path / "chaos.cfg", project.server, {"chunk_size": 40}, timeout=5, max_attempts=3,
                     backoff_base=0.05, backoff_max=0.2, api_key_env=KEY_ENV)
    result = run_chaos(project.root, cfg, project.server, iterations=20, seed=25, kill_after=(0.2, 1.2))
    assert result["problems"] == [], result
    assert sum(0 < k["done"] < k["of"] for k in result["kills"]) >= 2, "some kills land while calls are made"
    assert result["faults"] > 0 and result["generations"] == result["kills"][-1]["of"]
