"""`handmesh serve`: the demo in a browser (Gradio): live webcam, images and videos, through the demo's pipeline.

frames.py: one image through the demo's stages, and the one thread that owns the GL renderer; live.py: a browser's
webcam stream through the demo's Pipeline; files.py: uploads checked and decoded, results written (meshes, JSON,
video, zip); app.py: the page and its events; browser.py: the server and chromium driven from outside (tests, bench).
Nothing is imported at `import handmesh.serve` beyond this docstring.
"""
