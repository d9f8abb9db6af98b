"""The CEIR concept VAE: loss against hand computation, model shapes and modes, training and resuming."""

from __future__ import annotations

import math

import pytest
import torch

from core.ceir.vae import ConceptVAE, VAEConfig, train_vae, vae_loss

SMALL = {"latent_dim": 8, "hidden_dims": (64, 32), "batch_size": 64, "lr": 3e-3}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run faster on one thread when the two shared cores are busy."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def low_rank_data(n_train: int, n_val: int, concepts: int = 20, rank: int = 3):
    """Rank-3 signal plus a little noise in 20-D, z-scored with the train statistics."""
    gen = torch.Generator().manual_seed(7)
    mixing = torch.randn(rank, concepts, generator=gen)

    def sample(n: int) -> torch.Tensor:
        return torch.randn(n, rank, generator=gen) @ mixing + 0.1 * torch.randn(n, concepts, generator=gen)

    train, val = sample(n_train), sample(n_val)
    mean, std = train.mean(0), train.std(0)
    return (train - mean) / std, (val - mean) / std


def quiet(_: str) -> None:
    pass


# ---- loss ----------------------------------------------------------------------------------------


def test_vae_loss_standard_normal_posterior_has_zero_kl():
    terms = vae_loss(torch.ones(3, 4), torch.ones(3, 4), torch.zeros(3, 2), torch.zeros(3, 2), beta=1.0)
    assert terms["recon"].item() == 0.0
    assert terms["kl"].item() == 0.0
    assert terms["total"].item() == 0.0


def test_vae_loss_hand_computed():
    recon = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    target = torch.zeros(2, 2)
    mu = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    logvar = torch.tensor([[0.0, math.log(2.0)], [0.0, 0.0]])
    terms = vae_loss(recon, target, mu, logvar, beta=0.5)
    # MSE over all four elements: (1 + 4 + 9 + 16) / 4 = 7.5.
    assert terms["recon"].item() == pytest.approx(7.5)
    # Row 0: dim 0 (mu=1, var=1) gives -0.5 * (1 + 0 - 1 - 1) = 0.5;
    #        dim 1 (mu=0, var=2) gives -0.5 * (1 + ln 2 - 0 - 2) = 0.5 * (1 - ln 2).
    # Row 1 is N(0, 1): 0. Mean over the batch of 2 rows:
    kl = (0.5 + 0.5 * (1 - math.log(2.0))) / 2
    assert terms["kl"].item() == pytest.approx(kl)
    assert terms["total"].item() == pytest.approx(7.5 + 0.5 * kl)


# ---- model ---------------------------------------------------------------------------------------


def test_shapes_and_layer_layout():
    torch.manual_seed(0)
    config = VAEConfig(latent_dim=5, hidden_dims=(16, 8))
    model = ConceptVAE(12, config)
    recon, mu, logvar = model(torch.randn(6, 12))
    assert recon.shape == (6, 12) and mu.shape == (6, 5) and logvar.shape == (6, 5)
    kinds = [type(m).__name__ for m in model.encoder]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU"] * 2
    assert [m.out_features for m in model.encoder if isinstance(m, torch.nn.Linear)] == [16, 8]
    decoder_linear = [m for m in model.decoder if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in decoder_linear] == [(5, 8), (8, 16), (16, 12)]
    assert isinstance(model.decoder[-1], torch.nn.Linear)  # no output activation: targets are z-scores


def test_train_mode_samples_and_eval_mode_decodes_the_mean():
    torch.manual_seed(0)
    model = ConceptVAE(10, VAEConfig(latent_dim=4, hidden_dims=(16,)))
    x = torch.randn(8, 10)
    first, _, _ = model(x, generator=torch.Generator().manual_seed(3))
    again, _, _ = model(x, generator=torch.Generator().manual_seed(3))
    other, _, _ = model(x, generator=torch.Generator().manual_seed(4))
    assert torch.equal(first, again) and not torch.allclose(first, other)
    model.eval()
    recon, mu, _ = model(x)
    assert torch.equal(recon, model.decode(mu))


