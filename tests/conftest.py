"""Shared fixtures: tiny bundles of every kind, trained once per test session, and a dashboard runner."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HOME = ROOT / "dashboard" / "Home.py"
# The dashboard's helpers (``lens``) are imported as streamlit run imports them: from dashboard/.
if str(ROOT / "dashboard") not in sys.path:
    sys.path.insert(0, str(ROOT / "dashboard"))
# No background model loading in page tests: a thread loading ConSE while a test stands in for load_backbone
# would keep the stand-in as ConSE for later tests (a test in test_page_open_world.py runs one).
os.environ["CONCEPTLENS_NO_WARM_UP"] = "1"  # lens.startup.NO_WARM_UP


def _quiet(*_args) -> None:
    pass


@pytest.fixture(scope="session")
def tiny_bundles(tmp_path_factory) -> Path:
    """A folder with toy-clip, toy-hash-csd, toy-hash-nocsd and toy-ceir bundles (seconds to train)."""
    from core.backbones.train_clip import ClipTrainConfig, train_clip
    from core.ceir.bottleneck import ProjectionConfig
    from core.ceir.train import CEIRConfig, train_ceir
    from core.ceir.vae import VAEConfig
    from core.concepthash.model import ConceptHashConfig
    from core.concepthash.train import TrainConfig, train_concepthash
    from core.data.spec import DataSpec

    root = tmp_path_factory.mktemp("bundles")
    data = DataSpec(image_size=32, train_per_class=2, test_per_class=1)
    clip = train_clip(
        data,
        ClipTrainConfig(config_name="toyclip-tiny", epochs=1, batch_size=16, device="cpu"),
        root / "toy-clip",
        log=_quiet,
    )
    for name, weight in (("toy-hash-csd", 1.0), ("toy-hash-nocsd", 0.0)):
        train_concepthash(
            str(clip),
            data,
            ConceptHashConfig(bits=6, n_concepts=3, csd_weight=weight),
            TrainConfig(epochs=1, batch_size=16, device="cpu"),
            root / name,
            log=_quiet,
        )
    ceir = CEIRConfig(
        projection=ProjectionConfig(steps=100, eval_every=25),
        vae=VAEConfig(epochs=2, latent_dim=4, hidden_dims=(32, 16), batch_size=16),
        device="cpu",
        kmeans_restarts=10,  # tiny data: a few starts suffice, and tests stay quick
    )
    train_ceir(str(clip), data, "toybirds", ceir, root / "toy-ceir", log=_quiet)
    return root


@pytest.fixture
def dashboard(tiny_bundles, monkeypatch):
    """``open(page)`` runs Home.py with the tiny bundles and switches to ``views/<page>.py``."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("CONCEPTLENS_BUNDLES", str(tiny_bundles))

    def open_page(page: str | None = None, timeout: float = 120):
        app = AppTest.from_file(str(HOME), default_timeout=timeout)
        app.run()
        if page is not None:
            app.switch_page(f"views/{page}.py")
            app.run()
        return app

    return open_page
