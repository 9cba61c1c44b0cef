"""The HTTP adapter: document-management systems join the backbone over HTTP.

Built in steps (issue 16); so far, the request signatures every call must carry
(:mod:`.signing`).
"""