def test_latent_mean_is_deterministic_and_restores_mode():
    torch.manual_seed(0)
    model = ConceptVAE(10, VAEConfig(latent_dim=4, hidden_dims=(16,)))
    x = torch.randn(50, 10)
    model(x)  # one train-mode pass moves the BatchNorm running statistics away from their defaults
    model.train()
    a, b = model.latent_mean(x), model.latent_mean(x, batch_size=7)
    assert model.training
    assert torch.equal(a, model.latent_mean(x))
    assert torch.allclose(a, b, atol=1e-6)
    model.eval()
    assert torch.allclose(a, model.encode(x)[0], atol=1e-6)


def test_bad_inputs_are_rejected():
    model = ConceptVAE(10, VAEConfig(latent_dim=4, hidden_dims=(16,)))
    with pytest.raises(ValueError, match="expects 10"):
        model.latent_mean(torch.zeros(3, 9))
    with pytest.raises(ValueError, match="at least 2"):
        train_vae(torch.zeros(1, 10), VAEConfig(epochs=1), log=quiet)
    with pytest.raises(ValueError, match="NaN"):
        train_vae(torch.full((4, 10), float("nan")), VAEConfig(epochs=1), log=quiet)
    with pytest.raises(ValueError, match="batch_size"):
        VAEConfig(batch_size=1)


def test_config_round_trip():
    config = VAEConfig(latent_dim=3, hidden_dims=(7, 5), beta=0.2, epochs=4)
    assert VAEConfig.from_dict(config.to_dict() | {"unknown": 1}) == config


# ---- training ------------------------------------------------------------------------------------


def test_training_reduces_loss_and_beats_the_mean_predictor():
    x_train, x_val = low_rank_data(400, 200)
    model, history = train_vae(x_train, VAEConfig(**SMALL, epochs=20), x_val=x_val, log=quiet)
    assert not model.training
    assert [row["epoch"] for row in history] == list(range(1, 21))
    assert history[-1]["total"] < 0.5 * history[0]["total"]
    # Predicting the train mean for every validation row has MSE = the validation variance around it.
    mean_predictor_mse = ((x_val - x_train.mean(0)) ** 2).mean().item()
    recon_mse = ((model.decode(model.latent_mean(x_val)) - x_val) ** 2).mean().item()
    assert recon_mse == pytest.approx(history[-1]["val_recon"], rel=1e-4)
    assert recon_mse < 0.25 * mean_predictor_mse


def test_last_batch_of_one_is_dropped():
    # 65 rows with batch size 64 would leave a batch of one, which BatchNorm cannot train on.
    x_train, _ = low_rank_data(65, 0)
    _, history = train_vae(x_train, VAEConfig(**SMALL, epochs=1), log=quiet)
    assert math.isfinite(history[0]["total"])


class Interrupt(Exception):
    pass


def stop_after(epochs: int):
    def progress(done: int, total: int) -> None:
        if done == epochs:
            raise Interrupt

    return progress


def test_resume_gives_the_same_result_as_an_uninterrupted_run(tmp_path):
    x_train, x_val = low_rank_data(200, 50)
    config = VAEConfig(**SMALL, epochs=4, seed=3)
    straight, straight_history = train_vae(
        x_train, config, x_val=x_val, checkpoint=tmp_path / "a.ckpt", log=quiet
    )

    ckpt = tmp_path / "b.ckpt"
    with pytest.raises(Interrupt):
        train_vae(x_train, config, x_val=x_val, checkpoint=ckpt, progress=stop_after(2), log=quiet)
    halfway = torch.load(ckpt, weights_only=True)
    assert halfway["epoch"] == 2
    resumed, resumed_history = train_vae(
        x_train, config, x_val=x_val, checkpoint=ckpt, resume=True, log=quiet
    )

    assert resumed_history == straight_history
    for name, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name
    # The second half really trained: the weights moved on from the epoch-2 checkpoint.
    assert not torch.equal(halfway["model"]["mu_head.weight"], resumed.state_dict()["mu_head.weight"])


def test_resume_refuses_a_checkpoint_from_other_settings(tmp_path):
    x_train, _ = low_rank_data(100, 0)
    ckpt = tmp_path / "vae.ckpt"
    train_vae(x_train, VAEConfig(**SMALL, epochs=1), checkpoint=ckpt, log=quiet)
    with pytest.raises(ValueError, match="different VAE configuration"):
        train_vae(x_train, VAEConfig(**SMALL, epochs=1, beta=0.5), checkpoint=ckpt, resume=True, log=quiet)
