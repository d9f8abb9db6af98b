"""ConceptLens: training, evaluation and explanation of ConceptHash and CEIR.

Sub-packages, one per concern: ``data`` (ToyBirds world, dataset readers, safe image
loading), ``backbones`` (CLIP loading, token-extended vision transformer),
``concepthash``, ``ceir``, ``retrieval`` (packed-bit Hamming search, mAP).
Nothing in ``core`` imports Streamlit.
"""

__version__ = "0.1.0"
