"""Policies: the pack model, its loader and validator, collection plans and evaluation."""
