"""Tests of criolib.cni."""
