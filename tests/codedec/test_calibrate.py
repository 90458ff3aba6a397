"""AdaDec's threshold: the logistic fit recovers a known boundary; it is stored per model and used."""

from __future__ import annotations

import math
import random

import pytest

from codedec.adadec import FALLBACK_TAU
from codedec.calibrate import Calibration, collect, fit_threshold, load_tau, package_files, save_calibration
from codedec.strategy import make_strategy


def synthetic(tau: float, slope: float, n: int, seed: int = 0):
    rng = random.Random(seed)
    h = [rng.uniform(0.0, 5.0) for _ in range(n)]
    y = [int(rng.random() < 1 / (1 + math.exp(-slope * (x - tau)))) for x in h]
    return h, y


@pytest.mark.parametrize("tau,slope", [(1.7, 2.0), (0.6, 4.0), (3.2, 1.0)])
def test_the_fit_recovers_a_known_boundary(tau, slope):
    got, a, b = fit_threshold(*synthetic(tau, slope, 20000))
    assert got == pytest.approx(tau, abs=0.12) and a == pytest.approx(slope, rel=0.15)


def test_no_threshold_to_learn_is_an_error():
    with pytest.raises(ValueError, match="alike"):
        fit_threshold([0.1, 0.2, 3.0], [1, 1, 1])
    h, y = synthetic(2.0, 2.0, 2000)
    with pytest.raises(ValueError, match="slope"):
        fit_threshold(h, [1 - v for v in y])  # more entropy, fewer mistakes


def test_collect_teacher_forces_real_code(tiny):
    h, y = collect(tiny, package_files("click"), windows=2, window_tokens=48)
    assert len(h) == len(y) == 2 * 47 and set(y) <= {0, 1}
    assert all(0.0 <= x <= math.log(len(tiny.tokenizer)) + 1e-3 for x in h)


def test_stored_per_model_and_used_by_adadec(tmp_path, monkeypatch):
    monkeypatch.setenv("CODEDEC_CACHE", str(tmp_path))
    source = str(tmp_path / "weights" / "my-model")
    assert load_tau(source) is None and make_strategy("adadec", source).config.tau == FALLBACK_TAU
    save_calibration(Calibration(tau=2.25, a=1.0, b=-2.25, positions=10, mismatch_rate=0.3, package="click",
                                 model="m", source=source))
    assert load_tau(source) == 2.25 and make_strategy("adadec", source).config.tau == 2.25
    assert load_tau(str(tmp_path / "weights" / "other")) is None  # keyed by the weights' place
