"""Placeholder: this view is being built."""

import streamlit as st

st.title("concept_attention")
st.info("This view is being built.")
