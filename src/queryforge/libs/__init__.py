"""Small wrappers around libraries and protocols the core uses at its edges (HTTP, optional extras).

Each wrapper keeps its dependency in one place and explains how to install it when it is optional.
"""
