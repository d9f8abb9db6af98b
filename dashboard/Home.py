"""ConceptLens dashboard entry point (placeholder until the dashboard pages land)."""

import streamlit as st

st.set_page_config(page_title="ConceptLens", layout="wide")
st.title("ConceptLens")
st.write(
    "ConceptLens looks inside two interpretable image models: **ConceptHash**, whose hash bits come from "
    "learned concept tokens with attention maps, and **CEIR**, which explains images through human-readable "
    "concepts. The interactive views are being built; train and evaluate models with the "
    "`conceptlens` command."
)
st.code("conceptlens train concepthash --help\nconceptlens eval BUNDLE --json", language="bash")
