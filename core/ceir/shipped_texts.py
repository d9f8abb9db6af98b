"""The text embeddings that ship for the offline ConSE backbone (``core/backbones/conse_text``).

The default ImageNet descriptions, every shipped concept bank and the reference vocabulary that calibrates
labels (every shipped bank read in each shipped bank's template), encoded once by MiniLM, so that the
dashboard and ``conceptlens label`` never load the text model for them (see
``core.backbones.conse.read_stored_texts``). After changing a bank, rewrite them with
``python -m core.ceir.shipped_texts``; ``tests/test_conse.py`` fails while they are stale.
"""

from __future__ import annotations

from pathlib import Path

from core.backbones import conse
from core.ceir.concept_bank import SHIPPED_BANKS, apply_template, load_bank


def shipped_text_lists() -> list[tuple[str, list[str]]]:
    """(file-name prefix, texts) of every list whose embeddings ship: the descriptions, every shipped bank,
    and every shipped bank read in each shipped bank's template (the reference vocabulary that calibrates
    labels, ``core.ceir.label_fit``)."""
    style = conse.ConSEConfig.descriptions
    lists = [(f"conse-descriptions-{style}", conse.imagenet_descriptions(style))]
    banks = [load_bank(name) for name in SHIPPED_BANKS]
    texts = [bank.prompts() for bank in banks]
    for template in dict.fromkeys(bank.template for bank in banks):
        texts += [apply_template(template, bank.concepts) for bank in banks]
    return lists + [("conse-texts", list(t)) for t in dict.fromkeys(tuple(t) for t in texts)]


def write_shipped_texts(folder: Path = conse.SHIPPED_TEXT_DIR) -> list[Path]:
    """Encode :func:`shipped_text_lists` into ``folder``, after removing the old files there; returns the
    files written."""
    lists = shipped_text_lists()
    text_model = conse.load_text_model("cpu")
    for old in folder.glob("*.npy"):
        old.unlink()
    written = []
    for prefix, texts in lists:
        name = conse.stored_text_name(texts, prefix=prefix)
        conse.write_stored_texts(folder, name, conse.embed_texts(text_model, texts))
        written.append(folder / name)
    return written


if __name__ == "__main__":
    for path in write_shipped_texts():
        print(path)
