"""The folder adapter: a system that can only read and write files joins the backbone.

    backbone adapter folder --as CODE --root DIR      # or --gateway NAME

- :mod:`.adapter`: the folders, what is sent from them and written into them;
- :mod:`.names`: safe file names from what a package says (pure);
- :mod:`.state`: what was sent and written, so a restart does neither twice.
"""
