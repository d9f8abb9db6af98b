"""The smallest Streamlit app, a title: the load benchmark's floor (``conceptlens bench load``).

The same headless Chromium sessions open it on the same machine, so the benchmark can say how much of
a page's time is Streamlit and the browsers themselves, which no change to ConceptLens can remove.
"""

import streamlit as st

st.title("Floor")
