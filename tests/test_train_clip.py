"""The ToyBirds CLIP's training pieces and its evaluation: each metric on an oracle and a counterfeit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core.backbones import evaluate_clip as ev
from core.backbones import train_clip as tc
from core.data import toybirds
from core.data.spec import DataSpec, open_split


def test_loss_with_identity_positives_is_the_clip_loss():
    torch.manual_seed(0)
    images, texts = torch.randn(5, 8), torch.randn(5, 8)
    scale = torch.tensor(np.log(10.0))
    loss = tc.multi_positive_clip_loss(images, texts, scale, torch.eye(5, dtype=torch.bool))
    logits = 10.0 * F.normalize(images, dim=-1) @ F.normalize(texts, dim=-1).t()
    target = torch.arange(5)
    expected = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)


def test_loss_spreads_targets_over_every_true_text():
    # Image 0 is described by texts 0 and 1; image 1 only by text 1.  Unit vectors, scale 1.
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    texts = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    positives = torch.tensor([[True, True], [False, True]])
    loss = tc.multi_positive_clip_loss(images, texts, torch.tensor(0.0), positives)
    logits = images @ texts.t()  # identity
    log_p = torch.log_softmax(logits, dim=1)
    log_q = torch.log_softmax(logits.t(), dim=1)
    by_image = -(0.5 * log_p[0, 0] + 0.5 * log_p[0, 1]) - log_p[1, 1]
    by_text = -log_q[0, 0] - (0.5 * log_q[1, 0] + 0.5 * log_q[1, 1])
    assert float(loss) == pytest.approx(float(0.5 * (by_image / 2 + by_text / 2)), rel=1e-6)


def test_claim_positives_follow_the_facts():
    facts = [
        frozenset({("head", "colour", "red"), ("family", "jay")}),
        frozenset({("head", "colour", "blue")}),
    ]
    claims = [frozenset({("head", "colour", "red")}), frozenset(), frozenset({("head", "colour", "blue")})]
    assert tc.claim_positives(facts, claims).tolist() == [[True, True, False], [False, True, True]]


def test_the_stream_draws_fresh_images_every_epoch_and_every_image_is_its_own_positive():
    data = DataSpec(image_size=32, train_per_class=1)
    preprocess = lambda image: torch.from_numpy(np.asarray(image, dtype=np.float32))  # noqa: E731
    tokenize = lambda texts: torch.tensor([len(t) for t in texts])  # noqa: E731
    first = tc.CaptionStream(data, 0, 24, preprocess, tokenize, seed=0)
    second = tc.CaptionStream(data, 24, 24, preprocess, tokenize, seed=0)
    a, b = first[3], second[3]
    assert not torch.equal(a[0], b[0])  # another image of the same species
    assert torch.equal(first[3][0], a[0]) and first[3][1] == a[1]  # deterministic
    pixels, tokens, facts, claims = first.collate([first[i] for i in range(8)])
    positives = tc.claim_positives(facts, claims)
    assert pixels.shape[0] == tokens.shape[0] == 8 and positives.diagonal().all()


class _StubBackbone:
    """Texts and images embedded in a (part, colour) one-hot space; ``seen`` are the parts images show."""

    def __init__(self, seen=toybirds.PARTS, part_blind=False):
        self.seen, self.part_blind = seen, part_blind
        self.colours = list(toybirds.COLOURS)

    def _slot(self, part, colour):
        row = 0 if self.part_blind else toybirds.PARTS.index(part)
        return row * len(self.colours) + self.colours.index(colour)

    def encode_texts(self, prompts):
        out = torch.zeros(len(prompts), len(toybirds.PARTS) * len(self.colours))
        for k, prompt in enumerate(prompts):
            words = prompt.rstrip(".").split()
            out[k, self._slot(words[-1], words[-2])] = 1.0
        return out

    def encode_samples(self, split):
        out = torch.zeros(len(split), len(toybirds.PARTS) * len(self.colours))
        for i in range(len(split)):
            for part in self.seen:
                out[i, self._slot(part, split.sample(i).traits[part]["colour"])] = 1.0
        return out


@pytest.fixture(scope="module")
def small_test_split():
    return open_split(DataSpec(image_size=32, test_per_class=2), "test")


def test_part_value_accuracy_is_one_for_an_oracle_and_chance_for_a_body_only_counterfeit(small_test_split):
    oracle = _StubBackbone()
    scores = ev.part_value_accuracy(oracle, small_test_split, oracle.encode_samples(small_test_split))
    assert scores == {part: 1.0 for part in toybirds.PARTS}
    body_only = _StubBackbone(seen=("body",))
    scores = ev.part_value_accuracy(body_only, small_test_split, body_only.encode_samples(small_test_split))
    assert scores["body"] == 1.0
    assert scores["head"] == pytest.approx(0.25) and scores["wing"] == pytest.approx(0.25)


def test_text_cosines_separate_an_oracle_from_a_part_blind_text_tower():
    oracle = ev.part_text_cosines(_StubBackbone())
    assert oracle["same_value_other_part"] == 0.0 and oracle["matrix"][0][0] == 1.0
    blind = ev.part_text_cosines(_StubBackbone(part_blind=True))
    assert blind["same_value_other_part"] == pytest.approx(1.0)
    assert blind["same_part_other_value"] == 0.0


def test_linear_probe_separates_informative_from_random_features():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(6), 20)
    informative = np.eye(6)[labels] + 0.05 * rng.normal(size=(120, 6))
    assert ev.linear_probe_accuracy(informative[::2], labels[::2], informative[1::2], labels[1::2]) == 1.0
    noise = rng.normal(size=(120, 6))
    assert ev.linear_probe_accuracy(noise[::2], labels[::2], noise[1::2], labels[1::2]) < 0.45


def test_a_random_clip_scores_near_chance(tmp_path):
    from core.backbones.clip import load_backbone

    backbone = load_backbone("toyclip-tiny:random")
    report = ev.clip_report(backbone, DataSpec(image_size=32, train_per_class=2, test_per_class=2))
    assert report["zero_shot_accuracy"] < 0.2
    assert all(acc < 0.6 for acc in report["part_value_accuracy"].values())
    assert set(report) >= {"linear_probe_accuracy", "text_cosine", "n_train", "n_test"}


def test_training_refuses_an_epoch_smaller_than_a_batch(tmp_path):
    config = tc.ClipTrainConfig(config_name="toyclip-tiny", epochs=1, batch_size=64, device="cpu")
    with pytest.raises(ValueError, match="smaller than the batch size"):
        tc.train_clip(
            DataSpec(image_size=32, train_per_class=1), config, tmp_path / "clip", log=lambda *_: None
        )
    assert not (tmp_path / "clip").exists()
