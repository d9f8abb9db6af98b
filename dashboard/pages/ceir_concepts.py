"""Placeholder: this view is being built."""

import streamlit as st

st.title("ceir_concepts")
st.info("This view is being built.")
