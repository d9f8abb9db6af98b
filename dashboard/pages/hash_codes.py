"""Placeholder: this view is being built."""

import streamlit as st

st.title("hash_codes")
st.info("This view is being built.")
