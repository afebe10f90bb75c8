"""`handmesh serve`: the demo in a browser (Gradio): live webcam, images and videos, through the demo's pipeline.

frames.py: one image through the demo's stages, and the one thread that owns the GL renderer; live.py: a browser's
webcam stream through the demo's Pipeline, one per page session; live_page.py: the Live tab's markup, its client and
the routes its frames travel by; files.py: uploads checked and decoded, results written (meshes, JSON,
video, zip); app.py: the page and its events; browser.py: the server and chromium driven from outside (tests, bench).
Nothing is imported at `import handmesh.serve` beyond this docstring.
"""
