"""Training at scale is never silent (issue 26): every phase of CEIR training and of ConceptHash's evaluation
is named and counted, and the recorded seconds say where the time went; k-means restarts in batches find what
one scikit-learn call finds."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from sklearn.cluster import KMeans

from core.ceir.bottleneck import ProjectionConfig
from core.ceir.clustering import fit_kmeans
from core.ceir.evaluate import EVALUATION_PHASES
from core.ceir.train import PHASES, CEIRConfig, train_ceir
from core.ceir.vae import VAEConfig
from core.data.spec import DataSpec
from core.progress import PhaseClock, TqdmProgress


class Recorder:
    """A progress callback that also hears phase names: [(phase, done, total), ...]."""

    def __init__(self) -> None:
        self.current = None
        self.names: list[str] = []
        self.calls: list[tuple[str | None, int, int]] = []

    def phase(self, name: str) -> None:
        self.current = name
        self.names.append(name)

    def __call__(self, done: int, total: int) -> None:
        self.calls.append((self.current, done, total))


def test_every_phase_of_ceir_training_reports_and_the_seconds_cover_the_whole_call(tmp_path) -> None:
    recorder, lines = Recorder(), []
    config = CEIRConfig(
        projection=ProjectionConfig(steps=60, eval_every=20),
        vae=VAEConfig(epochs=3, latent_dim=4, hidden_dims=(16,), batch_size=16),
        device="cpu",
        kmeans_restarts=4,
    )
    data = DataSpec(image_size=32, train_per_class=2, test_per_class=1)
    started = time.perf_counter()
    out = train_ceir(
        "toyclip-tiny:random", data, "toybirds", config, tmp_path / "b", progress=recorder, log=lines.append
    )
    wall = time.perf_counter() - started
    assert recorder.names == [*PHASES, *EVALUATION_PHASES]
    for name in recorder.names:
        counted = [(done, total) for phase, done, total in recorder.calls if phase == name]
        assert counted, f"phase {name!r} reported no progress"
        assert counted[-1][0] == counted[-1][1], f"phase {name!r} did not reach its total"
    kmeans = [(done, total) for phase, done, total in recorder.calls if phase == "k-means"]
    assert kmeans[-1] == (4, 4)
    assert any(line.startswith("Training the VAE") for line in lines)
    train = json.loads((out / "config.json").read_text())["train"]
    assert list(train["phase_seconds"]) == recorder.names
    assert train["seconds"] >= sum(train["phase_seconds"].values()) - 0.1 * len(recorder.names)
    assert wall - 3.0 <= train["seconds"] <= wall + 0.1


@pytest.mark.parametrize(("n", "k", "restarts", "seed"), [(120, 5, 7, 0), (200, 8, 61, 3), (50, 3, 1, 1)])
def test_batched_restarts_find_what_one_kmeans_call_finds(n: int, k: int, restarts: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)) + rng.integers(0, k, size=(n, 1))
    calls: list[tuple[int, int]] = []
    model, result = fit_kmeans(x, k, seed=seed, n_init=restarts, progress=lambda d, t: calls.append((d, t)))
    reference = KMeans(n_clusters=k, random_state=seed, n_init=restarts).fit(x)
    assert result.inertia == reference.inertia_
    np.testing.assert_array_equal(result.labels, reference.labels_)
    np.testing.assert_array_equal(result.centers, reference.cluster_centers_)
    assert calls[-1] == (restarts, restarts) and len(calls) <= 30
    assert [d for d, _ in calls] == sorted({d for d, _ in calls})
    assert model.random_state == seed and model.n_init == restarts


def test_fit_kmeans_refuses_zero_restarts() -> None:
    with pytest.raises(ValueError, match="at least one restart"):
        fit_kmeans(np.zeros((5, 2)), 2, n_init=0)


def test_phase_clock_times_phases_and_tells_the_bar() -> None:
    bar = TqdmProgress("train")
    clock = PhaseClock(bar)
    with clock.phase("vae") as progress:
        assert progress is bar and bar.desc == "train: vae"
        time.sleep(0.02)
    with clock.phase("k-means"):
        assert bar.desc == "train: k-means"
    assert list(clock.seconds) == ["vae", "k-means"] and clock.seconds["vae"] >= 0.02
    assert clock.elapsed() >= sum(clock.seconds.values())


def test_a_plain_function_is_a_progress_callback_too() -> None:
    calls = []
    clock = PhaseClock(lambda done, total: calls.append((done, total)), log=calls.append)
    with clock.phase("embedding", "Embedding ...") as progress:
        progress(1, 2)
    assert calls == ["Embedding ...", (1, 2)]


def test_concepthash_evaluation_after_training_reports_every_phase(tmp_path) -> None:
    from core.concepthash.evaluate import EVALUATION_PHASES as HASH_PHASES
    from core.concepthash.model import ConceptHashConfig
    from core.concepthash.train import TrainConfig, train_concepthash

    recorder = Recorder()
    data = DataSpec(image_size=32, train_per_class=2, test_per_class=1)
    out = train_concepthash(
        "toyclip-tiny:random",
        data,
        ConceptHashConfig(bits=6, n_concepts=3),
        TrainConfig(epochs=1, batch_size=16, device="cpu"),
        tmp_path / "hash",
        progress=recorder,
        log=lambda *_: None,
    )
    assert recorder.names == list(HASH_PHASES)
    for name in HASH_PHASES:
        counted = [(done, total) for phase, done, total in recorder.calls if phase == name]
        assert counted and counted[-1][0] == counted[-1][1], f"phase {name!r} did not count to its end"
    database = [(done, total) for phase, done, total in recorder.calls if phase == "evaluation: database"]
    assert database[-1] == (2 * 2 * 24, 2 * 2 * 24)  # codes, then attention, of the 48 database images
    train = json.loads((out / "config.json").read_text())["train"]
    assert list(train["evaluation_phase_seconds"]) == list(HASH_PHASES)
    assert train["evaluation_seconds"] >= sum(train["evaluation_phase_seconds"].values()) - 0.2
