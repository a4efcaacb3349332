"""``swaplab ui``: a local web app (Gradio) over the same library calls as the command line.

The app is the top layer: nothing in swaplab imports it but the ``ui`` command. It holds no
logic of its own: every button is one call of the library (extract, train, swap, verify, the
evaluation and study reports), and what it adds is what a browser needs: an allow-list of
folders (``access``), checked uploads, and background training jobs that outlive a page
(``jobs``). ``app.build_app`` makes the page, ``app.serve`` runs it on 127.0.0.1.
"""
