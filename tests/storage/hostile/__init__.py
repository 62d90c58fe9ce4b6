"""Hostile layer tarballs, built in code, and the watch that proves nothing escaped.

:mod:`.corpus` holds the cases (one test id each), :mod:`.watch` the tree listings
compared before and after an extraction.
"""
