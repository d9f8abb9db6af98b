"""Placeholder: this view is being built."""

import streamlit as st

st.title("open_world")
st.info("This view is being built.")
